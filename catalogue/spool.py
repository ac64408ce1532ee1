"""SpooledCatalogue: writes survive an unreachable catalogue.

Invariants:
- Every write either reached the inner catalogue or is in the spool (SQLite, synchronous=FULL,
  one fsynced transaction per write) before the call returns.
- Writes reach the inner catalogue in the order they were made: while anything is spooled, new
  writes are spooled behind it; the spool is replayed oldest first.
- A spooled write is deleted only after the inner catalogue accepted it; a crash between the two
  replays it once more, which the idempotent upserts make harmless (nothing lost, nothing doubled).
- While the catalogue is down it is retried at most every `retry_seconds`, so a burst of writes does
  not wait a server-selection timeout each.
- A write the catalogue refuses for good (InvalidMessage, NotFound) on replay is moved to the
  `rejected` table with its reason, so it cannot block the writes behind it.
Reads go straight to the inner catalogue and do not see spooled writes.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

from domas.errors import CatalogueUnavailable, DomasError, InvalidMessage, NotFound
from domas.sqlite import open_db, use_error

from .base import (Beamtime, Catalogue, Dataset, FileRecord, Proposal, Replica, ReplicaUpdate, Scan, beamtime_from,
                   check_dataset, check_dataset_state, check_file, check_id, check_replica_updates, check_scan,
                   dataset_from, file_from, plain_metadata, proposal_from, scan_doc, scan_from, to_doc)
from .pid import dataset_pid

SPOOL_FILE = "catalogue-spool.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ops (seq INTEGER PRIMARY KEY AUTOINCREMENT, op TEXT NOT NULL, args TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rejected (seq INTEGER PRIMARY KEY, op TEXT NOT NULL, args TEXT NOT NULL,
                                     reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS renames (spooled TEXT PRIMARY KEY, actual TEXT NOT NULL);
"""


