"""XRootD backend: files on a root://host:port server through the XrdCl Python client.

Invariants:
- Every XRootDStatus is translated by `_error_for`, with the two tables below (client-side
  XrdCl codes, server-side kXR codes), here and nowhere else; the copy engine sees domas errors only.
- The client's connection settings are put once, at import, before any connection exists: a
  dead or closed server yields a retriable error within seconds, and a server that comes back
  is used again at the next retry (XrdCl would otherwise remember a failed stream for 30 min).
  XRD_* variables in the environment still win over these values.
- Paths are absolute server paths; the URL of a file is `endpoint + "/" + path`
  (root://host:port//dir/file). A `?` would start CGI parameters, so paths holding one are refused.
- One XrdCl File serves concurrent preads and pwrites from several threads (XrdCl::File is
  thread-safe and the binding releases the GIL while it waits).
- `readback` re-reads through the writing handle: XrdCl keeps no data cache, so this proves the
  server holds the bytes in its file, but XRootD has no way to bypass the server's page cache:
  they may come from the server's memory, not its disk.
- A handle survives a server restart: a request that fails because the connection is gone (or
  finds XrdCl's file closed: "I/O operation on closed file") drops the XrdCl File and raises a
  retriable ConnectionLost; the next request opens the file again (a writer for update, never
  truncating), so the copy engine's retries go on where they were.
- xrootd lets a file have one writer or many readers: opening a file that another handle writes
  is refused (kXR_FileLocked -> ServerRefused, retriable). With `shared_open=True` every open
  carries kXR_force, for several agents writing chunks of one file (or export `nolock` on the server).
"""

from __future__ import annotations

import errno
import os
import re
import threading

from XRootD import client
from XRootD.client.flags import AccessMode, DirListFlags, MkDirFlags, OpenFlags, QueryCode, StatInfoFlags

from domas.errors import (ConnectionLost, ImpossibleRange, IsADirectory, NetworkTimeout, NoSpace, NotFound,
                          PermissionDenied, ServerRefused, StorageError, TransientError, Unsupported, UsageError,
                          from_oserror)

from .base import Capabilities, ReadHandle, Stat, Storage, WriteHandle
from .registry import register

# Client settings (seconds / counts). ConnectionRetry 1: a refused connect fails at once and
# domas's own backoff retries it; ConnectionWindow bounds a connect to a silent host;
# StreamErrorWindow 0: the next request after a failure connects afresh (the default, 1800,
# fails every request to that server for 30 minutes, even after it is back).
CLIENT_ENV = {
    "ConnectionWindow": 5,
    "ConnectionRetry": 1,
    "StreamErrorWindow": 0,
    "TimeoutResolution": 1,
    "RequestTimeout": 60,
}
for _key, _value in CLIENT_ENV.items():
    client.EnvPutInt(_key, _value)

DEFAULT_TIMEOUT = 60          # seconds a single request may take before NetworkTimeout

_FILE_MODE = AccessMode.UR | AccessMode.UW | AccessMode.GR | AccessMode.OR                     # 0644
_DIR_MODE = _FILE_MODE | AccessMode.UX | AccessMode.GX | AccessMode.OX                         # 0755
_READONLY_MODE = AccessMode.UR | AccessMode.GR | AccessMode.OR                                 # 0444
_ENDPOINT = re.compile(r"^(root|roots|xroot|xroots)://[^/?#\s]+$")
_URL = re.compile(r"^(?P<scheme>root|roots|xroot|xroots)://(?P<host>[^/?#\s]+)/(?P<path>/.*)?$", re.IGNORECASE)

# -- the one mapping table ------------------------------------------------------------------

_ERROR_RESPONSE = 400          # XrdCl errErrorResponse: the server answered with a kXR code in errno
kXR_FSError, kXR_NotFound, kXR_ItExists = 3005, 3011, 3018
# kXR_FSError is the server's catch-all; its message ends in the errno text ("...; not a directory").
_ERRNO_BY_TEXT = {os.strerror(e).lower(): e for e in errno.errorcode}

