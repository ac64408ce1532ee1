"""A small HTTP/1.1 client on the standard library's http.client, for the HTTP storage backend.

Why not httpx: `domas get` spent ~0.1 s of its start importing httpx, httpcore and h11 (httpx's own
command line pulls click, rich and pygments), and about half of its user CPU per GiB in their
per-request and per-64-KiB-piece Python. Here a ranged body is read with one `read(n)` on the
socket's buffered reader, which receives straight into the one bytes object it returns.

Contract:
- One Pool per HTTPStorage: keep-alive connections per origin (scheme, host, port), shared by every
  worker thread (a connection is used by one thread at a time and put back when its body was read to
  the end). A request on a reused connection that the server closed meanwhile is sent once more on a
  new connection (only idempotent methods are sent here: GET and HEAD).
- TLS: https uses ssl.create_default_context() (the system's trust store, or SSL_CERT_FILE; host name
  checked, verification required), made the first time an https origin is connected, never for http.
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
import http.client
import os
import socket
import ssl
import threading
from urllib.parse import urljoin, urlsplit

from domas.errors import ConnectionLost, DomasError, NetworkTimeout, UsageError

MAX_REDIRECTS = 5
REDIRECTS = (301, 302, 303, 307, 308)
# Reading an answer from a connection the server had already closed (keep-alive ended on its side).
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)

Origin = tuple[str, str, int]


def origin_of(url: str) -> Origin:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{url}: not an http:// or https:// URL with a host")
    return parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


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
    except ssl.SSLError as e:
        raise ConnectionLost(f"{url}: the TLS connection to the data service failed ({e.reason or e})") from e
    except (OSError, http.client.HTTPException) as e:
        raise ConnectionLost(f"{url}: the connection to the data service failed "
                             f"({e.strerror if isinstance(e, OSError) and e.strerror else e or type(e).__name__})"
                             ) from e


class Response:
    """An answer whose body is still on the connection: read it (read_body, read_exact, lines) or
    release it; the connection goes back to the pool only when the body was read to its end."""

    def __init__(self, pool: "Pool", origin: Origin, conn: http.client.HTTPConnection,
                 raw: http.client.HTTPResponse, method: str, url: str) -> None:
        self._pool, self._origin, self._conn, self.raw = pool, origin, conn, raw
        self.method, self.url = method, url
        self.status, self.reason, self.headers = raw.status, raw.reason, raw.headers

    @property
    def remaining(self) -> int | None:
        """Body bytes still to come (None: unknown, read to the connection's end or chunked)."""
        return self.raw.length

    def read_body(self, limit: int = 1 << 20) -> bytes:
        """The whole (small) body, at most `limit` bytes; the connection is released."""
        with translated(self.url):
            data = self.raw.read(limit) if self.raw.length is None or self.raw.length > limit else self.raw.read()
        self.release()
        return data

    def read_exact(self, n: int) -> bytes:
        """Up to n bytes of the body, received into the one bytes object returned (short only if
        the body ended); the caller releases."""
        with translated(self.url):
            return self.raw.read(n)

    def lines(self):
        with translated(self.url):
            while True:
                line = self.raw.readline()
                if not line:
                    break
                yield line
        self.release()

    def release(self) -> None:
        """Give the connection back if the body was read to its end and the server keeps it open;
        close it otherwise (unread bytes would be taken for the next answer)."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self.raw.length == 0 and not self.raw.chunked:
            self.raw.read()                        # a HEAD or empty answer: nothing to read, mark it ended
        if self.raw.isclosed() and not self.raw.will_close and conn.sock is not None:
            self._pool.put(self._origin, conn)
        else:
            self.raw.close()
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
        self._idle: dict[Origin, list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None

    def tls(self) -> ssl.SSLContext:
        with self._lock:
            if self._tls is None:
                self._tls = ssl.create_default_context()
            return self._tls

    def _connect(self, origin: Origin) -> http.client.HTTPConnection:
        scheme, host, port = origin
        proxy = proxy_for(origin)
        to_host, to_port = proxy or (host, port)
        if scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                to_host, to_port, timeout=self.connect_timeout, context=self.tls())
            if proxy:
                conn.set_tunnel(host, port)          # TLS with the origin, inside the proxy's CONNECT
        else:
            conn = http.client.HTTPConnection(to_host, to_port, timeout=self.connect_timeout)
        conn.connect()
        conn.sock.settimeout(self.timeout)
        return conn

    def _take(self, origin: Origin) -> http.client.HTTPConnection | None:
        with self._lock:
            idle = self._idle.get(origin)
            return idle.pop() if idle else None

    def put(self, origin: Origin, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(origin, [])
            if len(idle) < self.max_idle:
                idle.append(conn)
                return
        conn.close()

    def _send(self, origin: Origin, method: str, target: str, headers: dict[str, str], url: str) -> Response:
        for attempt in (0, 1):
            conn = self._take(origin) if attempt == 0 else None
            reused = conn is not None
            with translated(url):
                if conn is None:
                    conn = self._connect(origin)
                try:
                    conn.request(method, target, headers=headers)
                    raw = conn.getresponse()
                except _STALE:
                    conn.close()
                    if reused:
                        continue                   # the server ended keep-alive: once more, on a new connection
                    raise
                except BaseException:
                    conn.close()
                    raise
            return Response(self, origin, conn, raw, method, url)
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
