"""The one Storage interface every backend implements (POSIX, XRootD, memory, faulty).

Contract, checked by tests/test_storage_contract.py for every backend:
- Paths are absolute, '/'-separated paths inside the backend (for XRootD: the path after
  `root://host:port/`). Backends never interpret `..`; callers resolve and check paths first.
- Every method is blocking; the copy engine runs them in worker threads.
- Errors are domas.errors classes, translated once inside the backend; `is_permanent(err)`
  answers whether retrying can help.
- `ReadHandle.pread(offset, length)` returns exactly `length` bytes unless the range runs past
  the end of the file, in which case it returns the bytes up to the end; a negative offset or
  length raises ImpossibleRange. Reads past the end return b"".
- `WriteHandle.pwrite(offset, data)` writes at `offset` (holes allowed); `sync()` makes all
  written data durable before it returns; `readback()` reads written data from the device, not
  from a cache, where the backend allows it.
- `rename(src, dst)` replaces `dst` atomically where the backend allows it; the new name is
  durable once `sync_dir(parent of dst)` has returned (callers batch that per directory).
- `capabilities` declares what the backend does where backends differ (writes, listing, symlinks,
  directory sync, setting mtime and the precision it keeps, permission bits); the contract suite
  checks each declared answer, so a case a backend does not support is refused as declared
  (Unsupported), never skipped.
- `lock(path)` takes an exclusive advisory lock on a file (created if absent) that holds across
  processes until released; a file another holder locks raises DestinationBusy at once. Backends
  without advisory locks return None (no exclusion).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from collections.abc import Iterator

from domas.errors import DomasError


@dataclass(frozen=True)
class Stat:
    """What the copy engine needs to know about one entry."""

    path: str
    size: int
    mtime: float
    is_dir: bool = False
    is_link: bool = False
    ident: str = ""          # device:inode, XRootD file id: with size and mtime, the source identity
    ctime: float = 0.0       # inode change time (0 where the backend has none)
    mode: int = 0            # permission bits (0 where the backend has none)
    mtime_ns: int = 0        # the exact mtime where the backend keeps nanoseconds (0: only `mtime`)
    special: str = ""        # "a FIFO", "a socket", "a device": no regular file, never read ("" a file or dir)

    def exact_mtime_ns(self) -> int:
        """The mtime in nanoseconds: exact where the backend gave it, else from the float (whose
        ~240 ns steps at today's epoch can move a value across a microsecond boundary)."""
        return self.mtime_ns or round(self.mtime * 1e9)

    def version(self) -> str:
        """The identity beyond size and mtime as one token that other hosts compute alike: the
        change time and the inode (not the device, whose number is local to a host)."""
        if not self.ctime and not self.ident:
            return ""
        return f"{round(self.ctime * 1e9)}:{self.ident.rsplit(':', 1)[-1]}"

    def identity(self) -> tuple:
        """What must stay equal while a file is copied: a rewrite changes at least one of these,
        even one that puts the old mtime back (the ctime moves with every write and utime)."""
        return (self.size, self.mtime, self.ctime, self.ident)


@dataclass(frozen=True)
class Capabilities:
    """What a backend does where backends differ; tests/test_storage_contract.py checks each answer."""

    writable: bool = True        # False: every write (open_write, rename, remove, makedirs) raises Unsupported
    listable: bool = True        # False: listdir raises Unsupported
    # "local": stat shows a symlink (is_link), stat_follow and open_read follow it, realpath resolves it;
    # "server": the server resolves symlinks, clients only ever see the target; "none": no symlinks.
    symlinks: str = "none"
    dir_sync: bool = False       # sync_dir fsyncs the directory (renames durable); False: nothing to do
    mtime_settable: bool = False  # set_mtime takes effect (else it does nothing)
    mtime_resolution: float = 1.0  # seconds: stat's mtime is exact to this
    permissions: bool = False    # set_mode / chmod_readonly take effect; a read-only file or directory
    #                              refuses writes with PermissionDenied


class ReadHandle(abc.ABC):
    @abc.abstractmethod
    def pread(self, offset: int, length: int) -> bytes:
        """Bytes [offset, offset+length) clipped at end of file."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> "ReadHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class WriteHandle(abc.ABC):
    @abc.abstractmethod
    def pwrite(self, offset: int, data) -> None:
        """Write all of `data` at `offset`."""

    @abc.abstractmethod
    def sync(self) -> None:
        """Make every byte written so far durable."""

    @abc.abstractmethod
    def readback(self, offset: int, length: int) -> bytes:
        """Read written bytes back, bypassing caches where the backend allows (after sync)."""

    def truncate(self, size: int) -> None:
        """Set the file length (used to give a fresh destination its final size)."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> "WriteHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FileLock(abc.ABC):
    """An exclusive advisory lock on one file, held until `release()`."""

    @abc.abstractmethod
    def release(self) -> None:
        """Drop the lock; calling it again does nothing."""


class Storage(abc.ABC):
    """A place files live: a local filesystem, an XRootD server, memory."""

    scheme: str = ""
    # Verify written chunks by reading them back (local disks). Backends that can compute a
    # whole-file checksum on the server (XRootD) set this False and are verified by checksum().
    chunk_readback: bool = True
    # The backend's checksum() of a source is the authority the folded sum must match (a data
    # service's Digest header); local files and XRootD sources are hashed in flight instead.
    checksum_authoritative: bool = False
    capabilities: Capabilities = Capabilities()

    @abc.abstractmethod
    def stat(self, path: str) -> Stat:
        """Stat without following a final symlink (is_link tells); NotFound if absent."""

    @abc.abstractmethod
    def stat_follow(self, path: str) -> Stat:
        """Stat following symlinks."""

    @abc.abstractmethod
    def listdir(self, path: str) -> list[Stat]:
        """Entries directly inside a directory (not recursive), with full paths."""

    @abc.abstractmethod
    def open_read(self, path: str) -> ReadHandle: ...

    @abc.abstractmethod
    def open_write(self, path: str, *, create: bool = True, truncate: bool = False,
                   mode: int = 0o644) -> WriteHandle:
        """Open for writing; parent directories are created. Existing data kept unless truncate.
        A file it creates gets the permission bits `mode` (where the backend has them)."""

    @abc.abstractmethod
    def checksum(self, path: str, algo: str = "adler32") -> str | None:
        """The backend's own checksum of a file (8 hex digits for adler32), or None if it has none."""

    @abc.abstractmethod
    def remove(self, path: str) -> None:
        """Remove a file; NotFound if absent."""

    @abc.abstractmethod
    def rename(self, src: str, dst: str) -> None: ...

    def sync_dir(self, path: str) -> None:
        """Make the renames and creations inside a directory durable (no-op where the backend
        needs nothing for that)."""

    @abc.abstractmethod
    def makedirs(self, path: str) -> None:
        """Create a directory and its parents; no error if it exists."""

    def realpath(self, path: str) -> str:
        """The path with symlinks resolved (backends without symlinks return it unchanged)."""
        return path

    def lock(self, path: str, *, create: bool = True) -> FileLock | None:
        """Lock `path` exclusively (see the module docstring); None where the backend cannot."""
        return None

    def sync_many(self, writers: list[WriteHandle]) -> None:
        """Make every byte written through these handles durable, as one piece of work where the
        backend can (a local filesystem: one syncfs instead of an fdatasync per small file)."""
        for w in writers:
            w.sync()

    def set_mode(self, path: str, mode: int) -> None:
        """Set the permission bits (0o777 part) where the backend allows it."""

    def set_mtime(self, path: str, mtime: float, mtime_ns: int | None = None) -> None:
        """Set the modification time where the backend allows it (used for up-to-date checks);
        `mtime_ns`, when given, is the exact time for backends that keep nanoseconds."""

    def chmod_readonly(self, path: str) -> None:
        """Make a file read-only where the backend supports it."""

    def walk(self, path: str) -> Iterator[Stat]:
        """Every entry below `path`, depth first, directories before their contents."""
        for entry in sorted(self.listdir(path), key=lambda s: s.path):
            yield entry
            if entry.is_dir and not entry.is_link:
                yield from self.walk(entry.path)

    def is_permanent(self, err: BaseException) -> bool:
        """True if retrying the operation that raised `err` cannot help."""
        return not (isinstance(err, DomasError) and err.retriable)

    def url(self, path: str) -> str:
        """The URL a user would type for `path` on this backend."""
        return path

    def close(self) -> None:
        """Release connections."""
