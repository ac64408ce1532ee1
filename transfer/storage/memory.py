"""In-memory twin of a storage backend, for tests and dry runs (restic's mem backend).

Thread-safe; `synced` tracks which bytes were made durable, so a test can "crash" the backend
(`crash()`) and see exactly what a real disk would have kept after power loss.
"""

from __future__ import annotations

import posixpath
import threading
import time

from domas.checksum import adler32, format_adler32
from domas.errors import ImpossibleRange, IsADirectory, NotFound

from .base import Capabilities, ReadHandle, Stat, Storage, WriteHandle


class _File:
    def __init__(self) -> None:
        self.data = bytearray()
        self.durable = bytearray()
        self.mtime = time.time()
        self.ino = id(self)
        self.mode = 0o644


class MemoryStorage(Storage):
    scheme = "mem"
    # No symlinks and nothing to sync per directory; mode bits are kept but not enforced.
    capabilities = Capabilities(mtime_settable=True, mtime_resolution=1e-6)

    def __init__(self) -> None:
        self._files: dict[str, _File] = {}
        self._dirs: set[str] = {"/"}
        self._lock = threading.RLock()

    # -- helpers ----------------------------------------------------------------------------
    @staticmethod
    def _norm(path: str) -> str:
        return posixpath.normpath("/" + path.lstrip("/"))

    def _file(self, path: str) -> _File:
        p = self._norm(path)
        if p in self._dirs:
            raise IsADirectory(path=path)
        try:
            return self._files[p]
        except KeyError:
            raise NotFound(path=path) from None

    def put(self, path: str, data: bytes) -> None:
        """Create a file with `data`, durable at once (test set-up)."""
        with self._lock:
            self.makedirs(posixpath.dirname(self._norm(path)))
            f = _File()
            f.data[:] = data
            f.durable[:] = data
            self._files[self._norm(path)] = f

    def get(self, path: str) -> bytes:
        with self._lock:
            return bytes(self._file(path).data)

    def crash(self) -> None:
        """Forget every byte not yet synced, as a power loss would."""
        with self._lock:
            for f in self._files.values():
                f.data[:] = f.durable

    # -- Storage ----------------------------------------------------------------------------
    def stat(self, path: str) -> Stat:
        p = self._norm(path)
        with self._lock:
            if p in self._dirs:
                return Stat(p, 0, 0.0, is_dir=True, ident=f"dir:{p}")
            f = self._file(p)
            return Stat(p, len(f.data), f.mtime, ident=str(f.ino), mode=f.mode)

    stat_follow = stat

    def listdir(self, path: str) -> list[Stat]:
        p = self._norm(path)
        with self._lock:
            if p not in self._dirs:
                if p in self._files:
                    raise NotFound(f"{path} is a file, not a directory", path=path)
                raise NotFound(path=path)
            names = {q for q in list(self._files) + list(self._dirs) if q != p and posixpath.dirname(q) == p}
            return [self.stat(q) for q in sorted(names)]

    def open_read(self, path: str) -> ReadHandle:
        return _MemReader(self, self._file(path))

    def open_write(self, path: str, *, create: bool = True, truncate: bool = False,
                   mode: int = 0o644) -> WriteHandle:
        p = self._norm(path)
        with self._lock:
            if p not in self._files:
                if not create:
                    raise NotFound(path=path)
                self.makedirs(posixpath.dirname(p))
                self._files[p] = _File()
                self._files[p].mode = mode & 0o7777
            f = self._files[p]
            if truncate:
                f.data.clear()
            return _MemWriter(self, f)

    def checksum(self, path: str, algo: str = "adler32") -> str | None:
        if algo != "adler32":
            return None
        with self._lock:
            return format_adler32(adler32(bytes(self._file(path).data)))

    def remove(self, path: str) -> None:
        with self._lock:
            self._file(path)
            del self._files[self._norm(path)]

    def rename(self, src: str, dst: str) -> None:
        with self._lock:
            f = self._file(src)
            self.makedirs(posixpath.dirname(self._norm(dst)))
            self._files[self._norm(dst)] = f
            del self._files[self._norm(src)]

    def set_mode(self, path: str, mode: int) -> None:
        with self._lock:
            if self._norm(path) not in self._dirs:       # directories keep no mode here
                self._file(path).mode = mode & 0o7777

    def set_mtime(self, path: str, mtime: float, mtime_ns: int | None = None) -> None:
        with self._lock:
            self._file(path).mtime = mtime_ns / 1e9 if mtime_ns is not None else mtime

    def makedirs(self, path: str) -> None:
        p = self._norm(path)
        with self._lock:
            while p not in self._dirs:
                if p in self._files:
                    raise NotFound(f"{p} is a file, not a directory", path=p)
                self._dirs.add(p)
                p = posixpath.dirname(p)

    def url(self, path: str) -> str:
        return f"mem://{self._norm(path)}"


class _MemReader(ReadHandle):
    def __init__(self, store: MemoryStorage, f: _File) -> None:
        self._store, self._f = store, f

    def pread(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ImpossibleRange(f"impossible range offset={offset} length={length}")
        with self._store._lock:
            return bytes(self._f.data[offset:offset + length])

    def close(self) -> None:
        pass


class _MemWriter(WriteHandle):
    def __init__(self, store: MemoryStorage, f: _File) -> None:
        self._store, self._f = store, f

    def pwrite(self, offset: int, data) -> None:
        if offset < 0:
            raise ImpossibleRange(f"impossible offset {offset}")
        data = bytes(data)
        with self._store._lock:
            buf = self._f.data
            if len(buf) < offset:
                buf.extend(b"\0" * (offset - len(buf)))
            buf[offset:offset + len(data)] = data
            self._f.mtime = time.time()

    def sync(self) -> None:
        with self._store._lock:
            self._f.durable[:] = self._f.data

    def readback(self, offset: int, length: int) -> bytes:
        with self._store._lock:
            return bytes(self._f.durable[offset:offset + length])

    def truncate(self, size: int) -> None:
        with self._store._lock:
            del self._f.data[size:]
            if len(self._f.data) < size:
                self._f.data.extend(b"\0" * (size - len(self._f.data)))

    def close(self) -> None:
        pass