_SERVER_CODES: dict[int, type[StorageError]] = {
    3000: ImpossibleRange,     # kXR_ArgInvalid
    3003: ServerRefused,       # kXR_FileLocked
    3007: TransientError,      # kXR_IOError
    3008: ServerRefused,       # kXR_NoMemory
    3009: NoSpace,             # kXR_NoSpace
    3010: PermissionDenied,    # kXR_NotAuthorized
    3011: NotFound,            # kXR_NotFound
    3012: TransientError,      # kXR_ServerError
    3013: Unsupported,         # kXR_Unsupported
    3014: ServerRefused,       # kXR_noserver
    3016: IsADirectory,        # kXR_isDirectory
    3020: ServerRefused,       # kXR_inProgress
    3021: NoSpace,             # kXR_overQuota
    3024: ServerRefused,       # kXR_Overloaded
    3025: PermissionDenied,    # kXR_fsReadOnly
    3029: ServerRefused,       # kXR_noReplicas
    3030: PermissionDenied,    # kXR_AuthFailed
    3031: ImpossibleRange,     # kXR_Impossible
    3034: NetworkTimeout,      # kXR_ReqTimedOut
    3035: NetworkTimeout,      # kXR_TimerExpired
}

_CLIENT_CODES: dict[int, type[StorageError]] = {
    1: TransientError,         # errRetry
    13: Unsupported,           # errNotSupported
    15: Unsupported,           # errNotImplemented
    101: ServerRefused,        # errInvalidAddr: the host name did not resolve
    102: ConnectionLost,       # errSocketError
    103: NetworkTimeout,       # errSocketTimeout
    104: ConnectionLost,       # errSocketDisconnected
    105: ConnectionLost,       # errPollerError
    107: ConnectionLost,       # errStreamDisconnect
    108: ServerRefused,        # errConnectionError: refused, or no answer within ConnectionWindow
    109: ConnectionLost,       # errInvalidSession
    202: ServerRefused,        # errHandShakeFailed
    203: PermissionDenied,     # errLoginFailed
    204: PermissionDenied,     # errAuthFailed
    205: Unsupported,          # errQueryNotSupported
    206: NetworkTimeout,       # errOperationExpired: no answer within the request timeout
    207: ConnectionLost,       # errOperationInterrupted
    301: ServerRefused,        # errNoMoreFreeSIDs
    304: NotFound,             # errNotFound
    305: TransientError,       # errCheckSumError
}


def _error_for(status, path: str | None) -> StorageError:
    """The domas error for a failed XRootDStatus."""
    detail = _detail(status.message)
    if status.code == _ERROR_RESPONSE and status.errno == kXR_FSError:
        local = _ERRNO_BY_TEXT.get(detail.rsplit(";", 1)[-1].strip().lower())
        if local:
            return from_oserror(OSError(local, detail), path)
    if status.code == _ERROR_RESPONSE:
        cls = _SERVER_CODES.get(status.errno, StorageError)
    elif status.code in _CLIENT_CODES:
        cls = _CLIENT_CODES[status.code]
    elif status.errno:      # a local error carrying an errno
        return from_oserror(OSError(status.errno, f"{os.strerror(status.errno)} ({detail})"), path)
    else:
        cls = StorageError
    text = detail if cls is StorageError else f"{cls.__doc__.strip().splitlines()[0].rstrip('.')}: {detail}"
    err = cls(text, path=path)
    err.xrootd_status = (status.code, status.errno)
    return err


def _detail(message: str) -> str:
    text = message.strip()
    for prefix in ("[ERROR]", "[FATAL]", "Server responded with an error:"):
        text = text.removeprefix(prefix).strip()
    return text or "unknown XRootD error"


def _checked(result, path: str | None):
    """The response of an XrdCl call, or the translated error for its status."""
    status, response = result
    if not status.ok:
        raise _error_for(status, path)
    return response


# -- the backend ----------------------------------------------------------------------------

