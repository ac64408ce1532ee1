"""A small HTTP/1.1 client for the HTTP storage backend: keep-alive connections, ranged bodies read
straight into the bytes returned, nothing else.

Why not httpx, nor http.client: `domas get` spent ~0.1 s of its start importing httpx, httpcore and
h11, and about half of its user CPU per GiB in their per-request Python. http.client, which
replaced them, still parses every answer's head with the email package (~10 ms of each start to
import, and tens of microseconds per answer: ~1100 answers per GiB at 1 MiB ranges). Here a head
is split by hand and a body is read with one `read(n)` on the socket's buffered reader, which
receives straight into the one bytes object it returns.

Contract:
- One Pool per HTTPStorage: keep-alive connections per origin (scheme, host, port), shared by every
  worker thread (a connection is used by one thread at a time and put back when its body was read to
  the end). A request on a reused connection that the server closed meanwhile is sent once more on a
  new connection (only idempotent methods are sent here: GET and HEAD).
- Framing as RFC 9112 says: no body for HEAD, 1xx, 204 and 304; `Transfer-Encoding: chunked`;
  `Content-Length`; else the body ends when the server closes. An answer that breaks the framing is
  ConnectionLost, and its connection is never reused.
- A request target or header value holding a space or a control character is refused (UsageError)
  before anything is sent: no header can be smuggled in through a URL.
- TLS: https uses ssl.create_default_context() (the system's trust store, or SSL_CERT_FILE; host name
  checked, verification required), made the first time an https origin is connected, never for http;
  the ssl module itself is imported then too (~4 ms of a plain-http download's start otherwise).
- Redirects (301/302/303/307/308) are followed, at most MAX_REDIRECTS; Authorization is sent only to
  the endpoint's own origin.
- Proxies as curl and httpx take them from the environment: http_proxy / https_proxy (or upper
  case), except for hosts in no_proxy (comma-separated names or domain suffixes, `*` for all). An
  http URL goes to the proxy in absolute form; an https URL through a CONNECT tunnel, TLS verified
  end to end with the origin.
- Errors: socket timeouts become NetworkTimeout, refused or lost connections, TLS failures and
  malformed answers ConnectionLost (both retriable), an unsupported URL scheme UsageError. HTTP
  statuses are left to the caller (http.py maps them).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import sys
import threading
from urllib.parse import urljoin, urlsplit

from domas.errors import ConnectionLost, DomasError, NetworkTimeout, UsageError

MAX_REDIRECTS = 5
REDIRECTS = (301, 302, 303, 307, 308)
MAX_HEAD_LINE = 65536                 # bytes of one status or header line
MAX_HEADERS = 100
_UNSAFE = re.compile(r"[\x00-\x20\x7f]")      # space and control characters: never in a target or value
_UNSAFE_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")   # a header value may hold spaces and tabs

Origin = tuple[str, str, int]


class Malformed(Exception):
    """The server's answer does not follow HTTP/1.1 (a status line, headers, framing)."""


class Stale(Exception):
    """The server had closed this kept-alive connection before answering."""


def origin_of(url: str) -> Origin:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:                          # '[::1' with no ']', a port over 65535, ...
        raise UsageError(f"{url}: not a valid URL ({e})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{url}: not an http:// or https:// URL with a host")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def proxy_for(origin: Origin, env=os.environ) -> tuple[str, int] | None:
    """(host, port) of the proxy the environment names for this origin, None to go direct."""
    scheme, host, port = origin
    proxy = env.get(f"{scheme}_proxy") or env.get(f"{scheme.upper()}_PROXY")
    if not proxy:
        return None
    for entry in (env.get("no_proxy") or env.get("NO_PROXY") or "").split(","):
        entry = entry.strip().lower().lstrip(".")
        if entry == "*" or (entry and (host.lower() == entry or host.lower().endswith("." + entry)
                                       or f"{host}:{port}".lower() == entry)):
            return None
    parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    if parts.scheme != "http" or not parts.hostname:
        raise UsageError(f"{scheme}_proxy={proxy}: only an http:// proxy is supported")
    return parts.hostname, parts.port or 80


