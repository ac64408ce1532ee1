"""The embedded catalogue: one SQLite file in WAL mode, nothing to install.

Each write is one transaction (BEGIN IMMEDIATE), so a file record and its dataset's counters
change together or not at all. Replicas live in their own table keyed (file, tier) with an index
on (tier, state, file), so "which files have a verified copy on tape" is an index range scan.
Queries that may return millions of rows page by key, never holding a cursor across pages.
sqlite3 exceptions are translated once, in `_edge`.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator, Sequence

from domas.errors import CatalogueUnavailable, DomasError, InvalidMessage, NotFound
from domas.sqlite import open_db

from .base import (Beamtime, Catalogue, Change, Dataset, FileRecord, Proposal, Replica, ReplicaUpdate, Scan,
                   check_dataset, check_dataset_state, check_file, check_id, check_replica_updates, check_scan,
                   counter_delta, filled, inherit_embargo, kept_dataset, merged_file, plain_metadata)
from .pid import dataset_pid, prefix_style
from .search import (BeamtimeFacets, SearchQuery, SearchResult, beamtime_text, check_query, dataset_text, file_words,
                     fold_facets, query_words, sort_key, sort_title, words, year_of)
from .sqlite_facets import (DS_FTS_SCHEMA, DS_VOCAB_SCHEMA, ROWS, TextPlan, bounded_rows, broad, ds_body,
                            ensure_facet_table, filters, fts_ids, fts_key, fts_word, grouped_rows, newest_of,
                            next_embargo_end, recent_window, rekey_fts, text_plan)
from .sqlite_scans import SCAN_MATCH, ensure_scan_tables, read_scan, read_scans_of, write_scans

PAGE = 2000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS proposals (id TEXT PRIMARY KEY, title TEXT NOT NULL, pi TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS proposals_pi ON proposals(pi);
CREATE TABLE IF NOT EXISTS beamtimes (
  id TEXT PRIMARY KEY, beamline TEXT NOT NULL, proposal TEXT NOT NULL, pi TEXT NOT NULL,
  team TEXT NOT NULL, start REAL, end REAL);
CREATE INDEX IF NOT EXISTS beamtimes_pi ON beamtimes(pi);
CREATE INDEX IF NOT EXISTS beamtimes_proposal ON beamtimes(proposal);
CREATE TABLE IF NOT EXISTS datasets (
  pid TEXT PRIMARY KEY, beamtime TEXT NOT NULL, path TEXT NOT NULL UNIQUE, data_type TEXT NOT NULL,
  state TEXT NOT NULL, embargo_end REAL, metadata TEXT NOT NULL, file_count INTEGER NOT NULL,
  bytes INTEGER NOT NULL, created_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS datasets_beamtime ON datasets(beamtime, created_at);
CREATE INDEX IF NOT EXISTS datasets_created ON datasets(created_at);
CREATE TABLE IF NOT EXISTS files (
  id INTEGER PRIMARY KEY, dataset TEXT NOT NULL REFERENCES datasets(pid), path TEXT NOT NULL,
  beamtime TEXT NOT NULL, size INTEGER NOT NULL, adler32 TEXT NOT NULL, xxh3 TEXT NOT NULL,
  mtime REAL NOT NULL, UNIQUE (dataset, path));
CREATE INDEX IF NOT EXISTS files_dataset ON files(dataset);
CREATE INDEX IF NOT EXISTS files_beamtime ON files(beamtime);
CREATE TABLE IF NOT EXISTS replicas (
  file_id INTEGER NOT NULL REFERENCES files(id), tier TEXT NOT NULL, state TEXT NOT NULL,
  url TEXT NOT NULL, verified_at REAL, version TEXT NOT NULL DEFAULT '', checked_at REAL,
  PRIMARY KEY (file_id, tier)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS replicas_tier_state ON replicas(tier, state, file_id);
CREATE TABLE IF NOT EXISTS changes (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, who TEXT NOT NULL, target TEXT NOT NULL,
  field TEXT NOT NULL, old TEXT NOT NULL, new TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS changes_target ON changes(target, seq);
"""

# Free-text search (search.py): pre-split words, rowids shared with files and beamtimes; a dataset's
# ds_fts rowid carries its rowid and its facet group (sqlite_facets.fts_key).
_SEARCH_SCHEMA = f"""
{DS_FTS_SCHEMA};
CREATE VIRTUAL TABLE IF NOT EXISTS file_fts USING fts5(body, tokenize='unicode61');
CREATE VIRTUAL TABLE IF NOT EXISTS bt_fts USING fts5(body, tokenize='unicode61');
CREATE INDEX IF NOT EXISTS datasets_beamtime_nocase ON datasets(beamtime COLLATE NOCASE);
CREATE INDEX IF NOT EXISTS beamtimes_proposal_nocase ON beamtimes(proposal COLLATE NOCASE);
CREATE INDEX IF NOT EXISTS datasets_facets ON datasets(beamtime, data_type, created_at, embargo_end, state);
"""
_SEARCH_VERSION = 4             # 1: ds_fts rowid = dataset rowid; 2: sqlite_facets.fts_key; 3: + prefix index;
                                # 4: + sqlite_facets.EVERY in every text
