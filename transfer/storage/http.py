"""Read-only HTTP(S) storage: the data service's content URLs as a source for the copy engine.

Contract (the Storage contract, read side only):
- A path is the URL's path (percent-encoded, with its query) below the endpoint scheme://host:port;
  one HTTPStorage, holding one connection pool shared by every worker thread, serves one endpoint.
- stat is a HEAD: size from Content-Length, mtime from Last-Modified, ident from the ETag.
- `pread` is a GET of one byte range, sent with If-Match on the ETag the handle was opened with, so a
  file that changes between chunks is detected (412 -> SourceChanged) instead of mixed.
- `checksum(path, "adler32")` is the server's RFC 3230 `Digest: adler32=<8 hex>`: the catalogue's sum
  of the content, which the engine compares with what it received (checksum_authoritative).
- A HEAD answer is reused for HEAD_TTL seconds, so one file's stat, open and checksum cost one
  request. Reuse cannot let wrong data through: every range carries If-Match on the ETag the reader
  was opened with, and what arrived must still fold to the Digest.
- What a dataset listing says of a file (`remember`: size, mtime, ETag, the catalogue's adler32)
  stands in for its HEAD for the rest of the run, so a dataset download sends no HEAD at all: one
  round trip less per file at its start and at its end. The same two guards hold, and a 412 (the
  file changed after the listing) forgets it, so the retry asks the server afresh.
- `read_early` starts ranges of a file before anyone asks for them, each in a thread of its own
  (`domas get` reads a fresh download's first chunks while the copy engine is still importing).
  A `pread` of exactly such a range (same path, offset, length and ETag) takes its bytes, waiting
  for them if need be; one that failed is sent again as any other range, so an early read changes
  when bytes travel, never what is accepted. Each is taken at most once; they are bounded by
  what the caller starts.
- Every write raises Unsupported. Transport errors (httpwire.translated) and HTTP statuses (_check)
  are translated once: timeouts and lost connections and 5xx are retriable, 401/403/404/416 are not.
- Requests go through httpwire (its own HTTP/1.1 heads and framing over sockets, keep-alive per
  origin, system TLS trust), neither httpx nor http.client: `domas get` imports neither (0.1 s and
  ~10 ms of its start).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlencode, urlsplit

from domas import __version__
from domas.errors import (ConnectionLost, ImpossibleRange, NotFound, PermissionDenied, ServerRefused, SourceChanged,
                          StorageError, Unsupported)

from .base import Capabilities, ReadHandle, Stat, Storage, WriteHandle
from .httpwire import Pool, Response, origin_of, translated
from .registry import register

_STATUS_ERRORS: dict[int, type[StorageError]] = {
    401: PermissionDenied, 403: PermissionDenied, 404: NotFound, 410: NotFound, 412: SourceChanged,
    416: ImpossibleRange, 429: ServerRefused,
}
_HINTS = {401: "; give the facility token (domas get --token or DOMAS_TOKEN)"}

HEAD_TTL = 5.0                       # seconds a HEAD answer is reused (stat, open, checksum of one file)
HEAD_CACHE_SIZE = 4096

_cache: dict[tuple[str, str], "HTTPStorage"] = {}
_cache_lock = threading.Lock()


def split_url(url: str) -> tuple[str, str]:
    """'https://host:port/a/b?x=1' -> ('https://host:port', '/a/b?x=1')."""
    origin_of(url)                                   # UsageError for anything but a valid http(s) URL with a host
    parts = urlsplit(url)
    path = parts.path or "/"
    return f"{parts.scheme}://{parts.netloc}", path + (f"?{parts.query}" if parts.query else "")


def storage_for(endpoint: str, token: str = "") -> "HTTPStorage":
    """The shared HTTPStorage (and connection pool) of an endpoint and token."""
    with _cache_lock:
        store = _cache.get((endpoint, token))
        if store is None:
            store = _cache[(endpoint, token)] = HTTPStorage(endpoint, token=token)
        return store


def resolve_http(url: str, token: str = "") -> tuple["HTTPStorage", str]:
    endpoint, path = split_url(url)
    return storage_for(endpoint, token), path


def open_url(url: str) -> tuple["HTTPStorage", str]:
    """The registry's opener: a URL without a token (`domas get` passes its token to resolve_http)."""
    return resolve_http(url)


def _server_sentence(resp: Response) -> str:
    """The one-sentence reason the data service gives (JSON body, or X-Domas-Error on HEAD); the
    body is read and the connection released."""
    text = resp.headers.get("x-domas-error", "")
    body = resp.read_body(64 << 10)
    if not text and resp.method != "HEAD":
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            doc = json.loads(body)
            text = doc.get("error", "") if isinstance(doc, dict) else ""
    return text or f"HTTP {resp.status} {resp.reason}".strip()


def _check(resp: Response, url: str) -> Response:
    status = resp.status
    if 200 <= status < 300:
        return resp
    cls = _STATUS_ERRORS.get(status) or (ServerRefused if status >= 500 else StorageError)
    raise cls(f"{url}: {_server_sentence(resp)}{_HINTS.get(status, '')}")