class XRootDStorage(Storage):
    """A root:// server. One FileSystem (and XrdCl's one connection per server) for all calls."""

    scheme = "root"
    # Verified by the server's own adler32 against the folded source sum, not by reading back.
    chunk_readback = False
    # As a source, the server's adler32 is what a download must match (xrdcp --cksum adler32:source).
    checksum_authoritative = True
    # The server follows symlinks and keeps durability itself; XrdCl cannot set an mtime, and stat
    # answers whole seconds. chmod works, and the server (an unprivileged user) enforces the bits.
    capabilities = Capabilities(symlinks="server", mtime_resolution=1.0, permissions=True)

    def __init__(self, endpoint: str, *, timeout: int = DEFAULT_TIMEOUT, shared_open: bool = False) -> None:
        endpoint = endpoint.rstrip("/")
        if not _ENDPOINT.match(endpoint):
            raise UsageError(f"{endpoint}: not an XRootD endpoint (expected root://host:port)")
        self.endpoint = endpoint
        self.timeout = int(timeout)
        self._force = OpenFlags.FORCE if shared_open else 0
        self._fs = client.FileSystem(endpoint)

    # -- names ------------------------------------------------------------------------------
    def url(self, path: str) -> str:
        return f"{self.endpoint}/{_checked_path(path)}"

    # -- metadata ---------------------------------------------------------------------------
    def stat(self, path: str) -> Stat:
        info = _checked(self._fs.stat(_checked_path(path), timeout=self.timeout), path)
        return _to_stat(path, info)

    stat_follow = stat           # servers resolve symlinks themselves; clients never see one

    def listdir(self, path: str) -> list[Stat]:
        listing = _checked(self._fs.dirlist(_checked_path(path), DirListFlags.STAT, timeout=self.timeout), path)
        out = []
        for entry in listing:
            if entry.name in (".", ".."):
                continue
            full = f"{path.rstrip('/')}/{entry.name}"
            out.append(_to_stat(full, entry.statinfo) if entry.statinfo is not None else self.stat(full))
        return sorted(out, key=lambda s: s.path)

    def checksum(self, path: str, algo: str = "adler32") -> str | None:
        query = f"{_checked_path(path)}?cks.type={algo}"
        try:
            answer = _checked(self._fs.query(QueryCode.CHECKSUM, query, timeout=self.timeout), path)
        except Unsupported:
            return None          # the server has no checksum configured
        return _parse_checksum(answer, algo, path)

    # -- data -------------------------------------------------------------------------------
    def open_read(self, path: str) -> ReadHandle:
        return _XRootDReader(self._open(path, OpenFlags.READ), path, self.timeout,
                             lambda: self._open(path, OpenFlags.READ))

    def open_write(self, path: str, *, create: bool = True, truncate: bool = False,
                   mode: int = 0o644) -> WriteHandle:
        if create and truncate:
            f = self._open(path, OpenFlags.DELETE | OpenFlags.MAKEPATH, mode)
        else:
            f = self._open_existing_or_new(path, create, mode)
        handle = _XRootDWriter(f, path, self.timeout, lambda: self._open(path, OpenFlags.UPDATE))
        if truncate:
            handle.truncate(0)
        return handle

    def _open_existing_or_new(self, path: str, create: bool, mode: int = 0o644):
        """Open for update keeping the data (resume); create the file and its parents if absent."""
        try:
            return self._open(path, OpenFlags.UPDATE)
        except NotFound:
            if not create:
                raise
        status, f = self._try_open(path, OpenFlags.NEW | OpenFlags.MAKEPATH, mode)
        if status.ok:
            return f
        if status.code == _ERROR_RESPONSE and status.errno == kXR_ItExists:
            return self._open(path, OpenFlags.UPDATE)       # another writer created it meanwhile
        raise _error_for(status, path)

    def _try_open(self, path: str, flags: int, mode: int = 0o644):
        f = client.File()
        status, _ = f.open(self.url(path), flags | self._force, _access_mode(mode), timeout=self.timeout)
        return status, f

    def _open(self, path: str, flags: int, mode: int = 0o644):
        status, f = self._try_open(path, flags, mode)
        if not status.ok:
            raise _error_for(status, path)
        return f

    # -- namespace --------------------------------------------------------------------------
    def remove(self, path: str) -> None:
        _checked(self._fs.rm(_checked_path(path), timeout=self.timeout), path)

    def rename(self, src: str, dst: str) -> None:
        """Move `src` over `dst`; a server that refuses to replace gets `dst` removed first."""
        status, _ = self._fs.mv(_checked_path(src), _checked_path(dst), timeout=self.timeout)
        if not status.ok and status.code == _ERROR_RESPONSE and status.errno == kXR_ItExists:
            self.remove(dst)
            status, _ = self._fs.mv(src, dst, timeout=self.timeout)
        if not status.ok:
            raise _error_for(status, src if status.errno == kXR_NotFound else dst)

    def makedirs(self, path: str) -> None:
        status, _ = self._fs.mkdir(_checked_path(path), MkDirFlags.MAKEPATH, _DIR_MODE, timeout=self.timeout)
        if status.ok:
            return
        if status.code == _ERROR_RESPONSE and status.errno == kXR_ItExists and self.stat(path).is_dir:
            return
        raise _error_for(status, path)

    def set_mode(self, path: str, mode: int) -> None:
        _checked(self._fs.chmod(_checked_path(path), _access_mode(mode), timeout=self.timeout), path)

    def chmod_readonly(self, path: str) -> None:
        _checked(self._fs.chmod(_checked_path(path), _READONLY_MODE, timeout=self.timeout), path)

    def close(self) -> None:
        """Nothing to release: XrdCl owns the connection and closes it when idle or at exit."""


