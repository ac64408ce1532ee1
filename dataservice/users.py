"""The data service's users and their personal API tokens, in one small SQLite file.

Where: `<state_dir>/users.sqlite` (next to the embedded catalogue, whichever catalogue backend is
used), so the people who may log in are managed on the machine that serves them, with
`domas user add|token|revoke|list`. The data service opens it read-only per request.

Invariants:
- A token is shown once, when `issue_token` makes it, and never stored: only its SHA-256 is kept
  (tokens are 256 random bits, so a fast hash is enough; lookup is by hash, an index seek).
- A user holds at most one token: issuing a new one replaces the old; revoking removes it.
- Names compare case-insensitively (they are matched with the team lists of beamtimes); a role is
  one of user, staff, admin (domas.dataservice.access).
- Portal sessions live here too, so a login survives a restart of the data service: only the
  SHA-256 of a session id is stored, with who it is and when it expires; expired ones are never
  honoured and are deleted at the next login. Revoking a user's token ends that user's sessions.
sqlite3 exceptions are translated once, in `_edge`.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import shlex
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from domas.errors import CatalogueUnavailable, NotFound, UsageError
from domas.sqlite import open_db, use_error

from .access import Caller

USERS_FILE = "users.sqlite"
USER_ROLES = ("user", "staff", "admin")
TOKEN_PREFIX = "domas_"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
  name TEXT PRIMARY KEY COLLATE NOCASE, role TEXT NOT NULL, token_sha256 TEXT UNIQUE,
  created_at REAL NOT NULL, token_at REAL);
CREATE TABLE IF NOT EXISTS sessions (
  sid_sha256 TEXT PRIMARY KEY, name TEXT NOT NULL COLLATE NOCASE, role TEXT NOT NULL, expires_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS sessions_expiry ON sessions(expires_at);
"""
SESSION_PREFIX = "s_"


@dataclass(frozen=True)
class User:
    name: str
    role: str
    has_token: bool
    created_at: float
    token_at: float | None


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 200 or not name.isprintable():     # no control or invisible character
        raise UsageError(f"user name {name!r} is not valid: give 1 to 200 printable characters on one line, as the "
                         "beamtime team lists spell it")
    return name


class UserStore:
    """Users and hashed tokens in `<state_dir>/users.sqlite`; safe to share between threads."""

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        with self._edge():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = open_db(self.path, what="user list")
            self._db.executescript(_SCHEMA)

    @classmethod
    def in_state_dir(cls, state_dir: str | Path) -> "UserStore":
        return cls(Path(state_dir) / USERS_FILE)

    @contextlib.contextmanager
    def _edge(self):
        try:
            yield
        except sqlite3.Error as e:
            err = use_error(e, self.path, "user list")
            if err.retriable:                 # locked for now: the data service answers 503, try again
                raise CatalogueUnavailable(str(err)) from None
            raise err from None               # read-only or damaged: exit 74, the service's 500
        except OSError as e:
            raise CatalogueUnavailable(f"the user list {self.path} cannot be opened ({e.strerror or e})") from None

    def add(self, name: str, role: str = "user") -> User:
        name = check_name(name)
        if role not in USER_ROLES:
            raise UsageError(f"role {role!r} is not one of {', '.join(USER_ROLES)}")
        with self._edge():
            if self._db.execute("SELECT 1 FROM users WHERE name=?", (name,)).fetchone():
                raise UsageError(f"user {name} already exists; `domas user token {shlex.quote(name)}` gives a new token")
            self._db.execute("INSERT INTO users VALUES (?,?,NULL,?,NULL)", (name, role, self._clock()))
        return self.get(name)

    def get(self, name: str) -> User:
        with self._edge():
            row = self._db.execute("SELECT name, role, token_sha256 IS NOT NULL, created_at, token_at FROM users "
                                   "WHERE name=?", (name.strip(),)).fetchone()
        if row is None:
            raise NotFound(f"there is no user {name.strip()}; add one with `domas user add NAME`")
        return User(row[0], row[1], bool(row[2]), row[3], row[4])

    def list(self) -> list[User]:
        with self._edge():
            rows = self._db.execute("SELECT name, role, token_sha256 IS NOT NULL, created_at, token_at FROM users "
                                    "ORDER BY name").fetchall()
        return [User(r[0], r[1], bool(r[2]), r[3], r[4]) for r in rows]

    def issue_token(self, name: str) -> str:
        """A new token for `name`, replacing any previous one; shown here once, stored hashed."""
        user = self.get(name)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._edge():
            self._db.execute("UPDATE users SET token_sha256=?, token_at=? WHERE name=?",
                             (token_hash(token), self._clock(), user.name))
        return token

    def revoke(self, name: str) -> User:
        user = self.get(name)
        with self._edge():
            self._db.execute("UPDATE users SET token_sha256=NULL, token_at=NULL WHERE name=?", (user.name,))
            self._db.execute("DELETE FROM sessions WHERE name=?", (user.name,))
        return self.get(user.name)

    def caller_for(self, token: str) -> Caller | None:
        """The user a presented token belongs to, or None."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        with self._edge():
            row = self._db.execute("SELECT name, role FROM users WHERE token_sha256=?", (token_hash(token),)).fetchone()
        return Caller(row[0], row[1]) if row else None

    # -- portal sessions ---------------------------------------------------------------------------
    def open_session(self, who: Caller, expires_at: float, now: float) -> str:
        """A new session id for `who` (shown once: only its hash is kept); expired sessions go."""
        sid = SESSION_PREFIX + secrets.token_urlsafe(32)
        with self._edge():
            self._db.execute("DELETE FROM sessions WHERE expires_at <= ?", (now,))
            self._db.execute("INSERT INTO sessions VALUES (?,?,?,?)", (token_hash(sid), who.name, who.role, expires_at))
        return sid

    def session_caller(self, sid: str, now: float) -> Caller | None:
        """Who a session id (from the cookie) belongs to while it has not expired, else None."""
        if not sid.startswith(SESSION_PREFIX) or len(sid) > 100:
            return None
        with self._edge():
            row = self._db.execute("SELECT name, role FROM sessions WHERE sid_sha256=? AND expires_at > ?",
                                   (token_hash(sid), now)).fetchone()
        return Caller(row[0], row[1]) if row else None

    def end_session(self, sid: str) -> None:
        with self._edge():
            self._db.execute("DELETE FROM sessions WHERE sid_sha256=?", (token_hash(sid),))

    def close(self) -> None:
        self._db.close()