def _mtime(resp: Response) -> float:
    value = resp.headers.get("last-modified")
    if not value:
        return 0.0
    import email.utils       # here, not at the top: 5 ms of `domas get`'s start, which sends no HEAD

    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return 0.0


def parse_digest(header: str | None, algo: str) -> str | None:
    """The value for `algo` in an RFC 3230 Digest header ('adler32=0a1b2c3d, md5=...'), lowercased."""
    for item in (header or "").split(","):
        name, _, value = item.strip().partition("=")
        if name.strip().lower() == algo and value.strip():
            return value.strip().lower()
    return None


class HTTPStorage(Storage):
    """A data service (or any HTTP server with byte ranges) as a read-only copy source."""

    scheme = "http"
    chunk_readback = False           # only ever a source: nothing is written here to read back
    checksum_authoritative = True    # checksum() is the catalogue's sum: a download must match it
    # Read-only, one URL per file; the server follows its symlinks; Last-Modified has whole seconds.
    capabilities = Capabilities(writable=False, listable=False, symlinks="server", mtime_resolution=1.0)

    def __init__(self, endpoint: str, *, token: str = "", timeout: float = 30.0, connect_timeout: float = 10.0,
                 max_connections: int = 64) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.scheme = urlsplit(self.endpoint).scheme or "http"
        split_url(self.endpoint + "/")                                  # UsageError for anything but http(s)
        self._lock = threading.Lock()
        self._heads: dict[str, tuple[float, Stat, str | None]] = {}
        self._listed: dict[str, tuple[Stat, str | None]] = {}      # remember(): no expiry, forget() on 412
        self._early: dict[tuple[str, str, int, int], _Early] = {}    # read_early(): taken once by pread
        self._pool = Pool(self.endpoint, headers={"User-Agent": f"domas/{__version__}"},
                          auth=f"Bearer {token}" if token else "", timeout=timeout,
                          connect_timeout=connect_timeout, max_idle=max_connections)

    # -- requests ------------------------------------------------------------------------------
    def send(self, method: str, path: str, headers: dict | None = None, params: dict | None = None) -> Response:
        """One request, errors translated; the response has a 2xx status and its body still to read."""
        if params:
            path += ("&" if "?" in path else "?") + urlencode(params, doseq=True)
        url = self.url(path)
        return _check(self._pool.request(method, url, headers), url)

    def request(self, method: str, path: str, headers: dict | None = None, params: dict | None = None) -> Response:
        """One request whose (small) body is read: resp.body."""
        resp = self.send(method, path, headers, params)
        resp.body = resp.read_body(64 << 20)
        return resp

    def get_json(self, path: str, params: dict | None = None) -> dict:
        resp = self.request("GET", path, headers={"Accept": "application/json"}, params=params)
        try:
            doc = json.loads(resp.body)
        except (ValueError, UnicodeDecodeError):
            raise ServerRefused(f"{self.url(path)}: the server did not answer with JSON; is this a domas data "
                                "service?") from None
        if not isinstance(doc, dict):
            raise ServerRefused(f"{self.url(path)}: unexpected JSON answer; is this a domas data service?")
        return doc

    def json_lines(self, path: str, params: dict | None = None) -> Iterator[dict]:
        """A streamed JSON-lines answer, one object at a time (constant memory however long)."""
        with self.send("GET", path, headers={"Accept": "application/x-ndjson"}, params=params) as resp:
            for line in resp.lines():
                if not line.strip():
                    continue
                try:
                    yield json.loads(line)
                except (ValueError, UnicodeDecodeError):
                    raise ServerRefused(f"{resp.url}: a line of the answer is not JSON; "
                                        "is this a domas data service?") from None

    def remember(self, st: Stat, adler32: str | None) -> None:
        """What a listing of the server said of the file at st.path: its stat (the ETag as ident)
        and the catalogue's adler32, used instead of a HEAD (see the module doc)."""
        with self._lock:
            self._listed[st.path] = (st, f"adler32={adler32}" if adler32 else None)

    def forget(self, path: str) -> None:
        """Drop what is known of a path (it changed): the next stat asks the server."""
        with self._lock:
            self._listed.pop(path, None)
            self._heads.pop(path, None)

    def read_early(self, st: Stat, ranges: list[tuple[int, int]]) -> None:
        """Start reading these (offset, length) ranges of the file at st.path now, one thread each
        (see the module doc)."""
        reader = _HTTPReader(self, st.path, st)
        for offset, length in ranges:
            early = _Early(reader, offset, length)
            with self._lock:
                self._early[(st.path, st.ident, offset, length)] = early
            early.start()

    def take_early(self, st: Stat, offset: int, length: int) -> "_Early | None":
        with self._lock:
            return self._early.pop((st.path, st.ident, offset, length), None)

    def _head(self, path: str) -> tuple[Stat, str | None]:
        """(stat, Digest header) of a path; an answer is reused for HEAD_TTL seconds (see module doc)."""
        now = time.monotonic()
        with self._lock:
            listed = self._listed.get(path)
            if listed is not None:
                return listed
            hit = self._heads.get(path)
            if hit is not None and now - hit[0] < HEAD_TTL:
                return hit[1], hit[2]
        resp = self.request("HEAD", path)
        length = resp.headers.get("content-length")
        if length is None or not length.isdigit():
            raise ServerRefused(f"{self.url(path)}: the server did not send the file size (Content-Length)")
        st = Stat(path=path, size=int(length), mtime=_mtime(resp), ident=resp.headers.get("etag", ""))
        with self._lock:
            if len(self._heads) >= HEAD_CACHE_SIZE:
                self._heads.clear()
            self._heads[path] = (now, st, resp.headers.get("digest"))
        return st, resp.headers.get("digest")

    # -- the Storage interface -------------------------------------------------------------------
    def stat(self, path: str) -> Stat:
        return self._head(path)[0]

    def stat_follow(self, path: str) -> Stat:
        return self._head(path)[0]

    def listdir(self, path: str) -> list[Stat]:
        raise Unsupported(f"{self.url(path)}: an HTTP URL names one file and cannot be listed; "
                          "download a whole dataset with `domas get PID DEST`")

    def open_read(self, path: str) -> ReadHandle:
        st, _ = self._head(path)
        return _HTTPReader(self, path, st)

    def open_write(self, path: str, *, create: bool = True, truncate: bool = False,
                   mode: int = 0o644) -> WriteHandle:
        raise self._read_only(path)

    def checksum(self, path: str, algo: str = "adler32") -> str | None:
        return parse_digest(self._head(path)[1], algo)

    def remove(self, path: str) -> None:
        raise self._read_only(path)

    def rename(self, src: str, dst: str) -> None:
        raise self._read_only(dst)

    def makedirs(self, path: str) -> None:
        raise self._read_only(path)

    def url(self, path: str) -> str:
        return self.endpoint + path

    def close(self) -> None:
        self._pool.close()

    def _read_only(self, path: str) -> Unsupported:
        return Unsupported(f"{self.url(path)}: HTTP storage is read-only here; it can only be a copy source")