@contextlib.contextmanager
def translated(url: str):
    """Transport failures as domas errors (one sentence each)."""
    try:
        yield
    except DomasError:
        raise
    except (socket.timeout, TimeoutError) as e:
        raise NetworkTimeout(f"{url}: the data service did not answer in time ({type(e).__name__})") from e
    except Malformed as e:
        raise ConnectionLost(f"{url}: the data service's answer is not valid HTTP ({e})") from e
    except Stale as e:
        raise ConnectionLost(f"{url}: the connection to the data service failed (closed before an answer)") from e
    except OSError as e:
        if _tls_error(e):
            raise ConnectionLost(f"{url}: the TLS connection to the data service failed ({e.reason or e})") from e
        raise ConnectionLost(f"{url}: the connection to the data service failed "
                             f"({e.strerror or e or type(e).__name__})") from e


def _tls_error(e: OSError) -> bool:
    """Whether e is an ssl.SSLError (ssl is imported with the first https connection: none before)."""
    ssl = sys.modules.get("ssl")
    return ssl is not None and isinstance(e, ssl.SSLError)


def host_header(host: str, port: int, scheme: str = "") -> str:
    """host[:port] as a Host header names it (the port left out when it is the scheme's own); with no
    scheme always host:port, as a CONNECT request names its target."""
    name = f"[{host}]" if ":" in host else host
    return name if scheme and port == (443 if scheme == "https" else 80) else f"{name}:{port}"


def request_head(method: str, target: str, host: str, headers: dict[str, str]) -> bytes:
    """The bytes of a request without a body; refused if any part could end a line early."""
    if _UNSAFE.search(target) or _UNSAFE.search(method):
        raise UsageError(f"{target[:200]!r}: a URL with a space or control character cannot be requested")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Accept-Encoding: identity"]
    for name, value in headers.items():
        if _UNSAFE.search(name) or ":" in name or _UNSAFE_VALUE.search(value):
            raise UsageError(f"the header {name!r} holds a control character; nothing was sent")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class Headers(dict):
    """Header fields by lower-case name; repeated fields joined with ', ' (RFC 9110 5.3)."""

    def get(self, name: str, default=None):
        return super().get(name.lower(), default)


def read_head(rfile) -> tuple[str, int, str, Headers]:
    """(version, status, reason, headers) of the next answer on a connection, skipping 1xx heads."""
    while True:
        line = rfile.readline(MAX_HEAD_LINE + 1)
        if not line:
            raise Stale()
        if len(line) > MAX_HEAD_LINE or not line.endswith(b"\n"):
            raise Malformed("a status line too long or cut short")
        version, _, rest = line.decode("latin-1").rstrip("\r\n").partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise Malformed(f"status line {line[:80]!r}")
        headers = Headers()
        for _ in range(MAX_HEADERS + 1):
            line = rfile.readline(MAX_HEAD_LINE + 1)
            if line in (b"\r\n", b"\n"):
                break
            if not line.endswith(b"\n") or len(line) > MAX_HEAD_LINE:
                raise Malformed("a header line too long or cut short")
            name, colon, value = line.decode("latin-1").partition(":")
            if not colon or not name or name != name.strip():
                raise Malformed(f"header line {line[:80]!r}")
            key, value = name.lower(), value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        else:
            raise Malformed(f"more than {MAX_HEADERS} header lines")
        status = int(code)
        if 100 <= status < 200 and status != 101:
            continue                             # 100 Continue, 103 Early Hints: the answer follows
        return version, status, reason, headers


