"""One error hierarchy for all of domas.

Each class states whether a retry can help (`retriable`) and which exit code the CLI returns.
The class docstring is the sentence a user sees when no more specific message was given:
it says what happened and what to do. Foreign exceptions (OSError, XRootD status, gRPC, pymongo)
are translated once, at the edge that touches them, never deeper.
"""

from __future__ import annotations

import errno as _errno


class DomasError(Exception):
    """Something went wrong in domas."""

    retriable: bool = False
    exit_code: int = 1

    def __init__(self, message: str | None = None, *, path: str | None = None) -> None:
        self.path = path
        text = message or (self.__doc__ or "").strip().splitlines()[0]
        if path and path not in text:
            text = f"{text} ({path})"
        super().__init__(text)

    @property
    def message(self) -> str:
        return str(self)

    @property
    def kind(self) -> str:
        """Stable short name of the error class, used in metrics labels and reports."""
        return _KIND_NAMES.get(type(self), type(self).__name__)


# -- usage and configuration ----------------------------------------------------------------

class UsageError(DomasError):
    """The command line is not valid; see `domas --help`."""

    exit_code = 2


class UnknownScheme(UsageError):
    """No storage backend serves this kind of location; use a local path, file://, root:// or http(s)://."""


class ConfigError(DomasError):
    """The configuration is not valid; fix the named key and run again."""

    exit_code = 78


class UnsafePath(DomasError):
    """The path leaves the tree it must stay in (`..` or a symlink pointing outside); it was skipped."""

    exit_code = 2


class SameFile(DomasError):
    """Source and destination are the same file; nothing was copied."""

    exit_code = 2


# -- storage: permanent ---------------------------------------------------------------------

class StorageError(DomasError):
    """A storage operation failed."""

    exit_code = 3


class NotFound(StorageError):
    """The file or directory does not exist; check the path."""

    exit_code = 3


class PermissionDenied(StorageError):
    """Permission denied; check the owner and mode of the path."""

    exit_code = 4


class NoSpace(StorageError):
    """No space left on the destination; free space and run the same command again to resume."""

    exit_code = 5


class IsADirectory(StorageError):
    """Expected a file but found a directory."""

    exit_code = 3


class ImpossibleRange(StorageError):
    """A byte range outside the file was requested or returned; the file or the server is inconsistent."""

    exit_code = 6


class Unsupported(StorageError):
    """This storage backend does not support the requested operation."""

    exit_code = 3


# -- storage: retriable ---------------------------------------------------------------------

class TransientError(StorageError):
    """A temporary failure; retrying may help."""

    retriable = True
    exit_code = 7


class NetworkTimeout(TransientError):
    """The storage server did not answer in time; it will be retried."""


class ConnectionLost(TransientError):
    """The connection to the storage server was lost; it will be retried."""


class ServerRefused(TransientError):
    """The storage server refused the request (busy or unavailable); it will be retried."""


class ChecksumMismatch(TransientError):
    """The data read back does not match what was sent; the chunk is copied again."""

    exit_code = 8


class SourceChanged(TransientError):
    """The source file changed while it was copied; the copy restarts from the beginning."""


class LeaseExpired(TransientError):
    """The agent's lease on this chunk ran out before the chunk was written; another agent copies it."""


class DestinationBusy(StorageError):
    """Another copy of this destination is running; wait for it to finish, or stop it, and run again."""

    exit_code = 75               # EX_TEMPFAIL: nothing was written, try again later


# -- control plane --------------------------------------------------------------------------

class Unauthenticated(DomasError):
    """The controller refused the token; set DOMAS_TOKEN to the controller's token."""

    exit_code = 77


class ControllerUnavailable(DomasError):
    """The controller cannot be reached; check that it runs and the address is right."""

    retriable = True
    exit_code = 69


class InvalidMessage(DomasError):
    """A malformed or out-of-range message was refused."""

    exit_code = 2


class CatalogueUnavailable(DomasError):
    """The catalogue cannot be reached; writes are spooled and replayed when it returns."""

    retriable = True
    exit_code = 69


class DatabaseError(DomasError):
    """A local database cannot be opened; check that its directory is writable and it is a domas database."""

    exit_code = 74               # EX_IOERR