class _HTTPReader(ReadHandle):
    def __init__(self, store: HTTPStorage, path: str, st: Stat) -> None:
        self._store, self._path, self._stat = store, path, st

    def pread(self, offset: int, length: int) -> bytes:
        early = self._store.take_early(self._stat, offset, length) if self._store._early else None
        if early is not None:
            data = early.result()
            if data is not None:
                return data
        return self.fetch(offset, length)

    def fetch(self, offset: int, length: int) -> bytes:
        """One range GET, checked: exactly the bytes asked for (fewer at the end of the file)."""
        url = self._store.url(self._path)
        if offset < 0 or length < 0:
            raise ImpossibleRange(f"impossible range offset={offset} length={length}", path=url)
        if length == 0 or offset >= self._stat.size:
            return b""
        end = min(offset + length, self._stat.size)
        headers = {"Range": f"bytes={offset}-{end - 1}"}
        if self._stat.ident:
            headers["If-Match"] = self._stat.ident
        try:
            resp = self._store.send("GET", self._path, headers=headers)
        except SourceChanged:
            self._store.forget(self._path)       # 412: the ETag this reader holds is no longer the file's
            raise
        with resp:
            ranged = resp.status == 206 and resp.headers.get("content-range", "").startswith(f"bytes {offset}-")
            whole = resp.status == 200 and offset == 0     # a server that ignored the range
            if not (ranged or whole):
                raise Unsupported(f"{url}: the server did not answer the byte range {offset}-{end - 1} "
                                  f"(HTTP {resp.status}); it must support HTTP ranges")
            # Received straight into the one bytes object returned: no pieces joined into a second copy.
            data = resp.read_exact(end - offset)
            more = resp.remaining is None or resp.remaining > 0
            if len(data) == end - offset and more and whole:
                raise Unsupported(f"{url}: the server did not answer the byte range {offset}-{end - 1} "
                                  f"(HTTP {resp.status}); it must support HTTP ranges")
        if len(data) != end - offset:
            raise ConnectionLost(f"{url}: got {len(data)} bytes of the {end - offset} asked for at offset {offset}")
        return data

    def close(self) -> None:
        """Nothing to release: the connection pool belongs to the storage."""


class _Early:
    """One range read in a thread of its own before it is asked for (HTTPStorage.read_early)."""

    def __init__(self, reader: _HTTPReader, offset: int, length: int) -> None:
        self._reader, self._offset, self._length = reader, offset, length
        self._data: bytes | None = None
        self._thread = threading.Thread(target=self._run, name="domas-get-early", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            self._data = self._reader.fetch(self._offset, self._length)
        except Exception:       # whatever went wrong happens again, and is reported, when pread asks anew
            self._data = None

    def result(self) -> bytes | None:
        """The bytes read, once they are in; None when the read failed."""
        self._thread.join()
        data, self._data = self._data, None
        return data


register(open_url, "http", "https")
