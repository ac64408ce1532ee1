"""Fault-injecting twin: wraps any Storage and fails scripted operations (borg's failing chunker).

A script is a list of rules; each rule matches an operation name ("pread", "pwrite", "sync",
"readback", "open_read", "open_write", "stat", "rename", "checksum", ...) and optionally a path
substring and an offset, and fires `times` times (then stops matching). A rule either raises an
error or corrupts data (flips a byte of what pwrite writes or readback returns).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from domas.errors import DomasError

from .base import ReadHandle, Stat, Storage, WriteHandle


@dataclass
class Fault:
    op: str
    error: DomasError | None = None      # raise this
    corrupt: bool = False                # or flip a byte of the data
    path: str = ""                       # substring of the path; "" matches any
    offset: int | None = None            # only this offset (for ranged ops)
    times: int = 1
    fired: int = field(default=0, init=False)


class FaultyStorage(Storage):
    def __init__(self, inner: Storage, faults: list[Fault] | None = None) -> None:
        self.inner = inner
        self.faults: list[Fault] = list(faults or [])
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()
        self.scheme = inner.scheme
        self.chunk_readback = inner.chunk_readback
        self.capabilities = inner.capabilities

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def _match(self, op: str, path: str, offset: int | None = None) -> Fault | None:
        with self._lock:
            self.calls[op] = self.calls.get(op, 0) + 1
            for f in self.faults:
                if f.op == op and f.fired < f.times and f.path in path and (f.offset is None or f.offset == offset):
                    f.fired += 1
                    return f
        return None

    def _check(self, op: str, path: str, offset: int | None = None) -> bool:
        """Raise if a scripted error fires; return True if data should be corrupted."""
        f = self._match(op, path, offset)
        if f is None:
            return False
        if f.error is not None:
            raise f.error
        return f.corrupt

    def stat(self, path: str) -> Stat:
        self._check("stat", path)
        return self.inner.stat(path)

    def stat_follow(self, path: str) -> Stat:
        self._check("stat", path)
        return self.inner.stat_follow(path)

    def listdir(self, path: str) -> list[Stat]:
        self._check("listdir", path)
        return self.inner.listdir(path)

    def open_read(self, path: str) -> ReadHandle:
        self._check("open_read", path)
        return _FaultyReader(self, path, self.inner.open_read(path))

    def open_write(self, path: str, *, create: bool = True, truncate: bool = False,
                   mode: int = 0o644) -> WriteHandle:
        self._check("open_write", path)
        return _FaultyWriter(self, path, self.inner.open_write(path, create=create, truncate=truncate,
                                                                       mode=mode))

    def checksum(self, path: str, algo: str = "adler32") -> str | None:
        corrupt = self._check("checksum", path)
        value = self.inner.checksum(path, algo)
        if corrupt and value is not None:
            value = f"{int(value, 16) ^ 0x1:08x}"
        return value

    def remove(self, path: str) -> None:
        self._check("remove", path)
        self.inner.remove(path)

    def rename(self, src: str, dst: str) -> None:
        self._check("rename", dst)
        self.inner.rename(src, dst)

    def sync_dir(self, path: str) -> None:
        self._check("sync_dir", path)
        self.inner.sync_dir(path)

    def makedirs(self, path: str) -> None:
        self._check("makedirs", path)
        self.inner.makedirs(path)

    def realpath(self, path: str) -> str:
        return self.inner.realpath(path)

    def lock(self, path: str, *, create: bool = True):
        return self.inner.lock(path, create=create)

    def set_mode(self, path: str, mode: int) -> None:
        self._check("set_mode", path)
        self.inner.set_mode(path, mode)

    def set_mtime(self, path: str, mtime: float, mtime_ns: int | None = None) -> None:
        self._check("set_mtime", path)
        self.inner.set_mtime(path, mtime, mtime_ns)

    def chmod_readonly(self, path: str) -> None:
        self._check("chmod_readonly", path)
        self.inner.chmod_readonly(path)

    def url(self, path: str) -> str:
        return self.inner.url(path)


def _flip(data) -> bytes:
    out = bytearray(data)
    if out:
        out[len(out) // 2] ^= 0xFF
    return bytes(out)


class _FaultyReader(ReadHandle):
    def __init__(self, owner: FaultyStorage, path: str, inner: ReadHandle) -> None:
        self._o, self._p, self._in = owner, path, inner

    def pread(self, offset: int, length: int) -> bytes:
        corrupt = self._o._check("pread", self._p, offset)
        data = self._in.pread(offset, length)
        return _flip(data) if corrupt else data

    def close(self) -> None:
        self._in.close()


class _FaultyWriter(WriteHandle):
    def __init__(self, owner: FaultyStorage, path: str, inner: WriteHandle) -> None:
        self._o, self._p, self._in = owner, path, inner

    def pwrite(self, offset: int, data) -> None:
        corrupt = self._o._check("pwrite", self._p, offset)
        self._in.pwrite(offset, _flip(data) if corrupt else data)

    def sync(self) -> None:
        self._o._check("sync", self._p)
        self._in.sync()

    def readback(self, offset: int, length: int) -> bytes:
        corrupt = self._o._check("readback", self._p, offset)
        data = self._in.readback(offset, length)
        return _flip(data) if corrupt else data

    def truncate(self, size: int) -> None:
        self._o._check("truncate", self._p)
        self._in.truncate(size)

    def close(self) -> None:
        self._in.close()