class DatabaseLocked(DatabaseError):
    """A local database is locked by another process; wait for it, or stop it, and run again."""

    retriable = True
    exit_code = 75               # EX_TEMPFAIL


class TransferFailed(DomasError):
    """Some files could not be copied; see the reasons above."""

    exit_code = 1


class AlreadyEnded(DomasError):
    """The transfer has already finished; there is nothing to cancel."""

    exit_code = 1


class InternalError(DomasError):
    """domas hit an unexpected error; it was logged, and the work is retried or reported as failed."""

    retriable = True
    exit_code = 70               # EX_SOFTWARE


_KIND_NAMES: dict[type, str] = {
    DomasError: "error",
    UsageError: "usage",
    UnknownScheme: "unknown_scheme",
    ConfigError: "config",
    UnsafePath: "unsafe_path",
    SameFile: "same_file",
    StorageError: "storage",
    NotFound: "not_found",
    PermissionDenied: "permission_denied",
    NoSpace: "no_space",
    IsADirectory: "is_a_directory",
    ImpossibleRange: "impossible_range",
    Unsupported: "unsupported",
    TransientError: "transient",
    NetworkTimeout: "timeout",
    ConnectionLost: "connection_lost",
    ServerRefused: "server_refused",
    ChecksumMismatch: "checksum_mismatch",
    SourceChanged: "source_changed",
    DestinationBusy: "destination_busy",
    LeaseExpired: "lease_expired",
    Unauthenticated: "unauthenticated",
    ControllerUnavailable: "controller_unavailable",
    InvalidMessage: "invalid_message",
    CatalogueUnavailable: "catalogue_unavailable",
    DatabaseError: "database",
    DatabaseLocked: "database_locked",
    TransferFailed: "transfer_failed",
    AlreadyEnded: "already_ended",
    InternalError: "internal",
}

KINDS: dict[str, type[DomasError]] = {v: k for k, v in _KIND_NAMES.items()}


def from_kind(kind: str, message: str) -> DomasError:
    """Rebuild an error reported by name (e.g. over gRPC) as the matching class."""
    return KINDS.get(kind, DomasError)(message)


_ERRNO_MAP: dict[int, type[StorageError]] = {
    _errno.ENOENT: NotFound,
    _errno.ENOTDIR: NotFound,
    _errno.EACCES: PermissionDenied,
    _errno.EPERM: PermissionDenied,
    _errno.EROFS: PermissionDenied,
    _errno.ENOSPC: NoSpace,
    _errno.EDQUOT: NoSpace,
    _errno.EFBIG: NoSpace,
    _errno.EISDIR: IsADirectory,
    _errno.EIO: TransientError,
    _errno.EAGAIN: TransientError,
    _errno.EINTR: TransientError,
    _errno.ETIMEDOUT: NetworkTimeout,
    _errno.ECONNRESET: ConnectionLost,
    _errno.ECONNREFUSED: ServerRefused,
    _errno.EINVAL: ImpossibleRange,
}


# Where the class's own sentence would send the user the wrong way ("free space" for a file-size
# limit, "check the owner and mode" for a read-only mount): the sentence said instead.
_ERRNO_SENTENCE: dict[int, str] = {
    _errno.EFBIG: "The file is larger than the destination takes (this process's file-size limit, "
                  "`ulimit -f`, or the largest file of that file system); raise the limit or copy it elsewhere",
    _errno.EROFS: "The destination's file system is mounted read-only; nothing can be written there",
}


def from_oserror(err: OSError, path: str | None = None) -> StorageError:
    """Translate an OSError into the domas class for its errno (the one mapping table)."""
    cls = _ERRNO_MAP.get(err.errno or 0, StorageError)
    reason = err.strerror or str(err)
    where = path or err.filename
    sentence = cls.__doc__.strip().splitlines()[0].rstrip(".")
    if err.errno in _ERRNO_SENTENCE:
        text = _ERRNO_SENTENCE[err.errno]
    elif cls is StorageError:
        text = reason
    elif sentence.split(";")[0].lower() == reason.lower():       # "Permission denied; check ..." says it already
        text = sentence
    else:
        text = f"{sentence}: {reason}"
    out = cls(text, path=str(where) if where else None)
    out.__cause__ = err
    return out