_MODE_BITS = ((0o400, AccessMode.UR), (0o200, AccessMode.UW), (0o100, AccessMode.UX),
              (0o040, AccessMode.GR), (0o020, AccessMode.GW), (0o010, AccessMode.GX),
              (0o004, AccessMode.OR), (0o002, AccessMode.OW), (0o001, AccessMode.OX))


def _access_mode(mode: int) -> int:
    """POSIX permission bits as XrdCl AccessMode flags."""
    flags = 0
    for bit, flag in _MODE_BITS:
        if mode & bit:
            flags |= flag
    return flags


def _checked_path(path: str) -> str:
    if not path.startswith("/"):
        raise UsageError(f"{path}: XRootD paths must be absolute (start with /)")
    if "?" in path:
        raise Unsupported(f"XRootD cannot address a path containing '?': {path}", path=path)
    return path


def _to_stat(path: str, info) -> Stat:
    is_dir = bool(info.flags & StatInfoFlags.IS_DIR)
    ctime, mode = _extended(info, "ctime"), _extended(info, "mode")
    return Stat(path=path, size=0 if is_dir else int(info.size), mtime=float(info.modtime),
                is_dir=is_dir, is_link=False, ident=str(info.id), ctime=float(ctime or 0),
                mode=int(str(mode), 8) & 0o7777 if mode else 0)


def _extended(info, name: str):
    """A field of the extended stat (servers >= 5 send ctime and mode, e.g. '0600'), or None."""
    if not getattr(info, "extended", False):
        return None
    return getattr(info, name, None) or None


def _parse_checksum(answer, algo: str, path: str) -> str | None:
    """'adler32 0a1b2c3d\\x00' -> '0a1b2c3d'; None when the server answers for another algorithm."""
    text = (answer.decode("ascii", "replace") if isinstance(answer, bytes) else str(answer))
    fields = text.replace("\x00", " ").split()
    if len(fields) < 2 or fields[0].lower() != algo.lower():
        return None
    value = fields[1].lower().removeprefix("0x")
    if not re.fullmatch(r"[0-9a-f]+", value):
        raise StorageError(f"the server sent a malformed {algo} checksum {fields[1]!r}", path=path)
    return value.zfill(8) if algo.lower() == "adler32" else value


# -- handles --------------------------------------------------------------------------------

