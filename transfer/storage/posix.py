"""POSIX filesystem backend: preads/pwrites on file descriptors, fdatasync, page-cache drop.

Every OSError is translated by domas.errors.from_oserror, here and nowhere else.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import stat as st

from domas.errors import DestinationBusy, DomasError, ImpossibleRange, Unsupported, from_oserror

from .base import Capabilities, FileLock, ReadHandle, Stat, Storage, WriteHandle
from .registry import register

_HAS_FADVISE = hasattr(os, "posix_fadvise")


@functools.cache
def _syncfs():
    """libc's syncfs (None where there is none: each file is then synced on its own), looked up on
    the first group sync: ctypes is not imported by commands that never make one (`domas get`)."""
    import ctypes

    try:
        fn = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int

    def syncfs(fd: int) -> None:
        if fn(fd) != 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
    return syncfs


@contextlib.contextmanager
def _translated(path: str):
    try:
        yield
    except DomasError:
        raise
    except OSError as e:
        raise from_oserror(e, path) from e


def _special(mode: int) -> str:
    """What a file that is neither a regular file, a directory nor a symlink is ("" for those)."""
    for test, what in ((st.S_ISFIFO, "a FIFO"), (st.S_ISSOCK, "a socket"), (st.S_ISCHR, "a character device"),
                       (st.S_ISBLK, "a block device")):
        if test(mode):
            return what
    return ""


def _to_stat(path: str, s: os.stat_result) -> Stat:
    return Stat(path=path, size=s.st_size if st.S_ISREG(s.st_mode) else 0, mtime=s.st_mtime,
                is_dir=st.S_ISDIR(s.st_mode), is_link=st.S_ISLNK(s.st_mode),
                ident=f"{s.st_dev}:{s.st_ino}", ctime=s.st_ctime, mode=st.S_IMODE(s.st_mode),
                mtime_ns=s.st_mtime_ns, special=_special(s.st_mode))


def not_regular(path: str, what: str) -> Unsupported:
    return Unsupported(f"{path} is {what}, not a regular file; only regular files are copied")


class PosixStorage(Storage):
    scheme = "file"
    capabilities = Capabilities(symlinks="local", dir_sync=True, mtime_settable=True, mtime_resolution=1e-9,
                                permissions=True)

    def sync_many(self, writers: list[WriteHandle]) -> None:
        """One syncfs per filesystem writes every file's data back in one journal commit; the
        fdatasync of each file after it then has nothing left to write, and reports that file's
        own write-back errors (the kernel keeps them per file)."""
        done: set[int] = set()
        syncfs = _syncfs()
        for w in writers:
            if isinstance(w, _PosixWriter) and syncfs is not None:
                dev = os.fstat(w._fd).st_dev
                if dev not in done:
                    done.add(dev)
                    with _translated(w._path):
                        syncfs(w._fd)
        for w in writers:
            w.sync()

    def stat(self, path: str) -> Stat:
        with _translated(path):
            return _to_stat(path, os.lstat(path))

    def stat_follow(self, path: str) -> Stat:
        with _translated(path):
            return _to_stat(path, os.stat(path))

    def listdir(self, path: str) -> list[Stat]:
        out = []
        with _translated(path):
            with os.scandir(path) as it:
                for e in it:
                    full = os.path.join(path, e.name)
                    with _translated(full):
                        out.append(_to_stat(full, e.stat(follow_symlinks=False)))
        return sorted(out, key=lambda s: s.path)

    def open_read(self, path: str) -> ReadHandle:
        with _translated(path):
            if what := _special(os.stat(path).st_mode):    # a socket cannot be opened; a FIFO's open waits for a writer
                raise not_regular(path, what)
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
            mode = os.fstat(fd).st_mode
            if not st.S_ISREG(mode):
                os.close(fd)
                if st.S_ISDIR(mode):
                    raise IsADirectoryError(21, "Is a directory", path)
                raise not_regular(path, _special(mode))
            os.set_blocking(fd, True)
        return _PosixReader(fd, path)

    def open_write(self, path: str, *, create: bool = True, truncate: bool = False,
                   mode: int = 0o644) -> WriteHandle:
        flags = os.O_WRONLY | getattr(os, "O_CLOEXEC", 0)
        flags |= os.O_CREAT if create else 0
        flags |= os.O_TRUNC if truncate else 0
        with _translated(path):
            parent = os.path.dirname(path)
            if create and parent:
                os.makedirs(parent, exist_ok=True)
            fd = os.open(path, flags, mode)
            rfd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        return _PosixWriter(fd, rfd, path)

    def checksum(self, path: str, algo: str = "adler32") -> str | None:
        return None  # a local file has no stored checksum; callers compute it

    def remove(self, path: str) -> None:
        with _translated(path):
            os.unlink(path)

    def rename(self, src: str, dst: str) -> None:
        with _translated(dst):
            os.replace(src, dst)

    def sync_dir(self, path: str) -> None:
        with _translated(path):
            _fsync_dir(path or ".")

    def makedirs(self, path: str) -> None:
        with _translated(path):
            os.makedirs(path, exist_ok=True)

    def realpath(self, path: str) -> str:
        return os.path.realpath(path)

    def lock(self, path: str, *, create: bool = True) -> FileLock | None:
        """flock(2) on the file itself: held by an open file description, so it excludes other
        processes and other opens in this one, and ends when the holder dies. A lock taken on a
        file that was renamed or removed meanwhile is dropped and taken again on the new one."""
        flags = (os.O_RDWR | os.O_CREAT if create else os.O_RDONLY) | getattr(os, "O_CLOEXEC", 0)
        while True:
            with _translated(path):
                if create and os.path.dirname(path):
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                fd = os.open(path, flags, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = os.fstat(fd)
                now = os.stat(path)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise DestinationBusy(f"another copy of {path} is running; wait for it to finish "
                                          "or stop it, then run again", path=path) from None
                if e.errno == errno.ENOENT and create:
                    continue                        # renamed away between the open and the lock
                raise from_oserror(e, path) from e
            if (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino):
                return _PosixLock(fd)
            os.close(fd)                            # locked a file that is no longer at `path`
            if not create:
                raise from_oserror(OSError(errno.ENOENT, "No such file or directory"), path)

    def set_mode(self, path: str, mode: int) -> None:
        with _translated(path):
            os.chmod(path, mode & 0o7777)

    def set_mtime(self, path: str, mtime: float, mtime_ns: int | None = None) -> None:
        with _translated(path):
            if mtime_ns is not None:
                os.utime(path, ns=(mtime_ns, mtime_ns))     # exact: a float of seconds drifts by ~100 ns
            else:
                os.utime(path, (mtime, mtime))

    def chmod_readonly(self, path: str) -> None:
        with _translated(path):
            mode = os.stat(path).st_mode
            os.chmod(path, mode & ~(st.S_IWUSR | st.S_IWGRP | st.S_IWOTH))

    def url(self, path: str) -> str:
        return path


_shared = PosixStorage()


def open_url(url: str) -> tuple[PosixStorage, str]:
    """file:///abs/path -> its path; a plain (absolute or relative) path -> its absolute path."""
    if url.startswith("file://"):
        return _shared, url[len("file://"):] or "/"
    return _shared, os.path.abspath(url)