COUNT_CACHE_SIZE = 256
_RECENT_MAX = 100_000          # the most datasets a free-text page tries first (sqlite_facets.recent_window)
_FEW_BEAMTIMES = 500             # a narrow query's page is looked up through the beamtimes of its matches
_UNDER_EMBARGO = ROWS.under_embargo
# the ways a search word finds a dataset besides its own text (ds_fts) and its beamtime's (bt_fts):
# conditions on datasets d, the word's FTS query as :{w} (sqlite_facets.grouped_rows counts through them)
_WORD_SIDES = ("d.pid IN (SELECT f.dataset FROM files f WHERE f.id IN "
               "(SELECT rowid FROM file_fts WHERE file_fts MATCH :{w}))", SCAN_MATCH)

_DATASET_COLS = "d.pid, d.beamtime, d.path, d.data_type, d.state, d.embargo_end, d.metadata, " \
                "d.file_count, d.bytes, d.created_at"
_FILE_COLS = "f.id, f.dataset, f.path, f.beamtime, f.size, f.adler32, f.xxh3, f.mtime"


def _beamtime(row: tuple) -> Beamtime:
    i, beamline, proposal, pi, team, start, end = row
    return Beamtime(i, beamline, proposal, pi, tuple(json.loads(team)), start, end)


def _translate(err: sqlite3.Error, where: str) -> DomasError:
    text = str(err)
    if isinstance(err, sqlite3.IntegrityError):
        return InvalidMessage(f"the catalogue refused the record: {text}")
    if isinstance(err, sqlite3.OperationalError) and any(
            s in text for s in ("locked", "busy", "unable to open", "disk I/O")):
        return CatalogueUnavailable(f"the catalogue database {where} cannot be used now ({text}); "
                                    "writes are spooled and replayed when it returns")
    return DomasError(f"the catalogue database {where} failed: {text}; check that it is a domas catalogue")


