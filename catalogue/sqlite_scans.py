"""The SQLite catalogue's scan records: one row per Bluesky run (base.Scan), beside its dataset.

Invariants:
- A scan is keyed by its uid; an upsert fills only its empty fields (base.merged_scan), so a
  replayed document changes nothing and a late one (a stop after its start) adds what it says.
- Writing a scan touches only that scan's row (and its search row when its searchable words
  changed): never its dataset's metadata, however many scans the dataset gathers.
- scan_fts shares rowids with scans; a search word matching a scan finds its dataset (SCAN_MATCH).
Every function runs inside the caller's transaction or lock; sqlite3 errors go to the caller's edge.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Sequence

from domas.errors import NotFound

from .base import Scan, merged_scan, scan_doc, scan_from, scan_text
from .search import words

_SCHEMA = """
CREATE TABLE IF NOT EXISTS scans (
  uid TEXT PRIMARY KEY, dataset TEXT NOT NULL REFERENCES datasets(pid), start_time REAL, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS scans_dataset ON scans(dataset, start_time, uid);
CREATE VIRTUAL TABLE IF NOT EXISTS scan_fts USING fts5(body, tokenize='unicode61');
"""

# a dataset whose scans hold the search word :{w} (a clause of the search's free-text match)
SCAN_MATCH = ("d.pid IN (SELECT s.dataset FROM scans s WHERE s.rowid IN "
              "(SELECT rowid FROM scan_fts WHERE scan_fts MATCH :{w}))")
_CHUNK = 500


def ensure_scan_tables(db: sqlite3.Connection) -> None:
    db.executescript(_SCHEMA)


def write_scans(db: sqlite3.Connection, batch: Sequence[Scan]) -> None:
    """Upsert scans (inside the caller's transaction); NotFound when a scan's dataset is unknown."""
    for pid in sorted({s.dataset for s in batch}):
        if db.execute("SELECT 1 FROM datasets WHERE pid=?", (pid,)).fetchone() is None:
            raise NotFound(f"dataset {pid} is not in the catalogue; upsert the dataset before its scans")
    stored = _stored(db, sorted({s.uid for s in batch}))
    for s in batch:
        rowid, old = stored.get(s.uid, (None, None))
        new = merged_scan(old, s)
        if new == old:
            continue
        db.execute("INSERT INTO scans (uid, dataset, start_time, doc) VALUES (?,?,?,?) ON CONFLICT(uid) DO UPDATE "
                   "SET start_time=excluded.start_time, doc=excluded.doc",
                   (new.uid, new.dataset, new.start_time, json.dumps(scan_doc(new), sort_keys=True)))
        body = " ".join(words(scan_text(new)))
        if old is None or body != " ".join(words(scan_text(old))):
            if rowid is None:
                rowid = db.execute("SELECT rowid FROM scans WHERE uid=?", (new.uid,)).fetchone()[0]
            db.execute("DELETE FROM scan_fts WHERE rowid=?", (rowid,))
            db.execute("INSERT INTO scan_fts(rowid, body) VALUES (?,?)", (rowid, body))
        stored[s.uid] = (rowid, new)


def _stored(db: sqlite3.Connection, uids: list[str]) -> dict[str, tuple[int, Scan]]:
    out = {}
    for start in range(0, len(uids), _CHUNK):
        part = uids[start:start + _CHUNK]
        for rowid, uid, doc in db.execute(f"SELECT rowid, uid, doc FROM scans WHERE uid IN "
                                          f"({','.join('?' * len(part))})", part):
            out[uid] = (rowid, scan_from(json.loads(doc)))
    return out


def read_scan(db: sqlite3.Connection, uid: str) -> Scan | None:
    row = db.execute("SELECT doc FROM scans WHERE uid=?", (uid,)).fetchone()
    return scan_from(json.loads(row[0])) if row else None


def read_scans_of(db: sqlite3.Connection, pid: str, limit: int | None) -> list[Scan]:
    rows = db.execute("SELECT doc FROM scans WHERE dataset=? ORDER BY start_time, uid LIMIT ?",
                      (pid, -1 if limit is None else int(limit))).fetchall()
    return [scan_from(json.loads(doc)) for (doc,) in rows]
