"""One way to open an SQLite database: the pragmas every domas store uses, and one error at open.

Every store (catalogue, its write spool, the controller's state, users and tokens, the agent's and
the publisher's report spools, the message-bus source's journal) opens its file here, so that:
- the connection is in autocommit mode (`isolation_level=None`: stores run their own BEGIN ...
  COMMIT) and may be used from several threads (stores serialise with their own lock);
- WAL (readers never wait for the writer), `busy_timeout` (a writer waits this long for a lock),
  `synchronous` (NORMAL: durable at checkpoints, safe against corruption; FULL: every commit
  fsynced) and `foreign_keys` are set alike;
- whatever goes wrong while opening (a directory that is missing or not writable, a file that is
  not a database, a lock another process holds) is one DatabaseError naming the file and what to
  do (DatabaseLocked, retriable, for the lock), never sqlite's own text or a traceback.
Errors after the open are translated at each store's edge with `use_error`: the same sentences (locked,
damaged, read-only, disk), naming the file and what to do, never sqlite's text.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from domas.errors import DatabaseError, DatabaseLocked

SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")


def open_db(path: str | os.PathLike, *, what: str = "database", wal: bool = True, synchronous: str = "NORMAL",
            busy_timeout: float = 10.0, foreign_keys: bool = True, cache_kib: int = 0,
            create_parent: bool = True) -> sqlite3.Connection:
    """Open (creating it if absent) the database at `path`; `what` names it in errors ("the
    controller's state store"). `cache_kib` > 0 sets the page cache size."""
    if synchronous.upper() not in SYNCHRONOUS:
        raise ValueError(f"synchronous must be one of {SYNCHRONOUS}, not {synchronous!r}")
    path = Path(path)
    db = None
    try:
        if create_parent:
            path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(str(path), timeout=busy_timeout, isolation_level=None, check_same_thread=False)
        db.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        if wal:
            db.execute("PRAGMA journal_mode=WAL")
        else:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()       # reads the header: a database?
        db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        db.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
        if cache_kib > 0:
            db.execute(f"PRAGMA cache_size=-{int(cache_kib)}")
    except (sqlite3.Error, OSError) as e:
        if db is not None:
            db.close()
        raise open_error(e, path, what) from None
    return db


def _trouble(err: BaseException) -> str:
    """What went wrong, in one word: locked, damaged, readonly, disk or other."""
    text = str(err).lower()
    if isinstance(err, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
        return "locked"
    if isinstance(err, sqlite3.DatabaseError) and ("not a database" in text or "malformed" in text):
        return "damaged"
    if isinstance(err, OSError) or "unable to open" in text or "readonly" in text or "read-only" in text:
        return "readonly"
    if "disk i/o" in text or "full" in text:
        return "disk"
    return "other"


def _sentence(trouble: str, path: Path, what: str, verb: str) -> DatabaseError:
    if trouble == "locked":
        return DatabaseLocked(f"the {what} {path} is locked by another process; wait for it to finish, "
                              "or stop it, and run again")
    if trouble == "damaged":
        return DatabaseError(f"the {what} {path} is not an SQLite database or is damaged; restore it from a "
                             "backup or move it aside to start an empty one")
    if trouble == "readonly":
        return DatabaseError(f"the {what} {path} cannot be {verb} for writing: the file or its "
                             "directory is missing or not writable; check the path and its permissions")
    if trouble == "disk":
        return DatabaseError(f"the {what} {path} cannot be {verb}: the disk failed or is full; free space "
                             "and run again")
    return DatabaseError(f"the {what} {path} cannot be {verb}: it does not hold what domas expects; check "
                         "that it is a domas database of this version")


def open_error(err: BaseException, path: Path, what: str) -> DatabaseError:
    """The one sentence for a database that could not be opened."""
    return _sentence(_trouble(err), path, what, "opened")


def use_error(err: BaseException, path: str | os.PathLike, what: str) -> DatabaseError:
    """The one sentence for a database that failed after it was opened (a store's edge): locked
    (DatabaseLocked, retriable), damaged, read-only, disk failed or full; never sqlite's own text."""
    return _sentence(_trouble(err), Path(path), what, "used")