def _read_range(f, path: str, offset: int, length: int, timeout: int) -> bytes:
    """Bytes [offset, offset+length) clipped at end of file (a short answer is read on from)."""
    if offset < 0 or length < 0:
        raise ImpossibleRange(f"impossible range offset={offset} length={length}", path=path)
    parts: list[bytes] = []
    while length > 0:        # XrdCl reads the whole file for size 0: never ask for 0 bytes
        try:
            got = _checked(f.read(offset, length, timeout=timeout), path)
        except OverflowError:
            raise ImpossibleRange(f"impossible range offset={offset} length={length}", path=path) from None
        if not got:
            break
        parts.append(got)
        offset += len(got)
        length -= len(got)
    return parts[0] if len(parts) == 1 else b"".join(parts)


class _Reopening:
    """The XrdCl File of a handle, opened again after the connection to the server was lost."""

    def __init__(self, f, path: str, timeout: int, reopen) -> None:
        self._file, self._path, self._timeout, self._reopen = f, path, timeout, reopen
        self._lock = threading.Lock()
        self._closed = False

    def _current(self):
        with self._lock:
            if self._closed:
                raise ValueError("I/O operation on a handle closed by its owner")
            if self._file is None or not self._file.is_open():
                self._file = self._reopen()
            return self._file

    def _call(self, op):
        """op(file) with the current File; a lost connection drops it for the next call to reopen."""
        f = self._current()
        try:
            return op(f)
        except (ConnectionLost, ServerRefused, NetworkTimeout):
            self._drop(f)
            raise
        except ValueError as e:         # the binding's "I/O operation on closed file"
            self._drop(f)
            raise ConnectionLost(f"the connection to the server was lost ({e}); the file is opened again",
                                 path=self._path) from None

    def _drop(self, f) -> None:
        with self._lock:
            if self._file is f:
                self._file = None

    def close(self) -> None:
        with self._lock:
            f, self._file, self._closed = self._file, None, True
        if f is not None and f.is_open():
            _checked(f.close(timeout=self._timeout), self._path)


class _XRootDReader(_Reopening, ReadHandle):
    def pread(self, offset: int, length: int) -> bytes:
        return self._call(lambda f: _read_range(f, self._path, offset, length, self._timeout))

    def close(self) -> None:
        try:
            _Reopening.close(self)
        except StorageError:
            pass                        # nothing written, nothing to lose


class _XRootDWriter(_Reopening, WriteHandle):
    def pwrite(self, offset: int, data) -> None:
        if offset < 0:
            raise ImpossibleRange(f"impossible offset {offset}", path=self._path)
        buf = data if isinstance(data, bytes) else bytes(data)   # the binding takes bytes only
        if buf:
            self._call(lambda f: _checked(f.write(buf, offset, len(buf), timeout=self._timeout), self._path))

    def sync(self) -> None:
        self._call(lambda f: _checked(f.sync(timeout=self._timeout), self._path))

    def readback(self, offset: int, length: int) -> bytes:
        """Read through the writing handle: XrdCl keeps no data cache, so the bytes come from
        the server's file (a second open for reading would be refused while we write: xrootd
        lets a file have one writer or many readers)."""
        return self._call(lambda f: _read_range(f, self._path, offset, length, self._timeout))

    def truncate(self, size: int) -> None:
        if size < 0:
            raise ImpossibleRange(f"impossible size {size}", path=self._path)
        self._call(lambda f: _checked(f.truncate(size, timeout=self._timeout), self._path))


_shared: dict[str, XRootDStorage] = {}
_shared_lock = threading.Lock()


def open_url(url: str) -> tuple[XRootDStorage, str]:
    """root://host:port//path -> (the one XRootDStorage, and connection pool, of that server; path).
    Chunks of one file are written through several handles (threads, agents), so every open is
    shared rather than one-writer-only."""
    m = _URL.match(url)
    if not m:
        raise UsageError(f"{url}: not an XRootD location (expected root://host:port//path)")
    endpoint = f"{m.group('scheme').lower()}://{m.group('host')}"
    with _shared_lock:
        store = _shared.get(endpoint)
        if store is None:
            store = _shared[endpoint] = XRootDStorage(endpoint, shared_open=True)
    return store, m.group("path") or "/"


register(open_url, "root", "roots", "xroot", "xroots")

__all__ = ["XRootDStorage", "CLIENT_ENV", "DEFAULT_TIMEOUT", "open_url"]
