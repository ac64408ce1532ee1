"""The controller's durable state: the scheduler's Persist actions in SQLite (WAL).

Invariants: `apply` stores every Persist action of one event in one transaction, so after a crash
the store holds all or none of an event's facts; `load` returns what `Scheduler.restore` needs
(unfinished transfers, all their files, the done chunks of their unfinished files), and
`next_file_id` the first id no stored file has (finished transfers keep their ids). The epoch
grows by one at every open, so lease ids of an earlier run are recognisable. Chunk rows of a
finished file are deleted (its adler32 is kept on the file row). Status queries read only here.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import threading
import time
from pathlib import Path

from domas.checksum import format_adler32
from domas.controller import events as ev
from domas.errors import DatabaseError, DatabaseLocked
from domas.sqlite import open_db

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS transfers (
    id TEXT PRIMARY KEY, seq INTEGER NOT NULL, beamline TEXT NOT NULL, priority INTEGER NOT NULL,
    chunk_size INTEGER NOT NULL, verify TEXT NOT NULL, max_attempts INTEGER NOT NULL,
    sources TEXT NOT NULL, destination TEXT NOT NULL, request_id TEXT, state TEXT NOT NULL,
    submitted_at REAL NOT NULL, finished_at REAL, files_total INTEGER NOT NULL, bytes_total INTEGER NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS transfers_request ON transfers(request_id) WHERE request_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY, transfer_id TEXT NOT NULL, src TEXT NOT NULL, dst TEXT NOT NULL,
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, state TEXT NOT NULL, adler32 TEXT NOT NULL DEFAULT '',
    error_kind TEXT NOT NULL DEFAULT '', error_message TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS files_transfer ON files(transfer_id, id);
CREATE TABLE IF NOT EXISTS staged (transfer_id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS chunks (
    file_id INTEGER NOT NULL, idx INTEGER NOT NULL, adler32 INTEGER NOT NULL, xxh3 INTEGER NOT NULL,
    length INTEGER NOT NULL, PRIMARY KEY (file_id, idx)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tier_markers (url TEXT PRIMARY KEY, marker TEXT NOT NULL, recorded_at REAL NOT NULL);
"""

_BUSY_MS = 2000         # see StateStore.__init__
_INSERT_FILE = "INSERT INTO files (id, transfer_id, src, dst, size, mtime_ns, state, version) VALUES (?,?,?,?,?,?,?,?)"
_TRANSFER_COLUMNS = ("id", "beamline", "priority", "state", "sources", "destination", "submitted_at",
                     "finished_at", "files_total", "bytes_total", "chunk_size", "verify", "max_attempts")