class SQLiteCatalogue(Catalogue):
    """Catalogue in one SQLite file; safe to share between threads of one process."""

    def __init__(self, path: str | Path, pid_prefix: str = "CSTR:17058.11.HEPS", *,
                 clock: Callable[[], float] = time.time, synchronous: str = "FULL") -> None:
        prefix_style(pid_prefix)
        self.pid_prefix = pid_prefix
        self.path = str(path)
        self._clock = clock
        self._lock = threading.RLock()
        self._counts: dict = {}                  # search totals and facets (see _counted)
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CatalogueUnavailable(f"cannot create the directory of the catalogue {self.path}: "
                                       f"{e.strerror}") from None
        with self._edge():
            self._db = open_db(self.path, what="catalogue database", synchronous=synchronous, cache_kib=65536)
            self._db.executescript(_SCHEMA)
            self._db.executescript(_SEARCH_SCHEMA)
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            regrouped = self._migrate()
            if version < 1:
                self._rebuild_search()
            elif version < _SEARCH_VERSION or regrouped:
                with self._tx() as db:
                    rekey_fts(db, keyed=version >= 2)
                    db.execute(f"PRAGMA user_version={_SEARCH_VERSION}")
            self._db.execute(DS_VOCAB_SCHEMA)
            ensure_scan_tables(self._db)

    def _migrate(self) -> bool:
        """Catalogues written before replicas recorded their content version and last check, the
        title order or the facet counter tables; True when the facet groups were (re)made."""
        have = {row[1] for row in self._db.execute("PRAGMA table_info(replicas)")}
        for column, decl in (("version", "TEXT NOT NULL DEFAULT ''"), ("checked_at", "REAL")):
            if column not in have:
                self._db.execute(f"ALTER TABLE replicas ADD COLUMN {column} {decl}")
        # the scrubber's "longest unchecked first" is a range scan of this index, never a sort
        self._db.execute("CREATE INDEX IF NOT EXISTS replicas_check ON replicas(tier, state, "
                         "coalesce(checked_at, verified_at, 0))")
        # the portal's "sort by title": the shown title, case folded, kept with each dataset
        if "sort_title" not in {row[1] for row in self._db.execute("PRAGMA table_info(datasets)")}:
            with self._tx() as db:
                db.execute("ALTER TABLE datasets ADD COLUMN sort_title TEXT NOT NULL DEFAULT ''")
                db.executemany("UPDATE datasets SET sort_title=? WHERE pid=?", (
                    (sort_title(path, json.loads(meta)), pid)
                    for pid, path, meta in db.execute("SELECT pid, path, metadata FROM datasets").fetchall()))
        self._db.execute("CREATE INDEX IF NOT EXISTS datasets_title ON datasets(sort_title, pid)")
        with self._tx() as db:
            regrouped = ensure_facet_table(db)
        # an embargo kept on a beamtime, for its datasets catalogued later (inherit_embargo)
        self._db.execute("CREATE TABLE IF NOT EXISTS beamtime_embargoes (beamtime TEXT PRIMARY KEY, "
                         "embargo_end REAL NOT NULL)")
        return regrouped

    def _text_plan(self, query: SearchQuery) -> TextPlan | None:
        found = query_words(query.q)
        return text_plan(self._db, found, _WORD_SIDES) if found else None

    def _grouped_facets(self, query: SearchQuery, plan: TextPlan | None = None) -> tuple[dict, list[tuple]] | None:
        """(beamtimes, facet groups) from the counter tables, or None (sqlite_facets.grouped_rows)."""
        groups = grouped_rows(self._db, query, plan or self._text_plan(query))
        return None if groups is None else (self._beamtimes({g[0] for g in groups}), groups)

    @contextlib.contextmanager
    def _edge(self):
        try:
            yield
        except sqlite3.Error as e:
            raise _translate(e, self.path) from e

    @contextlib.contextmanager
    def _tx(self):
        with self._lock, self._edge():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, args: Sequence = ()) -> list[tuple]:
        with self._lock, self._edge():
            return self._db.execute(sql, args).fetchall()

    # -- writes --------------------------------------------------------------------------------
    def upsert_proposal(self, proposal: Proposal, *, overwrite: bool = False) -> None:
        check_id("proposal", proposal.id)
        with self._tx() as db:
            if not overwrite:
                row = db.execute("SELECT id, title, pi FROM proposals WHERE id=?", (proposal.id,)).fetchone()
                proposal = filled(Proposal(*row) if row else None, proposal)
            db.execute("INSERT INTO proposals VALUES (?,?,?) ON CONFLICT(id) DO UPDATE SET "
                       "title=excluded.title, pi=excluded.pi", (proposal.id, proposal.title, proposal.pi))
            for (bt,) in db.execute("SELECT id FROM beamtimes WHERE proposal=?", (proposal.id,)).fetchall():
                self._index_beamtime(db, bt)

    def upsert_beamtime(self, b: Beamtime, *, overwrite: bool = False) -> None:
        check_id("beamtime", b.id)
        with self._tx() as db:
            if not overwrite:
                row = db.execute("SELECT * FROM beamtimes WHERE id=?", (b.id,)).fetchone()
                b = filled(_beamtime(row) if row else None, b)
            db.execute("INSERT INTO beamtimes VALUES (?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET "
                       "beamline=excluded.beamline, proposal=excluded.proposal, pi=excluded.pi, "
                       "team=excluded.team, start=excluded.start, end=excluded.end",
                       (b.id, b.beamline, b.proposal, b.pi, json.dumps(list(b.team)), b.start, b.end))
            self._index_beamtime(db, b.id)

    def upsert_dataset(self, d: Dataset) -> Dataset:
        check_dataset(d)
        with self._tx() as db:
            pid = self._write_dataset(db, d)
        return self.get_dataset(pid)

    def upsert_datasets(self, batch: Sequence[Dataset]) -> None:
        """The bulk path: many datasets in one transaction (same rules as upsert_dataset)."""
        for d in batch:
            check_dataset(d)
        with self._tx() as db:
            for d in batch:
                self._write_dataset(db, d)

    def _write_dataset(self, db: sqlite3.Connection, d: Dataset) -> str:
        meta = json.dumps(plain_metadata(d.metadata), sort_keys=True)
        row = db.execute("SELECT pid, beamtime, state, embargo_end, metadata FROM datasets WHERE path=?",
                         (d.path,)).fetchone()
        if row:
            pid = row[0]
            if d.pid and d.pid != pid:
                raise InvalidMessage(f"dataset {d.path} already has the PID {pid}, not {d.pid}")
            d = kept_dataset(Dataset(row[1], d.path, state=row[2], embargo_end=row[3],
                                     metadata=json.loads(row[4])), d)
            meta = json.dumps(plain_metadata(d.metadata), sort_keys=True)
            db.execute("UPDATE datasets SET beamtime=?, data_type=?, state=?, embargo_end=?, metadata=?, sort_title=? "
                       "WHERE pid=?", (d.beamtime, d.data_type, d.state, d.embargo_end, meta,
                                       sort_title(d.path, plain_metadata(d.metadata)), pid))
            if row[1] != d.beamtime:
                db.execute("UPDATE files SET beamtime=? WHERE dataset=?", (d.beamtime, pid))
        else:
            pid = d.pid or dataset_pid(self.pid_prefix, d.beamtime, d.path)
            created = d.created_at if d.created_at is not None else self._clock()
            until = db.execute("SELECT embargo_end FROM beamtime_embargoes WHERE beamtime=?", (d.beamtime,)).fetchone()
            d = inherit_embargo(d, until[0] if until else None)
            db.execute("INSERT INTO datasets (pid, beamtime, path, data_type, state, embargo_end, metadata, "
                       "file_count, bytes, created_at, sort_title) VALUES (?,?,?,?,?,?,?,0,0,?,?)",
                       (pid, d.beamtime, d.path, d.data_type, d.state, d.embargo_end, meta, created,
                        sort_title(d.path, plain_metadata(d.metadata))))
        self._index_dataset(db, pid, d.beamtime, d.path, d.data_type, plain_metadata(d.metadata), new=not row)
        return pid

    def upsert_files(self, batch: Sequence[FileRecord]) -> None:
        for f in batch:
            check_file(f)
        with self._tx() as db:
            beamtimes: dict[str, str] = {}
            deltas: dict[str, list[int]] = {}
            for f in batch:
                if f.dataset not in beamtimes:
                    beamtimes[f.dataset] = self._beamtime_of(db, f.dataset)
                old_size = self._write_file(db, f, beamtimes[f.dataset])
                n, b = counter_delta(old_size, f.size)
                acc = deltas.setdefault(f.dataset, [0, 0])
                acc[0] += n
                acc[1] += b
            db.executemany("UPDATE datasets SET file_count=file_count+?, bytes=bytes+? WHERE pid=?",
                           [(n, b, pid) for pid, (n, b) in deltas.items() if n or b])

    @staticmethod
    def _beamtime_of(db: sqlite3.Connection, pid: str) -> str:
        row = db.execute("SELECT beamtime FROM datasets WHERE pid=?", (pid,)).fetchone()
        if row is None:
            raise NotFound(f"dataset {pid} is not in the catalogue; upsert the dataset before its files")
        return row[0]

    def _write_file(self, db: sqlite3.Connection, f: FileRecord, beamtime: str) -> int | None:
        """Upsert one file row and its replicas; returns the old size (None if the file is new)."""
        old = db.execute(f"SELECT {_FILE_COLS} FROM files f WHERE dataset=? AND path=?", (f.dataset, f.path)).fetchone()
        if old is None:
            cur = db.execute("INSERT INTO files (dataset, path, beamtime, size, adler32, xxh3, mtime) "
                             "VALUES (?,?,?,?,?,?,?)", (f.dataset, f.path, beamtime, f.size, f.adler32, f.xxh3, f.mtime))
            self._write_replicas(db, cur.lastrowid, {}, f.replicas)
            db.execute("INSERT INTO file_fts(rowid, body) VALUES (?,?)", (cur.lastrowid, " ".join(file_words(f.path))))
            return None
        before = self._with_replicas(db, [old])[0]
        after = merged_file(before, f)
        db.execute("UPDATE files SET size=?, adler32=?, xxh3=?, mtime=?, beamtime=? WHERE id=?",
                   (after.size, after.adler32, after.xxh3, after.mtime, beamtime, old[0]))
        self._write_replicas(db, old[0], before.replicas, after.replicas)
        return before.size

    @staticmethod
    def _write_replicas(db: sqlite3.Connection, file_id: int, before: dict, after: dict) -> None:
        rows = [(file_id, tier, r.state, r.url, r.verified_at, r.version, r.checked_at)
                for tier, r in after.items() if before.get(tier) != r]
        db.executemany("INSERT INTO replicas (file_id, tier, state, url, verified_at, version, checked_at) "
                       "VALUES (?,?,?,?,?,?,?) ON CONFLICT(file_id, tier) DO UPDATE SET state=excluded.state, "
                       "url=excluded.url, verified_at=excluded.verified_at, version=excluded.version, "
                       "checked_at=excluded.checked_at", rows)

    def set_replicas(self, batch: Sequence[ReplicaUpdate]) -> None:
        check_replica_updates(batch)
        with self._tx() as db:
            for u in batch:
                row = db.execute("SELECT id FROM files WHERE dataset=? AND path=?", (u.dataset, u.path)).fetchone()
                if row is None:
                    raise NotFound(f"file {u.path} of dataset {u.dataset} is not in the catalogue")
                self._write_replicas(db, row[0], {}, {u.tier: u.replica})

    def set_dataset_state(self, pid: str, state: str, embargo_end: float | None = None) -> None:
        check_dataset_state(state)
        with self._tx() as db:
            cur = db.execute("UPDATE datasets SET state=?, embargo_end=coalesce(?, embargo_end) WHERE pid=?",
                             (state, embargo_end, pid))
            if cur.rowcount == 0:
                raise NotFound(f"dataset {pid} is not in the catalogue")

    def set_beamtime_embargo(self, beamtime_id: str, until: float | None) -> None:
        with self._tx() as db:
            if until is None:
                db.execute("DELETE FROM beamtime_embargoes WHERE beamtime=?", (beamtime_id,))
            else:
                db.execute("INSERT INTO beamtime_embargoes VALUES (?,?) ON CONFLICT(beamtime) DO UPDATE SET "
                           "embargo_end=excluded.embargo_end", (beamtime_id, until))

    def beamtime_embargo(self, beamtime_id: str) -> float | None:
        rows = self._query("SELECT embargo_end FROM beamtime_embargoes WHERE beamtime=?", (beamtime_id,))
        return rows[0][0] if rows else None

    def recount_dataset(self, pid: str) -> Dataset:
        with self._tx() as db:
            db.execute("UPDATE datasets SET file_count=(SELECT count(*) FROM files WHERE dataset=:p), "
                       "bytes=(SELECT coalesce(sum(size), 0) FROM files WHERE dataset=:p) WHERE pid=:p", {"p": pid})
        found = self.get_dataset(pid)
        if found is None:
            raise NotFound(f"dataset {pid} is not in the catalogue")
        return found

    # -- reads ---------------------------------------------------------------------------------
    def get_proposal(self, proposal_id: str) -> Proposal | None:
        rows = self._query("SELECT id, title, pi FROM proposals WHERE id=?", (proposal_id,))
        return Proposal(*rows[0]) if rows else None

    def get_beamtime(self, beamtime_id: str) -> Beamtime | None:
        rows = self._query("SELECT * FROM beamtimes WHERE id=?", (beamtime_id,))
        return _beamtime(rows[0]) if rows else None

    def record_changes(self, changes: Sequence[Change]) -> None:
        with self._tx() as db:
            db.executemany("INSERT INTO changes (at, who, target, field, old, new) VALUES (?,?,?,?,?,?)",
                           [(c.at, c.who, c.target, c.field, json.dumps(c.old), json.dumps(c.new)) for c in changes])

    def history(self, targets: Sequence[str]) -> list[Change]:
        if not targets:
            return []
        rows = self._query(f"SELECT at, who, target, field, old, new FROM changes WHERE target IN "
                           f"({','.join('?' * len(targets))}) ORDER BY seq", tuple(targets))
        return [Change(at, who, target, field, json.loads(old), json.loads(new))
                for at, who, target, field, old, new in rows]

    @staticmethod
    def _dataset(row: tuple) -> Dataset:
        pid, beamtime, path, data_type, state, embargo_end, meta, count, size, created = row
        return Dataset(beamtime=beamtime, path=path, data_type=data_type, state=state, embargo_end=embargo_end,
                       metadata=json.loads(meta), pid=pid, file_count=count, bytes=size, created_at=created)

    def get_dataset(self, pid: str) -> Dataset | None:
        rows = self._query(f"SELECT {_DATASET_COLS} FROM datasets d WHERE pid=?", (pid,))
        return self._dataset(rows[0]) if rows else None

    def dataset_by_path(self, path: str) -> Dataset | None:
        rows = self._query(f"SELECT {_DATASET_COLS} FROM datasets d WHERE path=?", (path,))
        return self._dataset(rows[0]) if rows else None

    def find_datasets(self, *, beamtime=None, proposal=None, pi=None, since=None, path_prefix=None,
                      limit=None) -> list[Dataset]:
        where, args = [], []
        if beamtime is not None:
            where.append("d.beamtime=?")
            args.append(beamtime)
        if proposal is not None:
            where.append("d.beamtime IN (SELECT id FROM beamtimes WHERE proposal=?)")
            args.append(proposal)
        if pi is not None:
            where.append("d.beamtime IN (SELECT id FROM beamtimes WHERE pi=? UNION SELECT b.id FROM beamtimes b "
                         "JOIN proposals p ON p.id=b.proposal WHERE p.pi=?)")
            args += [pi, pi]
        if since is not None:
            where.append("d.created_at>=?")
            args.append(since)
        if path_prefix is not None:
            root = path_prefix.rstrip("/") + "/"
            where.append("(d.path=? OR substr(d.path, 1, ?)=?)")
            args += [root.rstrip("/") or "/", len(root), root]
        sql = f"SELECT {_DATASET_COLS} FROM datasets d"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY d.created_at DESC, d.pid"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [self._dataset(r) for r in self._query(sql, args)]

    def _with_replicas(self, db: sqlite3.Connection, rows: list[tuple]) -> list[FileRecord]:
        ids = [r[0] for r in rows]
        reps: dict[int, dict[str, Replica]] = {i: {} for i in ids}
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500]
            marks = ",".join("?" * len(part))
            for fid, tier, state, url, verified_at, version, checked_at in db.execute(
                    "SELECT file_id, tier, state, url, verified_at, version, checked_at FROM replicas "
                    f"WHERE file_id IN ({marks})", part):
                reps[fid][tier] = Replica(state, url, verified_at, version, checked_at)
        return [FileRecord(dataset=ds, path=p, size=size, adler32=a, xxh3=x, mtime=m,
                           replicas=dict(sorted(reps[fid].items())), beamtime=bt)
                for fid, ds, p, bt, size, a, x, m in rows]

    # -- scans (sqlite_scans.py) ----------------------------------------------------------------
    def upsert_scans(self, batch: Sequence[Scan]) -> None:
        for s in batch:
            check_scan(s)
        if batch:
            with self._tx() as db:
                write_scans(db, batch)

    def get_scan(self, uid: str) -> Scan | None:
        with self._lock, self._edge():
            return read_scan(self._db, uid)

    def scans_of(self, pid: str, limit: int | None = None) -> list[Scan]:
        with self._lock, self._edge():
            return read_scans_of(self._db, pid, limit)

    def get_file(self, dataset: str, path: str) -> FileRecord | None:
        with self._lock, self._edge():
            rows = self._db.execute(f"SELECT {_FILE_COLS} FROM files f WHERE dataset=? AND path=?",
                                    (dataset, path)).fetchall()
            return self._with_replicas(self._db, rows)[0] if rows else None

    def files_of(self, pid: str) -> Iterator[FileRecord]:
        last = ""
        while True:
            with self._lock, self._edge():
                rows = self._db.execute(f"SELECT {_FILE_COLS} FROM files f WHERE dataset=? AND path>? "
                                        f"ORDER BY path LIMIT {PAGE}", (pid, last)).fetchall()
                page = self._with_replicas(self._db, rows)
            yield from page
            if len(rows) < PAGE:
                return
            last = rows[-1][2]

    def _paged(self, sql: str, args: list, limit: int | None, key: str = "f.id") -> Iterator[FileRecord]:
        """Run `sql` (whose first placeholder is `key > ?`) page by page, in file id order."""
        last, left = 0, limit if limit is not None else -1
        while left != 0:
            size = PAGE if left < 0 else min(PAGE, left)
            with self._lock, self._edge():
                rows = self._db.execute(f"{sql} ORDER BY {key} LIMIT {size}", [last, *args]).fetchall()
                page = self._with_replicas(self._db, rows)
            yield from page
            left = left - len(rows) if left > 0 else left
            if len(rows) < size:
                return
            last = rows[-1][0]

    @staticmethod
    def _scope(dataset: str | None, beamtime: str | None) -> tuple[str, list]:
        sql, args = "", []
        if dataset is not None:
            sql += " AND f.dataset=?"
            args.append(dataset)
        if beamtime is not None:
            sql += " AND f.beamtime=?"
            args.append(beamtime)
        return sql, args

    def files_by_replica_state(self, tier, state, *, dataset=None, beamtime=None, limit=None):
        scope, args = self._scope(dataset, beamtime)
        sql = (f"SELECT {_FILE_COLS} FROM replicas r JOIN files f ON f.id=r.file_id "
               f"WHERE r.file_id>? AND r.tier=? AND r.state=?{scope}")
        return self._paged(sql, [tier, state, *args], limit, key="r.file_id")

    def files_lacking_replica(self, tier, state="verified", *, dataset=None, beamtime=None, limit=None):
        scope, args = self._scope(dataset, beamtime)
        sql = (f"SELECT {_FILE_COLS} FROM files f WHERE f.id>?{scope} AND NOT EXISTS "
               "(SELECT 1 FROM replicas r WHERE r.file_id=f.id AND r.tier=? AND r.state=?)")
        return self._paged(sql, [*args, tier, state], limit)

    def replicas_due_for_check(self, tier, checked_before, limit=1000):
        sql = (f"SELECT {_FILE_COLS} FROM replicas r JOIN files f ON f.id=r.file_id WHERE r.tier=? AND "
               "r.state='verified' AND coalesce(r.checked_at, r.verified_at, 0)<? "
               f"ORDER BY coalesce(r.checked_at, r.verified_at, 0), r.file_id LIMIT {int(limit)}")
        with self._lock, self._edge():
            rows = self._db.execute(sql, (tier, checked_before)).fetchall()
            return self._with_replicas(self._db, rows)

    # -- search (search.py states the contract) ------------------------------------------------
    @staticmethod
    def _index_dataset(db: sqlite3.Connection, pid: str, beamtime: str, path: str, data_type: str,
                       metadata: dict, *, new: bool = False) -> None:
        """(Re)write a dataset's text under its key (rowid and facet group, kept by the triggers);
        a dataset just inserted has none to replace (its delete trigger removed any before)."""
        rowid, group = db.execute("SELECT d.rowid, k.g FROM datasets d JOIN ds_grp k ON k.id = d.rowid "
                                  "WHERE d.pid=?", (pid,)).fetchone()
        if not new:
            db.execute("DELETE FROM ds_fts WHERE rowid BETWEEN ? AND ?", (fts_key(rowid, 0), fts_key(rowid, 2**32 - 1)))
        body = ds_body(words(dataset_text(beamtime, path, data_type, metadata)))
        db.execute("INSERT INTO ds_fts(rowid, body) VALUES (?,?)", (fts_key(rowid, group), body))

    def _index_beamtime(self, db: sqlite3.Connection, beamtime_id: str) -> None:
        row = db.execute("SELECT rowid, * FROM beamtimes WHERE id=?", (beamtime_id,)).fetchone()
        rowid, i, beamline, proposal, pi, team, start, end = row
        p = db.execute("SELECT id, title, pi FROM proposals WHERE id=?", (proposal,)).fetchone()
        text = beamtime_text(Beamtime(i, beamline, proposal, pi, tuple(json.loads(team)), start, end),
                             Proposal(*p) if p else None)
        db.execute("DELETE FROM bt_fts WHERE rowid=?", (rowid,))
        db.execute("INSERT INTO bt_fts(rowid, body) VALUES (?,?)", (rowid, " ".join(words(text))))

    def _rebuild_search(self) -> None:
        """Fill the search tables of a catalogue made before they existed (once, on open)."""
        with self._tx() as db:
            db.execute("DELETE FROM ds_fts")
            db.execute("DELETE FROM file_fts")
            db.execute("DELETE FROM bt_fts")
            for pid, bt, path, dt, meta in db.execute(
                    "SELECT pid, beamtime, path, data_type, metadata FROM datasets").fetchall():
                self._index_dataset(db, pid, bt, path, dt, json.loads(meta), new=True)
            for (bt,) in db.execute("SELECT id FROM beamtimes").fetchall():
                self._index_beamtime(db, bt)
            db.executemany("INSERT INTO file_fts(rowid, body) VALUES (?,?)",
                           ((i, " ".join(file_words(p))) for i, p in db.execute("SELECT id, path FROM files").fetchall()))
            db.execute(f"PRAGMA user_version={_SEARCH_VERSION}")

    @staticmethod
    def _search_where(query: SearchQuery, plan: TextPlan | None = None) -> tuple[list[str], dict]:
        """Conditions on datasets d: free text (word by word, or as a text plan's parts) and time
        range here, the rest (identifiers, facet filters, embargo scope) from sqlite_facets.filters,
        the same SQL the counter tables use."""
        where: list[str] = [plan.page_condition()] if plan is not None else []
        args: dict = {"now": query.now, "fts_lo": 0, **(plan.args if plan is not None else {})}
        for i, w in enumerate(query_words(query.q) if plan is None else ()):
            args[f"w{i}"] = fts_word(w)
            sides = " ".join(f"OR {side.format(w=f'w{i}')}" for side in _WORD_SIDES)
            where.append(f"(d.rowid IN ({fts_ids(f'w{i}')}) {sides} "
                         f"OR d.beamtime IN (SELECT bt.id FROM beamtimes bt WHERE bt.rowid IN "
                         f"(SELECT rowid FROM bt_fts WHERE bt_fts MATCH :w{i})))")
        if query.start is not None or query.end is not None:
            # the beamtimes whose dates overlap, or (for a dataset whose beamtime has no dates) its
            # creation: two index lookups instead of a scan of every dataset
            where.append("(d.beamtime IN (SELECT id FROM beamtimes WHERE start IS NOT NULL AND "
                         "coalesce(end, start) >= :start AND start <= :end) OR (d.created_at BETWEEN :start AND "
                         ":end AND d.beamtime NOT IN (SELECT id FROM beamtimes WHERE start IS NOT NULL)))")
            args["start"] = query.start if query.start is not None else -1e18
            args["end"] = query.end if query.end is not None else 1e18
        grouped, grouped_args = filters(query, ROWS)
        return where + grouped, {**args, **grouped_args}

    def search_datasets(self, query: SearchQuery) -> SearchResult:
        query = check_query(query)
        base = "FROM datasets d"
        by_title = query.sort == "title"
        limit = max(1, int(query.limit))
        with self._lock, self._edge():
            plan = self._text_plan(query)
            where, args = self._search_where(query, plan)
            cond = (" WHERE " + " AND ".join(where)) if where else ""
            total, facets, beamtimes, top = self._counted(query, lambda: self._grouped_facets(query, plan) or
                                                          self._facet_groups(base, cond, where, args))
            page_where = list(where)
            if query.after is not None:
                # the first term gives the walk of the order's index its start
                page_where.append("d.sort_title >= :ac AND (d.sort_title > :ac OR d.pid > :ap)" if by_title else
                                  "d.created_at <= :ac AND (d.created_at < :ac OR d.pid > :ap)")
                args.update(ac=query.after[0], ap=query.after[1])
            rows = self._page(query, page_where, args, total, beamtimes, top) if total else []
        found = [self._dataset(r) for r in rows[:limit]]
        nxt = sort_key(found[-1], query.sort) if len(rows) > limit else None
        return SearchResult(found, total, facets, nxt)

    def _page(self, query: SearchQuery, where: list[str], args: dict, total: int, beamtimes: tuple[str, ...],
              top: float | None) -> list[tuple]:
        """The rows of a page, one more than the limit (to tell whether a next page exists), of a
        query with `total` matches in `beamtimes`. Free text, newest first: from the newest
        datasets alone when a window of them should hold a page (_recent_page). A broad query: walk
        the order's index and stop at the page, rather than let the planner collect every match by
        its filters' indexes and sort them all (newest first, from the newest dataset of a beamtime
        with matches). A narrow one: the planner, through the beamtimes' index."""
        by_title, limit = query.sort == "title", max(1, int(query.limit))
        order = "d.sort_title, d.pid" if by_title else "d.created_at DESC, d.pid"
        walk = where + ([] if top is None or by_title else ["d.created_at <= :top"])
        index = "datasets_title" if by_title else "datasets_created"

        def walked(conds: list[str], more: dict) -> list[tuple] | None:
            return bounded_rows(self._db, f"SELECT {_DATASET_COLS} FROM datasets d INDEXED BY {index} WHERE "
                                f"{' AND '.join(conds) or '1'} ORDER BY {order} LIMIT {limit + 1}",
                                {**args, "top": top, **more})
        rows = None
        if query_words(query.q) and not by_title:
            start = [t for t in (top, query.after[0] if query.after else None) if t is not None]
            rows = self._recent_page(walked, walk, min(start) if start else None, total, limit)
        if rows is None and broad(self._db, total):
            rows = walked(walk, {})
        elif rows is None and len(beamtimes) <= _FEW_BEAMTIMES:
            where, args = [*where, "d.beamtime IN (SELECT value FROM json_each(:page_bts))"], \
                {**args, "page_bts": json.dumps(beamtimes)}
        if rows is None:
            rows = self._db.execute(f"SELECT {_DATASET_COLS} FROM datasets d WHERE {' AND '.join(where) or '1'} "
                                    f"ORDER BY {order} LIMIT {limit + 1}", args).fetchall()
        return rows

    def _recent_page(self, walked, walk: list[str], start: float | None, total: int, limit: int) -> list[tuple] | None:
        """The page of a free-text query, newest first, from the newest datasets alone (a few times
        the walk a page of `total` matches needs): their words are a short tail of each word's FTS
        rowids (sqlite_facets.recent_window), where the plain walk, or the planner, read all of
        them. None when the window would be too long or holds no full page."""
        size = 4 * (limit + 1) * (self._db.execute("SELECT max(rowid) FROM datasets").fetchone()[0] or 0) // total + 1000
        if size > _RECENT_MAX:
            return None
        window = recent_window(self._db, start, size)
        if window is None:
            return None
        rows = walked([*walk, "d.created_at > :c_lo"], {"c_lo": window[0], "fts_lo": window[1] << 32})
        return rows if rows is not None and len(rows) > limit else None

    def _counted(self, query: SearchQuery, groups_of) -> tuple[int, dict, tuple[str, ...], float | None]:
        """Total, facets, the beamtimes with matches and the newest created_at among their datasets
        (sqlite_facets.newest_of) of a query, remembered until the database changes (any
        connection's commit: data_version; this one's: total_changes) or the next embargo end in
        the catalogue passes (sqlite_facets.next_embargo_end; a clock that goes back forgets them
        too). The page is looked for among the beamtimes with matches, so counts one embargo end
        late would hide a dataset just released (counts were kept for the minute: a search
        found nothing for up to 60 s after the end). The next pages of a query and the portal's
        front page cost only their page."""
        stamp = (self._db.execute("PRAGMA data_version").fetchone()[0], self._db.total_changes)
        key = replace(query, after=None, limit=0, now=0.0, sort="newest")
        hit = self._counts.get(key)
        if hit is not None and hit[0] == stamp and hit[1] <= query.now < hit[2]:
            return hit[3:]
        until = next_embargo_end(self._db, query.now)
        beamtimes, groups = groups_of()
        having = tuple(sorted({g[0] for g in groups}))
        found = (sum(g[4] for g in groups), fold_facets(groups, beamtimes), having, newest_of(self._db, having))
        if len(self._counts) >= COUNT_CACHE_SIZE:
            self._counts.pop(next(iter(self._counts)))
        self._counts[key] = (stamp, query.now, until, *found)
        return found

    def _facet_groups(self, base: str, cond: str, where: list[str], args: dict) -> tuple[dict, list[tuple]]:
        """(beamtimes, facet groups) of every match. Grouped in the covering index's order (beamtime,
        data_type: no sort); the creation year is only split out, by a second query, for a group
        whose beamtime has no start time and whose datasets were created in different years."""
        rows = self._db.execute(
            f"SELECT d.beamtime, d.data_type, count(*), sum({_UNDER_EMBARGO}), min(d.created_at), max(d.created_at) "
            f"{base}{cond} GROUP BY d.beamtime, d.data_type", args).fetchall()
        beamtimes = self._beamtimes({r[0] for r in rows})
        groups: list[tuple] = []
        for bt, dt, n, embargoed, first, last in rows:
            known = beamtimes.get(bt)
            if (known is None or known.start is None) and year_of(first) != year_of(last):
                extra = " AND ".join([*where, "d.beamtime = :g_bt", "d.data_type = :g_dt"])
                groups += [(bt, dt, y, bool(e), k) for y, e, k in self._db.execute(
                    f"SELECT strftime('%Y', d.created_at, 'unixepoch'), {_UNDER_EMBARGO}, count(*) {base} "
                    f"WHERE {extra} GROUP BY 1, 2", {**args, "g_bt": bt, "g_dt": dt})]
                continue
            year = year_of(first)
            groups += [(bt, dt, year, True, embargoed), (bt, dt, year, False, n - embargoed)]
        return beamtimes, [g for g in groups if g[4]]

    def _beamtimes(self, ids: set[str]) -> dict[str, BeamtimeFacets]:
        """What the facets read of these beamtimes (search.fold_facets); one pass over the table when
        they are many."""
        if len(ids) > 500:
            return {i: BeamtimeFacets(line, start) for i, line, start in
                    self._db.execute("SELECT id, beamline, start FROM beamtimes") if i in ids}
        return {i: BeamtimeFacets(line, start) for i, line, start in self._db.execute(
            f"SELECT id, beamline, start FROM beamtimes WHERE id IN ({','.join('?' * len(ids))})", sorted(ids))}

    def beamtimes_of_person(self, name: str) -> list[str]:
        name = name.strip()
        if not name:
            return []
        rows = self._query(
            "SELECT b.id FROM beamtimes b LEFT JOIN proposals p ON p.id = b.proposal WHERE b.pi = :n COLLATE NOCASE "
            "OR p.pi = :n COLLATE NOCASE OR EXISTS (SELECT 1 FROM json_each(b.team) t "
            "WHERE trim(t.value) = :n COLLATE NOCASE) ORDER BY b.id", {"n": name})
        return [r[0] for r in rows]

    def ping(self) -> None:
        self._query("SELECT 1")

    def close(self) -> None:
        with self._lock:
            self._db.close()