register(open_url, "file")


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _PosixLock(FileLock):
    def __init__(self, fd: int) -> None:
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)            # closing the last descriptor of the open drops the flock


class _PosixReader(ReadHandle):
    def __init__(self, fd: int, path: str) -> None:
        self._fd, self._path = fd, path

    def pread(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ImpossibleRange(f"impossible range offset={offset} length={length}", path=self._path)
        parts = []
        with _translated(self._path):
            while length > 0:
                got = os.pread(self._fd, length, offset)
                if not got:
                    break
                parts.append(got)
                offset += len(got)
                length -= len(got)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class _PosixWriter(WriteHandle):
    def __init__(self, fd: int, rfd: int, path: str) -> None:
        self._fd, self._rfd, self._path = fd, rfd, path

    def pwrite(self, offset: int, data) -> None:
        if offset < 0:
            raise ImpossibleRange(f"impossible offset {offset}", path=self._path)
        view = memoryview(data).cast("B")
        with _translated(self._path):
            while view:
                n = os.pwrite(self._fd, view, offset)
                view = view[n:]
                offset += n

    def sync(self) -> None:
        with _translated(self._path):
            os.fdatasync(self._fd)

    def readback(self, offset: int, length: int) -> bytes:
        with _translated(self._path):
            if _HAS_FADVISE:
                # The data is synced, so the kernel may drop these clean pages: the read then
                # comes from the device, which is what verification is for.
                os.posix_fadvise(self._rfd, offset, length, os.POSIX_FADV_DONTNEED)
            return _PosixReader(self._rfd, self._path).pread(offset, length)

    def truncate(self, size: int) -> None:
        with _translated(self._path):
            os.ftruncate(self._fd, size)

    def close(self) -> None:
        for fd in (self._fd, self._rfd):
            if fd >= 0:
                os.close(fd)
        self._fd = self._rfd = -1