class StateStore:
    def __init__(self, path: str | Path) -> None:
        # busy_timeout 2 s: a write waits on the event loop, so a longer wait stalls every agent's
        # stream; a store still busy after it is recovered from (service.events)
        self._db = open_db(path, what="controller's state store", busy_timeout=_BUSY_MS / 1000)
        self._db.executescript(SCHEMA)
        if "version" not in {row[1] for row in self._db.execute("PRAGMA table_info(files)")}:
            # the source's identity beyond size and mtime (FileSpec.version); '' for older stores
            self._db.execute("ALTER TABLE files ADD COLUMN version TEXT NOT NULL DEFAULT ''")
        self._lock = threading.Lock()
        self._pending: dict[str, tuple] = {}
        for (tid,) in self._db.execute("SELECT transfer_id FROM staged").fetchall():   # a submission cut short
            self.unstage(tid)
        row = self._db.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()
        self.epoch = (int(row[0]) if row else 0) + 1
        self._db.execute("INSERT OR REPLACE INTO meta VALUES ('epoch', ?)", (str(self.epoch),))
        self._epoch_unsaved = False

    def next_epoch(self) -> int:
        """A new epoch for a scheduler rebuilt while the process runs (after a failed write); it is
        stored by the next `apply` that commits, in the same transaction."""
        with self._lock:
            self.epoch += 1
            self._epoch_unsaved = True
            return self.epoch

    def close(self) -> None:
        self._db.close()

    def try_write(self) -> None:
        """Store the epoch (as the next `apply` would) without waiting for another process's lock:
        raises at once while the store cannot be written (locked, full, read-only), so a controller
        waiting for its store can try often without stalling its event loop."""
        with self._lock:
            self._db.execute("PRAGMA busy_timeout=0")
            cur = self._db.cursor()
            try:
                cur.execute("BEGIN IMMEDIATE")
                cur.execute("INSERT OR REPLACE INTO meta VALUES ('epoch', ?)", (str(self.epoch),))
                cur.execute("COMMIT")
                self._epoch_unsaved = False
            except BaseException:
                if self._db.in_transaction:
                    cur.execute("ROLLBACK")
                raise
            finally:
                self._db.execute(f"PRAGMA busy_timeout={_BUSY_MS}")

    # -- writes ------------------------------------------------------------------------------------

    def note_submission(self, transfer_id: str, sources: list[str], destination: str, request_id: str,
                        now: float, bytes_total: int | None = None) -> None:
        """What a TransferAccepted for this id does not carry (kept until that action is applied)."""
        self._pending[transfer_id] = (json.dumps(sources), destination, request_id or None, now, bytes_total)

    def stage_files(self, transfer_id: str, first_file_id: int, files, rows_per_commit: int = 5_000) -> None:
        """Blocking, for a worker thread: a submission's file rows written ahead of its TransferAccepted
        in short transactions, so that the event loop's own writes wait for one slice at most. They
        stay invisible until the TransferAccepted (`staged`) adds the transfer row: `load` and the
        status queries reach files through it. A crash in between leaves the id in `staged`; the
        next open deletes those rows (`unstage`)."""
        for start in range(0, max(len(files), 1), rows_per_commit):
            if start:
                time.sleep(0.002)   # the lock is not fair: without a pause this thread takes it back first
            with self._lock:
                cur = self._db.cursor()
                cur.execute("BEGIN")
                try:
                    if start == 0:
                        cur.execute("INSERT OR REPLACE INTO staged VALUES (?)", (transfer_id,))
                    cur.executemany(_INSERT_FILE, ((first_file_id + i, transfer_id, f.src, f.dst, f.size, f.mtime_ns,
                                                    "queued", f.version)
                                                   for i, f in enumerate(files[start:start + rows_per_commit], start)))
                    cur.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:
                        cur.execute("ROLLBACK")
                    raise

    def unstage(self, transfer_id: str) -> None:
        """Drop the rows `stage_files` wrote for a submission that was not accepted."""
        self._pending.pop(transfer_id, None)
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN")
            try:
                cur.execute("DELETE FROM files WHERE transfer_id=? AND transfer_id NOT IN (SELECT id FROM transfers)",
                            (transfer_id,))
                cur.execute("DELETE FROM staged WHERE transfer_id=?", (transfer_id,))
                cur.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    cur.execute("ROLLBACK")
                raise

    def apply(self, actions: list, now: float) -> None:
        facts = [a for a in actions if isinstance(a, ev.Persist)]
        if not facts and not self._epoch_unsaved:
            return
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN")
            try:
                if self._epoch_unsaved:
                    cur.execute("INSERT OR REPLACE INTO meta VALUES ('epoch', ?)", (str(self.epoch),))
                chunks: list[ev.ChunkDone] = []
                for a in facts:
                    if isinstance(a, ev.ChunkDone):
                        chunks.append(a)
                        continue
                    self._chunks(cur, chunks)
                    _WRITERS[type(a)](self, cur, a, now)
                self._chunks(cur, chunks)
                cur.execute("COMMIT")
                self._epoch_unsaved = False
            except BaseException:
                if self._db.in_transaction:     # a full disk may have rolled it back already
                    cur.execute("ROLLBACK")
                raise

    def _accepted(self, cur, a: ev.TransferAccepted, now: float) -> None:
        t = a.transfer
        sources, destination, request_id, at, nbytes = self._pending.pop(t.transfer_id, ("[]", "", None, now, None))
        seq = cur.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM transfers").fetchone()[0]
        cur.execute("INSERT INTO transfers VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (t.transfer_id, seq, t.beamline, t.priority, t.chunk_size, t.verify, t.max_attempts,
                     sources, destination, request_id, "queued", at, None, len(a.files),
                     sum(f.size for f in a.files) if nbytes is None else nbytes))
        if a.staged:
            cur.execute("DELETE FROM staged WHERE transfer_id=?", (t.transfer_id,))
            return
        cur.executemany(_INSERT_FILE, ((a.first_file_id + i, t.transfer_id, f.src, f.dst, f.size, f.mtime_ns,
                                        "queued", f.version) for i, f in enumerate(a.files)))

    @staticmethod
    def _chunks(cur, chunks: list[ev.ChunkDone]) -> None:
        """Store (and forget) a run of consecutive ChunkDone facts in two statements."""
        if not chunks:
            return
        cur.executemany("INSERT OR REPLACE INTO chunks VALUES (?,?,?,?,?)",
                        [(a.file_id, a.index, a.adler32, a.xxh3 - (1 << 64) if a.xxh3 >= 1 << 63 else a.xxh3,
                          a.length) for a in chunks])
        cur.executemany("UPDATE transfers SET state='active' WHERE id=? AND state='queued'",
                        [(tid,) for tid in {a.transfer_id for a in chunks}])
        chunks.clear()

    def _reset(self, cur, a: ev.FileReset, now: float) -> None:
        cur.execute("DELETE FROM chunks WHERE file_id=?", (a.file_id,))
        cur.execute("UPDATE files SET size=?, mtime_ns=?, version=?, error_kind=?, error_message='' WHERE id=?",
                    (a.size, a.mtime_ns, a.version, a.reason, a.file_id))

    def _done(self, cur, a: ev.FileDone, now: float) -> None:
        cur.execute("UPDATE files SET state='done', adler32=? WHERE id=?", (format_adler32(a.adler32), a.file_id))
        cur.execute("DELETE FROM chunks WHERE file_id=?", (a.file_id,))

    def _failed(self, cur, a: ev.FileFailed, now: float) -> None:
        cur.execute("UPDATE files SET state='failed', error_kind=?, error_message=? WHERE id=?",
                    (a.kind, a.message, a.file_id))
        cur.execute("DELETE FROM chunks WHERE file_id=?", (a.file_id,))

    def _ended(self, cur, a: ev.TransferEnded, now: float) -> None:
        cur.execute("UPDATE transfers SET state=?, finished_at=? WHERE id=?", (a.state, now, a.transfer_id))
        cur.execute("UPDATE files SET state='cancelled' WHERE transfer_id=? AND state NOT IN ('done', 'failed')",
                    (a.transfer_id,))
        cur.execute("DELETE FROM chunks WHERE file_id IN (SELECT id FROM files WHERE transfer_id=?)",
                    (a.transfer_id,))

    # -- reads -------------------------------------------------------------------------------------

    def load(self) -> tuple[list[ev.TransferSpec], list[ev.FileRecord], list[ev.ChunkRecord]]:
        """Everything Scheduler.restore needs, unfinished transfers in submission order."""
        with self._lock:
            db = self._db
            specs = [ev.TransferSpec(*row) for row in db.execute(
                "SELECT id, beamline, priority, chunk_size, verify, max_attempts FROM transfers "
                "WHERE finished_at IS NULL ORDER BY seq")]
            files = [ev.FileRecord(*row) for row in db.execute(
                "SELECT f.id, f.transfer_id, f.src, f.dst, f.size, f.mtime_ns, f.state, f.version FROM files f "
                "JOIN transfers t ON t.id = f.transfer_id WHERE t.finished_at IS NULL ORDER BY f.id")]
            chunks = [ev.ChunkRecord(*row) for row in db.execute(
                "SELECT c.file_id, c.idx, c.adler32 FROM chunks c JOIN files f ON f.id = c.file_id "
                "WHERE f.state = 'queued'")]
        return specs, files, chunks

    def recent_directories(self, since: float) -> list[str]:
        """Destination directories (URLs) the part-file janitor should still visit after a restart:
        those of transfers that ended at or after `since`, and those of failed files of transfers
        still running (the schedule of sweeps is not stored; these are where it could have pointed)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT rtrim(f.dst, replace(f.dst, '/', '')) FROM files f JOIN transfers t ON t.id = f.transfer_id "
                "WHERE t.finished_at >= ? OR (t.finished_at IS NULL AND f.state = 'failed')", (since,)).fetchall()
        return sorted({d[:-1] for (d,) in rows})       # as final_url.rsplit("/", 1)[0] spells it

    def next_file_id(self) -> int:
        """One above the highest file id ever stored, finished transfers included (restore needs it)."""
        with self._lock:
            return self._db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM files").fetchone()[0]

    def tier_markers(self) -> dict[str, str]:
        """{tier root URL: the id of the marker file written there} (controller/tiers.py)."""
        with self._lock:
            return dict(self._db.execute("SELECT url, marker FROM tier_markers"))

    def record_tier_marker(self, url: str, marker: str, now: float) -> None:
        """Remember the marker a tier root holds: from now on the tier is up only while it holds it."""
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO tier_markers VALUES (?, ?, ?)", (url, marker, now))

    def transfer_by_request(self, request_id: str) -> str | None:
        row = self._db.execute("SELECT id FROM transfers WHERE request_id=?", (request_id,)).fetchone()
        return row[0] if row else None

    def transfer(self, transfer_id: str) -> dict | None:
        with self._lock:
            row = self._db.execute(f"SELECT {', '.join(_TRANSFER_COLUMNS)} FROM transfers WHERE id=?",
                                   (transfer_id,)).fetchone()
            return self._transfer_dict(row) if row else None

    def transfers(self, beamline: str = "", states: tuple[str, ...] = (), limit: int = 100,
                  offset: int = 0) -> list[dict]:
        where, args = ["1=1"], []
        if beamline:
            where.append("beamline=?")
            args.append(beamline)
        if states:
            where.append(f"state IN ({','.join('?' * len(states))})")
            args.extend(states)
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(_TRANSFER_COLUMNS)} FROM transfers WHERE "
                                    f"{' AND '.join(where)} ORDER BY seq DESC LIMIT ? OFFSET ?",
                                    (*args, limit, offset)).fetchall()
            return [self._transfer_dict(r) for r in rows]

    def _transfer_dict(self, row: tuple) -> dict:
        d = dict(zip(_TRANSFER_COLUMNS, row))
        d["sources"] = json.loads(d["sources"])
        db, tid = self._db, d["id"]
        counts = dict(db.execute("SELECT state, COUNT(*) FROM files WHERE transfer_id=? GROUP BY state", (tid,)))
        d["files_done"], d["files_failed"] = counts.get("done", 0), counts.get("failed", 0)
        done_bytes = db.execute("SELECT COALESCE(SUM(size), 0) FROM files WHERE transfer_id=? AND state='done'",
                                (tid,)).fetchone()[0]
        partial = db.execute("SELECT COALESCE(SUM(c.length), 0) FROM chunks c JOIN files f ON f.id = c.file_id "
                             "WHERE f.transfer_id=?", (tid,)).fetchone()[0]
        d["bytes_done"] = done_bytes + partial
        d["errors"] = dict(db.execute("SELECT error_kind, COUNT(*) FROM files WHERE transfer_id=? AND "
                                      "state='failed' GROUP BY error_kind", (tid,)))
        return d

    def files(self, transfer_id: str, states: tuple[str, ...] = (), limit: int = 1000,
              offset: int = 0) -> list[dict]:
        where, args = "transfer_id=?", [transfer_id]
        if states:
            where += f" AND state IN ({','.join('?' * len(states))})"
            args.extend(states)
        cols = ("id", "src", "dst", "size", "state", "adler32", "error_kind", "error_message")
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(cols)}, (SELECT COALESCE(SUM(length), 0) FROM chunks "
                                    f"WHERE file_id = files.id) FROM files WHERE {where} ORDER BY id "
                                    f"LIMIT ? OFFSET ?", (*args, limit, offset)).fetchall()
        out = []
        for row in rows:
            d = dict(zip(cols, row[:-1]))
            d["bytes_done"] = d["size"] if d["state"] == "done" else row[-1]
            if d["state"] == "queued" and row[-1]:
                d["state"] = "active"
            out.append(d)
        return out


_WRITERS = {ev.TransferAccepted: StateStore._accepted,
            ev.FileReset: StateStore._reset, ev.FileDone: StateStore._done, ev.FileFailed: StateStore._failed,
            ev.TransferEnded: StateStore._ended}


class StateDirLock:
    """The one controller of a state directory: an exclusive flock on <state_dir>/controller.lock,
    held for the controller's life (the kernel drops it when the process dies, kill -9 included).
    A second controller (a second `domas controller` or `domas up` on the same directory) is
    refused at once instead of scheduling the same files beside the first: its leases would put
    two agents on one destination, which the scheduler's one-writer rule cannot see across
    processes."""

    def __init__(self, state_dir: Path) -> None:
        path = Path(state_dir) / "controller.lock"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise DatabaseError(f"cannot create {path} ({e.strerror}); check that the state directory "
                                "is writable") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self._fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise DatabaseLocked(f"another controller (PID {holder}) uses the state directory {state_dir}; "
                                     "stop it first, or give this one a state directory of its own") from None
            raise DatabaseError(f"cannot lock {path} ({e.strerror})") from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