class SpooledCatalogue(Catalogue):
    """Wraps a catalogue; its writes never fail because the catalogue is unreachable."""

    def __init__(self, inner: Catalogue, spool_dir: str | Path, *, retry_seconds: float = 5.0,
                 clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time) -> None:
        self.inner = inner
        self.pid_prefix = inner.pid_prefix
        self.path = Path(spool_dir) / SPOOL_FILE
        self._retry = retry_seconds
        self._clock = clock
        self._wall = wall_clock
        self._next_try = 0.0
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DomasError(f"cannot create the catalogue spool directory {self.path.parent}: {e.strerror}") from None
        with self._edge():
            self._db = open_db(self.path, what="catalogue spool", synchronous="FULL")
            self._db.executescript(_SCHEMA)

    @contextlib.contextmanager
    def _edge(self):
        try:
            yield
        except sqlite3.Error as e:
            raise use_error(e, self.path, "catalogue spool") from e

    # -- the spool -----------------------------------------------------------------------------
    def pending(self) -> int:
        """Writes waiting in the spool."""
        with self._lock, self._edge():
            return self._db.execute("SELECT count(*) FROM ops").fetchone()[0]

    def rejected(self) -> list[tuple[str, dict, str]]:
        """(op, args, reason) of spooled writes the catalogue refused for good."""
        with self._lock, self._edge():
            rows = self._db.execute("SELECT op, args, reason FROM rejected ORDER BY seq").fetchall()
        return [(op, json.loads(args), reason) for op, args, reason in rows]

    def _append(self, op: str, args: dict) -> None:
        with self._edge():
            self._db.execute("INSERT INTO ops (op, args) VALUES (?, ?)", (op, json.dumps(args)))

    def replay(self) -> int:
        """Send spooled writes to the catalogue, oldest first; returns how many were sent.
        Stops (without raising) at the first CatalogueUnavailable."""
        with self._lock:
            sent = 0
            while True:
                with self._edge():
                    row = self._db.execute("SELECT seq, op, args FROM ops ORDER BY seq LIMIT 1").fetchone()
                if row is None:
                    return sent
                seq, op, args = row
                try:
                    self._apply(op, self._renamed(op, json.loads(args)))
                except CatalogueUnavailable:
                    self._next_try = self._clock() + self._retry
                    return sent
                except (InvalidMessage, NotFound) as e:
                    with self._edge():
                        self._db.execute("INSERT OR REPLACE INTO rejected VALUES (?,?,?,?)",
                                         (seq, op, args, str(e)))
                self._delete(seq)
                sent += 1

    def _delete(self, seq: int) -> None:
        with self._edge():
            self._db.execute("DELETE FROM ops WHERE seq=?", (seq,))

    def _renamed(self, op: str, args: dict) -> dict:
        """Point a spooled write at the PID the catalogue actually gave its dataset."""
        if op not in ("files", "replicas", "scans", "state"):
            return args
        key = "pid" if op == "state" else "dataset"
        pids = [f["dataset"] for f in args[op]] if op in ("files", "replicas", "scans") else [args[key]]
        with self._edge():
            marks = ",".join("?" * len(set(pids)))
            renames = dict(self._db.execute(f"SELECT spooled, actual FROM renames WHERE spooled IN ({marks})",
                                            sorted(set(pids))).fetchall())
        if op in ("files", "replicas", "scans"):
            args[op] = [{**f, "dataset": renames.get(f["dataset"], f["dataset"])} for f in args[op]]
        else:
            args[key] = renames.get(args[key], args[key])
        return args

    def _apply(self, op: str, args: dict):
        inner = self.inner
        if op == "proposal":
            return inner.upsert_proposal(proposal_from(args))
        if op == "beamtime":
            return inner.upsert_beamtime(beamtime_from(args))
        if op == "dataset":
            stored = inner.upsert_dataset(dataset_from(args))
            if stored.pid != args["spooled_pid"]:
                with self._edge():
                    self._db.execute("INSERT OR REPLACE INTO renames VALUES (?, ?)",
                                     (args["spooled_pid"], stored.pid))
            return stored
        if op == "files":
            return inner.upsert_files([file_from(f) for f in args["files"]])
        if op == "replicas":
            return inner.set_replicas([ReplicaUpdate(u["dataset"], u["path"], u["tier"], Replica(**u["replica"]))
                                       for u in args["replicas"]])
        if op == "state":
            return inner.set_dataset_state(**args)
        if op == "scans":
            return inner.upsert_scans([scan_from(s) for s in args["scans"]])
        raise DomasError(f"the catalogue spool {self.path} holds an unknown write {op!r}; it was written by a "
                         "newer domas")

    def _write(self, op: str, args: dict, offline_result=None):
        """Apply a write now, or spool it (behind anything already spooled)."""
        with self._lock:
            if self.pending():
                if self._clock() >= self._next_try:
                    self.replay()
                if self.pending():
                    self._append(op, args)
                    return offline_result
            try:
                return self._apply(op, args)
            except CatalogueUnavailable:
                self._next_try = self._clock() + self._retry
                self._append(op, args)
                return offline_result

    # -- writes --------------------------------------------------------------------------------
    def upsert_proposal(self, proposal: Proposal, *, overwrite: bool = False) -> None:
        check_id("proposal", proposal.id)
        if overwrite:                     # an operator's write: now or an error, never spooled
            return self.inner.upsert_proposal(proposal, overwrite=True)
        self._write("proposal", to_doc(proposal))

    def upsert_beamtime(self, beamtime: Beamtime, *, overwrite: bool = False) -> None:
        check_id("beamtime", beamtime.id)
        if overwrite:
            return self.inner.upsert_beamtime(beamtime, overwrite=True)
        self._write("beamtime", to_doc(beamtime))

    def record_changes(self, changes) -> None:
        self.inner.record_changes(changes)

    def history(self, targets):
        return self.inner.history(targets)

    def upsert_dataset(self, dataset: Dataset) -> Dataset:
        check_dataset(dataset)
        stamped = replace(dataset, metadata=plain_metadata(dataset.metadata), file_count=0, bytes=0,
                          created_at=dataset.created_at if dataset.created_at is not None else self._wall())
        pid = dataset.pid or dataset_pid(self.pid_prefix, dataset.beamtime, dataset.path)
        return self._write("dataset", {**to_doc(stamped), "spooled_pid": pid},
                           offline_result=replace(stamped, pid=pid))

    def upsert_files(self, batch: Sequence[FileRecord]) -> None:
        for f in batch:
            check_file(f)
        if batch:
            self._write("files", {"files": [to_doc(f) for f in batch]})

    def set_replicas(self, batch: Sequence[ReplicaUpdate]) -> None:
        check_replica_updates(batch)
        if batch:
            self._write("replicas", {"replicas": [to_doc(u) for u in batch]})

    def upsert_scans(self, batch: Sequence[Scan]) -> None:
        for s in batch:
            check_scan(s)
        if batch:
            self._write("scans", {"scans": [scan_doc(s) for s in batch]})

    def set_dataset_state(self, pid: str, state: str, embargo_end: float | None = None) -> None:
        check_dataset_state(state)
        self._write("state", {"pid": pid, "state": state, "embargo_end": embargo_end})

    def set_beamtime_embargo(self, beamtime_id: str, until: float | None) -> None:
        self.inner.set_beamtime_embargo(beamtime_id, until)       # an operator's act: done now or refused

    def beamtime_embargo(self, beamtime_id: str) -> float | None:
        return self.inner.beamtime_embargo(beamtime_id)

    def recount_dataset(self, pid: str) -> Dataset:
        return self.inner.recount_dataset(pid)

    # -- reads: straight to the catalogue ------------------------------------------------------
    def get_proposal(self, proposal_id):
        return self.inner.get_proposal(proposal_id)

    def get_beamtime(self, beamtime_id):
        return self.inner.get_beamtime(beamtime_id)

    def get_dataset(self, pid):
        return self.inner.get_dataset(pid)

    def dataset_by_path(self, path):
        return self.inner.dataset_by_path(path)

    def find_datasets(self, **filters):
        return self.inner.find_datasets(**filters)

    def search_datasets(self, query):
        return self.inner.search_datasets(query)

    def beamtimes_of_person(self, name):
        return self.inner.beamtimes_of_person(name)

    def get_file(self, dataset, path):
        return self.inner.get_file(dataset, path)

    def get_scan(self, uid):
        return self.inner.get_scan(uid)

    def scans_of(self, pid, limit=None):
        return self.inner.scans_of(pid, limit)

    def files_of(self, pid):
        return self.inner.files_of(pid)

    def files_by_replica_state(self, tier, state, **scope):
        return self.inner.files_by_replica_state(tier, state, **scope)

    def files_lacking_replica(self, tier, state="verified", **scope):
        return self.inner.files_lacking_replica(tier, state, **scope)

    def replicas_due_for_check(self, tier, checked_before, limit=1000):
        return self.inner.replicas_due_for_check(tier, checked_before, limit)

    def ping(self) -> None:
        self.inner.ping()

    def close(self) -> None:
        with self._lock:
            self._db.close()
        self.inner.close()