class Connection:
    """One HTTP/1.1 connection: its socket and the buffered reader of what the server sends."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.rfile = sock.makefile("rb")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.rfile.close()
        with contextlib.suppress(OSError):
            self.sock.close()


class Response:
    """An answer whose body is still on the connection: read it (read_body, read_exact, lines) or
    release it; the connection goes back to the pool only when the body was read to its end."""

    def __init__(self, pool: "Pool", origin: Origin, conn: Connection, head: tuple, method: str, url: str) -> None:
        version, self.status, self.reason, self.headers = head
        self._pool, self._origin, self._conn, self._rfile = pool, origin, conn, conn.rfile
        self.method, self.url = method, url
        conn_tokens = self.headers.get("connection", "").lower()
        self._will_close = "close" in conn_tokens or (version == "HTTP/1.0" and "keep-alive" not in conn_tokens)
        self._chunked, self._chunk_left, self._length = False, 0, None
        if method == "HEAD" or self.status in (204, 304) or self.status < 200:
            self._length = 0
        elif "chunked" in self.headers.get("transfer-encoding", "").lower():
            self._chunked = True
        elif self.headers.get("content-length") is not None:
            length = self.headers["content-length"].split(",")[0].strip()
            if not length.isdigit():
                raise Malformed(f"Content-Length {self.headers['content-length'][:40]!r}")
            self._length = int(length)
        else:
            self._will_close = True              # the body ends when the server closes
        self._done = self._length == 0

    @property
    def remaining(self) -> int | None:
        """Body bytes still to come (None: unknown, read to the connection's end or chunked)."""
        return None if self._chunked or self._length is None else self._length

    def _read(self, n: int) -> bytes:
        """Up to n bytes of the body; fewer only at its end."""
        if self._done or n <= 0:
            return b""
        if self._chunked:
            return self._read_chunked(n)
        take = n if self._length is None else min(n, self._length)
        data = self._rfile.read(take)
        if self._length is None:
            self._done = len(data) < take          # the server closed: that was the end
        else:
            self._length -= len(data)
            if len(data) < take:                   # closed in the middle: never reuse this connection
                self._will_close = self._done = True
            self._done = self._done or self._length == 0
        return data

    def _read_chunked(self, n: int) -> bytes:
        out = []
        while n > 0:
            if self._chunk_left == 0:
                line = self._rfile.readline(MAX_HEAD_LINE + 1)
                size = line.split(b";", 1)[0].strip()
                if not line.endswith(b"\n") or not size or any(c not in b"0123456789abcdefABCDEF" for c in size):
                    self._will_close = self._done = True
                    raise Malformed("a chunk size line")
                self._chunk_left = int(size, 16)
                if self._chunk_left == 0:
                    while self._rfile.readline(MAX_HEAD_LINE + 1) not in (b"\r\n", b"\n", b""):
                        pass                         # trailer fields: not used
                    self._done = True
                    break
            piece = self._rfile.read(min(n, self._chunk_left))
            if not piece:
                self._will_close = self._done = True
                raise Malformed("the connection closed inside a chunk")
            out.append(piece)
            n -= len(piece)
            self._chunk_left -= len(piece)
            if self._chunk_left == 0 and self._rfile.readline(3) not in (b"\r\n", b"\n"):
                self._will_close = self._done = True
                raise Malformed("a chunk not followed by CRLF")
        return b"".join(out)

    def read_body(self, limit: int = 1 << 20) -> bytes:
        """The whole (small) body, at most `limit` bytes; the connection is released."""
        with translated(self.url):
            data = self._read(limit)
        self.release()
        return data

    def read_exact(self, n: int) -> bytes:
        """Up to n bytes of the body, received into the one bytes object returned (short only if
        the body ended); the caller releases."""
        with translated(self.url):
            return self._read(n)

    def lines(self):
        """The body's lines (each with its newline), read 64 KiB at a time; released at the end."""
        rest = b""
        with translated(self.url):
            while True:
                data = self._read(65536)
                if not data:
                    break
                *whole, rest = (rest + data).split(b"\n")
                for line in whole:
                    yield line + b"\n"
        if rest:
            yield rest
        self.release()

    def release(self) -> None:
        """Give the connection back if the body was read to its end and the server keeps it open;
        close it otherwise (unread bytes would be taken for the next answer)."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._done and not self._will_close:
            self._pool.put(self._origin, conn)
        else:
            conn.close()

    def __enter__(self) -> "Response":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class Pool:
    def __init__(self, endpoint: str, *, headers: dict[str, str], auth: str, timeout: float,
                 connect_timeout: float, max_idle: int = 64) -> None:
        self.home = origin_of(endpoint)
        self.headers, self.auth = headers, auth
        self.timeout, self.connect_timeout, self.max_idle = timeout, connect_timeout, max_idle
        self._idle: dict[Origin, list[Connection]] = {}
        self._lock = threading.Lock()
        self._tls = None                    # an ssl.SSLContext, made by the first https connection

    def tls(self):
        """The TLS context of https origins (ssl imported here: a plain-http download never needs it)."""
        import ssl

        with self._lock:
            if self._tls is None:
                self._tls = ssl.create_default_context()
            return self._tls

    def _connect(self, origin: Origin) -> Connection:
        scheme, host, port = origin
        proxy = proxy_for(origin)
        to_host, to_port = proxy or (host, port)
        # An ASCII name goes to getaddrinfo as bytes: a str is IDNA-encoded first, which imports the
        # idna codec (stringprep, unicodedata: ~1 ms of a download's start) even for an IP address.
        sock = socket.create_connection((to_host.encode("ascii") if to_host.isascii() else to_host, to_port),
                                        timeout=self.connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if scheme == "https":
                if proxy:
                    self._tunnel(sock, host, port)   # TLS with the origin, inside the proxy's CONNECT
                sock = self.tls().wrap_socket(sock, server_hostname=host)
            sock.settimeout(self.timeout)
        except BaseException:
            sock.close()
            raise
        return Connection(sock)

    @staticmethod
    def _tunnel(sock: socket.socket, host: str, port: int) -> None:
        target = host_header(host, port)
        sock.sendall(request_head("CONNECT", target, target, {}))
        with sock.makefile("rb") as rfile:      # the proxy's answer has no body; the origin speaks next
            _version, status, reason, _headers = read_head(rfile)
        if status != 200:
            raise ConnectionLost(f"the proxy refused a tunnel to {target}: HTTP {status} {reason}".strip())

    def _take(self, origin: Origin) -> Connection | None:
        with self._lock:
            idle = self._idle.get(origin)
            return idle.pop() if idle else None

    def put(self, origin: Origin, conn: Connection) -> None:
        with self._lock:
            idle = self._idle.setdefault(origin, [])
            if len(idle) < self.max_idle:
                idle.append(conn)
                return
        conn.close()

    def _send(self, origin: Origin, method: str, target: str, headers: dict[str, str], url: str) -> Response:
        head = request_head(method, target, host_header(origin[1], origin[2], origin[0]), headers)
        for attempt in (0, 1):
            conn = self._take(origin) if attempt == 0 else None
            reused = conn is not None
            with translated(url):
                if conn is None:
                    conn = self._connect(origin)
                try:
                    conn.sock.sendall(head)
                    return Response(self, origin, conn, read_head(conn.rfile), method, url)
                except (Stale, ConnectionResetError, BrokenPipeError, ConnectionAbortedError):
                    conn.close()
                    if reused:
                        continue                   # the server ended keep-alive: once more, on a new connection
                    raise
                except BaseException:
                    conn.close()
                    raise
        raise AssertionError("unreachable")

    def request(self, method: str, url: str, headers: dict[str, str] | None = None) -> Response:
        """Send one request to an absolute URL; follow redirects. The body stays to be read."""
        for _ in range(MAX_REDIRECTS + 1):
            origin = origin_of(url)
            parts = urlsplit(url)
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            if origin[0] == "http" and proxy_for(origin):
                target = f"http://{parts.netloc}{target}"   # a plain-HTTP proxy takes the absolute URL
            sent = {**self.headers, **(headers or {})}
            if self.auth and origin == self.home:
                sent["Authorization"] = self.auth
            resp = self._send(origin, method, target, sent, url)
            location = resp.headers.get("location")
            if resp.status not in REDIRECTS or not location:
                return resp
            resp.read_body()
            url = urljoin(url, location)
            if resp.status == 303:
                method = "GET" if method != "HEAD" else "HEAD"
        raise ConnectionLost(f"{url}: more than {MAX_REDIRECTS} redirects")

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()
