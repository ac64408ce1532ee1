"""The SQLite catalogue's fast paths for searches: facet counter tables kept by triggers, the one
definition of the facet and identifier filters, and a bounded walk of an order's index for the page.

Invariants:
- ds_groups holds the number of datasets per group (beamtime, data_type, year created, embargo
  end or -1, embargoed without an end), ds_grp the group of each dataset (by its rowid, shared with
  ds_fts); triggers on datasets keep both exact after every insert, update and delete, whichever
  code path (or raw SQL) makes it; they are filled once when they are new.
- Every filter that is a function of a dataset's group (identifiers beamtime/proposal/pi, facets
  beamline/data_type/year/access, the embargo scope) is written once, in `filters`, for datasets
  (alias d) and for groups (alias g); the two agree by construction.
- text_plan splits the matches of a query's words into disjoint parts by what each beamtime's own
  words (bt_fts) give its datasets: a beamtime with every word is matched whole (counted from
  ds_groups), the datasets of the others need the words their beamtime lacks in their own text
  (ds_fts, or a side: files, scans), counted per group through ds_grp. The page uses the same
  parts as conditions, so page and counts cannot disagree.
- grouped_rows answers any query without a time range with the same groups a pass over the
  matching datasets gives (tests/test_search_counts.py checks it after every kind of write);
  with a time range, or words without a plan, it returns None and the caller counts datasets.
- bounded_rows never runs longer than PAGE_SCAN_STEPS SQLite VM steps (counted by itself: SQLite's
  count goes on across runs of a cached statement); it returns None instead.
- ds_fts has a prefix index for each of PREFIX_LENGTHS (search version 3): a short search word
  is one list however many words of the index it begins (ds_match). Every ds_fts text starts with
  EVERY, a word no query can name (ds_body, search version 4): a text part that matches most
  datasets is counted by its misses (_group_counts).
- A ds_fts row's rowid is (dataset rowid << 32) | its group id (fts_key): a word's matches are
  counted per group from the FTS doclist alone, with no lookup per match, and stay in dataset
  order (a rowid bound on ds_fts is a bound on datasets). The triggers re-key a dataset's ds_fts
  row when its group changes and drop it with the dataset; rekey_fts converts a whole table.
- The rowids of datasets are shared with ds_grp and (shifted) ds_fts, as before this module: a
  VACUUM that renumbered them would need the search tables rebuilt.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

from .search import SearchQuery, norm_id, query_words, words, year_range

BROAD_SHARE = 50                 # a query matching >= 1/50 of the datasets pages by walking its order's index
PAGE_SCAN_STEPS = 4_000_000      # ... within this many SQLite VM steps (~tens of ms), else the planner's way
_TICK = 10_000                   # the walk's steps are counted in ticks of this many

_KEY = ("{t}.beamtime, {t}.data_type, strftime('%Y', {t}.created_at, 'unixepoch'), "
        "coalesce({t}.embargo_end, -1.0), ({t}.embargo_end IS NULL AND {t}.state = 'embargoed')")
_MATCH = ("{g}beamtime={t}.beamtime AND {g}data_type={t}.data_type AND {g}year=strftime('%Y', {t}.created_at, "
          "'unixepoch') AND {g}emb=coalesce({t}.embargo_end, -1.0) AND "
          "{g}st=({t}.embargo_end IS NULL AND {t}.state = 'embargoed')")
MAX_WORD_CLASSES = 8             # more distinct "which words a beamtime lacks" sets: count the datasets instead
TOKEN_BEAMTIMES = 200           # up to this many beamtimes, a part's FTS query names them
PREFIX_LENGTHS = (1, 2, 3, 4, 5)  # ds_fts keeps a prefix index for search words of these lengths (ds_match)
DS_FTS_SCHEMA = ("CREATE VIRTUAL TABLE IF NOT EXISTS ds_fts USING fts5(body, tokenize='unicode61', "
                 f"prefix='{' '.join(map(str, PREFIX_LENGTHS))}')")
DS_VOCAB_SCHEMA = "CREATE VIRTUAL TABLE IF NOT EXISTS temp.ds_vocab USING fts5vocab(main, ds_fts, 'row')"
EVERY = "\ue000"                 # a word every ds_fts row holds and no search word can be (ds_body)
BROAD_MATCH = 0.6                # a text part matching more than this share of ds_fts counts its misses instead
SAMPLE_SHARE = 16                # ... judged on the newest 1/16 of the datasets (_group_counts)
MAX_TERMS = 8                    # a search word that begins at most this many words of ds_fts is asked as those words
FTS_DATASET = "rowid >> 32"      # the dataset rowid of a ds_fts row
FTS_GROUP = "rowid & 4294967295"  # ... and its group id
_FTS_ROWS = "rowid BETWEEN ({t}.rowid << 32) AND ({t}.rowid << 32) + 4294967295"   # every ds_fts row of dataset t
_FTS_KEY = "(({t}.rowid << 32) | (SELECT g FROM ds_grp WHERE id = {t}.rowid))"


@dataclass(frozen=True)
class Columns:
    """How a filter names a dataset's group attributes: on datasets rows or on ds_groups rows."""
    beamtime: str
    data_type: str
    in_year: str                 # created in the year [:y0, :y1) / named :year
    under_embargo: str           # under embargo at :now


ROWS = Columns("d.beamtime", "d.data_type", "(d.created_at >= :y0 AND d.created_at < :y1)",
               "(coalesce(d.embargo_end > :now, 0) OR (d.embargo_end IS NULL AND d.state = 'embargoed'))")
GROUPS = Columns("g.beamtime", "g.data_type", "g.year = :year", "(g.emb > :now OR g.st = 1)")


def ds_body(found_words: list[str]) -> str:
    """A dataset's ds_fts text: its words after EVERY, a private-use character that unicode61
    indexes as a word and search.words never yields (not a letter or digit to Python), so no
    query finds it, and `EVERY NOT (words)` lists the datasets a text query misses (text_plan)."""
    return " ".join([EVERY, *found_words])


def fts_word(word: str) -> str:
    """An FTS5 prefix query for one search word."""
    return '"' + word.replace('"', '""') + '"*'


def filters(query: SearchQuery, c: Columns) -> tuple[list[str], dict]:
    """The conditions of a query that depend only on a dataset's group: identifiers (beamtime,
    proposal, pi: case ignored), facet filters and the embargo scope."""
    where: list[str] = []
    args: dict = {"now": query.now}
    if norm_id(query.beamtime):
        where.append(f"{c.beamtime} = :beamtime COLLATE NOCASE")
        args["beamtime"] = query.beamtime.strip()
    if norm_id(query.proposal):
        where.append(f"{c.beamtime} IN (SELECT id FROM beamtimes WHERE proposal = :proposal COLLATE NOCASE)")
        args["proposal"] = query.proposal.strip()
    if norm_id(query.pi):
        where.append(f"{c.beamtime} IN (SELECT id FROM beamtimes WHERE pi = :pi COLLATE NOCASE UNION "
                     "SELECT bt.id FROM beamtimes bt JOIN proposals pr ON pr.id = bt.proposal "
                     "WHERE pr.pi = :pi COLLATE NOCASE)")
        args["pi"] = query.pi.strip()
    if query.beamline is not None:
        if query.beamline.casefold() == "unknown":
            where.append(f"{c.beamtime} NOT IN (SELECT id FROM beamtimes WHERE beamline != '')")
        else:
            where.append(f"{c.beamtime} IN (SELECT id FROM beamtimes WHERE beamline = :beamline COLLATE NOCASE)")
            args["beamline"] = query.beamline
    if query.data_type is not None:
        where.append(f"{c.data_type} = :data_type")
        args["data_type"] = query.data_type
    if query.year is not None:
        args["y0"], args["y1"], args["year"] = *year_range(query.year), query.year
        where.append(f"({c.beamtime} IN (SELECT id FROM beamtimes WHERE start >= :y0 AND start < :y1) OR "
                     f"({c.in_year} AND {c.beamtime} NOT IN (SELECT id FROM beamtimes WHERE start IS NOT NULL)))")
    if query.access is not None:
        where.append(c.under_embargo if query.access == "embargoed" else f"NOT {c.under_embargo}")
    if not query.see_embargoed:
        members = ",".join(f":m{i}" for i in range(len(query.member_of)))
        args.update({f"m{i}": m for i, m in enumerate(query.member_of)})
        where.append(f"(NOT {c.under_embargo}" + (f" OR {c.beamtime} IN ({members}))" if members else ")"))
    return where, args


def fts_key(rowid: int, group: int) -> int:
    """The ds_fts rowid of a dataset's text: its rowid and its group id in one integer."""
    return (rowid << 32) | group


def ds_match(db: sqlite3.Connection, word: str) -> str:
    """The FTS5 query of one search word over ds_fts, all three matching the same rows:
    - a word of PREFIX_LENGTHS characters: the prefix query, read from ds_fts's prefix index for
      that length: one list, read lazily, seeking to a rowid bound, however many words of the
      index it begins ("scan" begins a million scan0000001... path words at 10^6 datasets: FTS5
      merged a million lists for it, ~280 ms, before its first row);
    - a longer one beginning at most MAX_TERMS words of the index: those words ("lysozy" ->
      "lysozyme"), read lazily (the lookup, temp.ds_vocab, reads at most MAX_TERMS + 1 lists);
    - else the prefix query, which FTS5 answers by merging the lists of every word it begins
      (a word of 6 or more characters begins few at a facility: scan00 begins 10^5 at 10^6)."""
    if len(word) in PREFIX_LENGTHS:
        return fts_word(word)
    terms = [r[0] for r in db.execute("SELECT term FROM temp.ds_vocab WHERE term >= ? AND term < ? LIMIT ?",
                                      (word, word + "\U0010ffff", MAX_TERMS + 1))]
    if not terms or len(terms) > MAX_TERMS:
        return fts_word(word)
    return "(" + " OR ".join('"' + t.replace('"', '""') + '"' for t in terms) + ")"


def fts_ids(param: str) -> str:
    """The rowids of the datasets whose text matches the FTS query :param, from the dataset rowid
    :fts_lo << 32 on (0: all; a page that needs only recent datasets sets it, see recent_window)."""
    return f"SELECT {FTS_DATASET} FROM ds_fts WHERE ds_fts MATCH :{param} AND rowid >= :fts_lo"


def ensure_facet_table(db: sqlite3.Connection) -> bool:
    """Create ds_groups, ds_grp and their triggers (inside the caller's transaction); fill them
    when they are new or were left by an older version (ds_groups without ids, no ds_grp). The
    triggers of another version are replaced by this one's. True when the group ids were (re)made,
    so ds_fts must be re-keyed (rekey_fts)."""
    have = {r[1] for r in db.execute("PRAGMA table_info(ds_groups)")}
    current = "id" in have and db.execute("SELECT 1 FROM sqlite_master WHERE name='ds_grp'").fetchone() is not None
    if not current:
        db.execute("DROP TABLE IF EXISTS ds_groups")
        db.execute("DROP TABLE IF EXISTS ds_grp")
    add = (f"INSERT INTO ds_groups (beamtime, data_type, year, emb, st, n) VALUES ({_KEY.format(t='new')}, 1) "
           "ON CONFLICT(beamtime, data_type, year, emb, st) DO UPDATE SET n = n + 1; "
           "INSERT OR REPLACE INTO ds_grp VALUES (new.rowid, "
           f"(SELECT id FROM ds_groups WHERE {_MATCH.format(t='new', g='')}));")
    drop = (f"UPDATE ds_groups SET n = n - 1 WHERE {_MATCH.format(t='old', g='')}; "
            f"DELETE FROM ds_groups WHERE n <= 0 AND {_MATCH.format(t='old', g='')};")
    # the dataset's text moves to the key of its new group (if the key is another number)
    rekey = (f"INSERT INTO ds_fts (rowid, body) SELECT {_FTS_KEY.format(t='new')}, body FROM ds_fts "
             f"WHERE {_FTS_ROWS.format(t='old')} AND rowid != {_FTS_KEY.format(t='new')}; "
             f"DELETE FROM ds_fts WHERE {_FTS_ROWS.format(t='old')} AND rowid != {_FTS_KEY.format(t='new')};")
    db.execute("CREATE TABLE IF NOT EXISTS ds_groups (id INTEGER PRIMARY KEY, beamtime TEXT NOT NULL, "
               "data_type TEXT NOT NULL, year TEXT NOT NULL, emb REAL NOT NULL, st INTEGER NOT NULL, "
               "n INTEGER NOT NULL, UNIQUE (beamtime, data_type, year, emb, st))")
    db.execute("CREATE TABLE IF NOT EXISTS ds_grp (id INTEGER PRIMARY KEY, g INTEGER NOT NULL)")
    db.execute("CREATE INDEX IF NOT EXISTS ds_groups_beamtime_nocase ON ds_groups(beamtime COLLATE NOCASE)")
    db.execute("CREATE INDEX IF NOT EXISTS ds_groups_emb ON ds_groups(emb)")          # next_embargo_end
    triggers = {
        "ds_groups_insert": f"CREATE TRIGGER ds_groups_insert AFTER INSERT ON datasets BEGIN {add} END",
        "ds_groups_delete": f"CREATE TRIGGER ds_groups_delete AFTER DELETE ON datasets BEGIN {drop} DELETE FROM ds_grp "
                            f"WHERE id = old.rowid; DELETE FROM ds_fts WHERE {_FTS_ROWS.format(t='old')}; END",
        "ds_groups_update": "CREATE TRIGGER ds_groups_update AFTER UPDATE OF beamtime, data_type, created_at, "
                            f"embargo_end, state ON datasets WHEN ({_KEY.format(t='old')}) IS NOT "
                            f"({_KEY.format(t='new')}) BEGIN {drop} {add} {rekey} END"}
    for name, sql in triggers.items():
        if db.execute("SELECT sql FROM sqlite_master WHERE type='trigger' AND name=?", (name,)).fetchone() != (sql,):
            db.execute(f"DROP TRIGGER IF EXISTS {name}")
            db.execute(sql)
    if not current:
        db.execute(f"INSERT INTO ds_groups (beamtime, data_type, year, emb, st, n) SELECT {_KEY.format(t='d')}, "
                   "count(*) FROM datasets d GROUP BY 1, 2, 3, 4, 5")
        db.execute("INSERT INTO ds_grp SELECT d.rowid, g.id FROM datasets d JOIN ds_groups g "
                   f"ON {_MATCH.format(t='d', g='g.')}")
    return not current


def rekey_fts(db: sqlite3.Connection, keyed: bool) -> None:
    """Give every ds_fts row the key of its dataset's current group (fts_key), inside the caller's
    transaction: from plain dataset rowids (a catalogue of search version 1, keyed False) or from
    keys whose group ids were remade (keyed True). Rows of datasets that are gone are dropped. The
    table is made anew with DS_FTS_SCHEMA (a catalogue of search version 2 gets its prefix index),
    each text starting with EVERY (ds_body; search version 4)."""
    dataset = "(f.rowid >> 32)" if keyed else "f.rowid"
    db.execute("DROP TABLE IF EXISTS temp.fts_rekey")
    body = f"CASE WHEN substr(f.body, 1, 1) = '{EVERY}' THEN f.body ELSE '{EVERY} ' || f.body END"   # ds_body
    db.execute(f"CREATE TEMP TABLE fts_rekey AS SELECT (k.id << 32) | k.g AS key, {body} AS body "
               f"FROM ds_fts f JOIN ds_grp k ON k.id = {dataset}")
    db.execute("DROP TABLE ds_fts")              # far faster than deleting each row's words
    db.execute(DS_FTS_SCHEMA)
    db.execute("INSERT INTO ds_fts (rowid, body) SELECT key, body FROM temp.fts_rekey ORDER BY key")
    db.execute("DROP TABLE temp.fts_rekey")


@dataclass(frozen=True)
class TextPlan:
    """The datasets matching the words of a query, split by what their beamtime's own words
    (bt_fts) already give: each dataset falls in exactly one part. A part is SQL counting its
    datasets per group (gid, n) and the same set as a condition on datasets d for the page."""
    counts: tuple[str, ...]
    pages: tuple[str, ...]
    args: dict

    def page_condition(self) -> str:
        return "(" + " OR ".join(self.pages) + ")" if self.pages else "0"


def text_plan(db: sqlite3.Connection, found_words: list[str], sides: tuple[str, ...]) -> TextPlan | None:
    """Split the matches of `found_words` (at least one) by beamtime: a dataset matches when each
    word is in its own text (ds_fts, or a side: files, scans... as conditions on d with the word's
    FTS query as :{w}) or in its beamtime's. None when the beamtimes split too many ways. Needs
    temp.ds_vocab (DS_VOCAB_SCHEMA) on the connection."""
    every = frozenset(range(len(found_words)))
    args: dict = {"fts_lo": 0}
    by_word: list[set[str]] = []
    side: set[int] = set()
    exact = [ds_match(db, w) for w in found_words]
    for i, w in enumerate(found_words):
        args[f"tw{i}"], args[f"td{i}"] = fts_word(w), exact[i]
        by_word.append({r[0] for r in db.execute("SELECT id FROM beamtimes WHERE rowid IN "
                                                 "(SELECT rowid FROM bt_fts WHERE bt_fts MATCH ?)", (fts_word(w),))})
        if any(db.execute(f"SELECT EXISTS (SELECT 1 FROM datasets d WHERE {s.format(w='w')})",
                          {"w": fts_word(w)}).fetchone()[0] for s in sides):
            side.add(i)
    lacking: dict[frozenset, list[str]] = {}          # words a beamtime's own text lacks -> its beamtimes
    for bt in set().union(*by_word):
        lacking.setdefault(frozenset(i for i in every if bt not in by_word[i]), []).append(bt)
    if len(lacking) > MAX_WORD_CLASSES:
        return None
    args["tbt_any"] = json.dumps(sorted(set().union(*by_word)))
    counts, pages = [], []
    for n, (rest, beamtimes) in enumerate([(every, None), *lacking.items()]):
        if beamtimes is None:
            in_scope, d_scope = "g.beamtime NOT IN (SELECT value FROM json_each(:tbt_any))", \
                "d.beamtime NOT IN (SELECT value FROM json_each(:tbt_any))"
        else:
            args[f"tbt{n}"] = json.dumps(sorted(beamtimes))
            in_scope, d_scope = f"g.beamtime IN (SELECT value FROM json_each(:tbt{n}))", \
                f"d.beamtime IN (SELECT value FROM json_each(:tbt{n}))"
        if not rest:                                  # the beamtime has every word: all its datasets
            counts.append(f"SELECT g.id AS gid, g.n AS n FROM ds_groups g WHERE {in_scope}")
            pages.append(d_scope)
            continue
        plain = sorted(rest - side)
        expr = " AND ".join(exact[i] for i in plain)
        ids = [fts_ids(f"te{n}")] if plain else []
        ids += [f"{fts_ids(f'td{i}')} UNION SELECT d.rowid FROM datasets d WHERE "
                + " OR ".join(s.format(w=f"tw{i}") for s in sides) for i in sorted(rest & side)]
        pages.append(f"({d_scope} AND " + " AND ".join(f"d.rowid IN ({sql})" for sql in ids) + ")")
        if not rest & side:                           # straight from the dataset index, per group
            tokens = [" ".join(words(bt)) for bt in beamtimes or ()]
            few = beamtimes is not None and len(beamtimes) <= TOKEN_BEAMTIMES and all(tokens)
            if few:
                # a few beamtimes: their ids are words of their datasets' text, so FTS narrows to them
                # (a dataset of another beamtime whose text names one is dropped by in_scope)
                expr = f"({expr}) AND (" + " OR ".join(f'"{t}"' for t in tokens) + ")"
            args[f"te{n}"] = expr
            counts.append(_group_counts(db, n, expr, in_scope, args, few))
            continue
        if plain:
            args[f"te{n}"] = expr
        within = " AND ".join(f"k.id IN ({sql})" for sql in ids)
        if beamtimes is None:                         # every beamtime without these words, some by a side
            counts.append(f"SELECT x.gid, x.n FROM (SELECT k.g AS gid, count(*) AS n FROM ds_grp k WHERE {within} "
                          f"GROUP BY k.g) x JOIN ds_groups g ON g.id = x.gid WHERE {in_scope}")
        else:
            # a few beamtimes: walk their datasets in the beamtime index (rowids only), test each against
            # the words' rowid lists (the unary + keeps the planner from driving by those lists instead)
            within = " AND ".join(f"+d.rowid IN ({sql})" for sql in ids)
            counts.append(f"SELECT k.g AS gid, count(*) AS n FROM datasets d INDEXED BY datasets_beamtime "
                          f"JOIN ds_grp k ON k.id = d.rowid WHERE {d_scope} AND {within} GROUP BY k.g")
    return TextPlan(tuple(counts), tuple(pages), args)


def _group_counts(db: sqlite3.Connection, n: int, expr: str, in_scope: str, args: dict, few: bool) -> str:
    """SQL counting the datasets whose text matches `expr` (:te{n}) per group of `in_scope`. Each
    match is a row in GROUP BY's sorter (~0.12 us; FTS5 lists a match for ~0.025 us), so a part that
    matches most datasets ("scan", in every title: 974 000 of 10^6, 150 ms) counts its misses
    instead, `EVERY NOT (expr)`, and takes them from the group sizes: exact, since every dataset has
    one ds_fts row, under its group's key, holding EVERY (ds_body, fts_key). Whether it matches
    most is judged on the newest 1/SAMPLE_SHARE of the datasets (FTS5 seeks to a rowid bound: 1.5 ms
    for "scan"); the judgement decides the cost, never the counts. A part narrowed to a `few`
    beamtimes' datasets is counted directly."""
    top = db.execute("SELECT max(rowid) FROM datasets").fetchone()[0] or 0
    low = top - top // SAMPLE_SHARE
    sampled = 0 if few or top <= low else db.execute(
        "SELECT count(*) FROM ds_fts WHERE ds_fts MATCH ? AND rowid >= ?", (expr, low << 32)).fetchone()[0]
    if sampled <= BROAD_MATCH * (top - low):
        return (f"SELECT x.gid, x.n FROM (SELECT {FTS_GROUP} AS gid, count(*) AS n FROM ds_fts "
                f"WHERE ds_fts MATCH :te{n} GROUP BY 1) x JOIN ds_groups g ON g.id = x.gid WHERE {in_scope}")
    args[f"tm{n}"] = f'"{EVERY}" NOT ({expr})'
    return (f"SELECT g.id AS gid, g.n - coalesce(y.n, 0) AS n FROM ds_groups g LEFT JOIN (SELECT {FTS_GROUP} "
            f"AS gid, count(*) AS n FROM ds_fts WHERE ds_fts MATCH :tm{n} GROUP BY 1) y ON y.gid = g.id "
            f"WHERE {in_scope} AND g.n > coalesce(y.n, 0)")


def grouped_rows(db: sqlite3.Connection, query: SearchQuery, plan: TextPlan | None) -> list[tuple] | None:
    """Facet groups (beamtime, data_type, year created, embargoed, count) of a query, or None when
    it has a time range, or words without a plan (text_plan), and the caller must count the datasets."""
    if query.start is not None or query.end is not None or (plan is None and query_words(query.q)):
        return None
    where, args = filters(query, GROUPS)
    if plan is not None:
        source, n = f"({' UNION ALL '.join(plan.counts)}) x JOIN ds_groups g ON g.id = x.gid", "x.n"
        args.update(plan.args)
    else:
        source, n = "ds_groups g", "g.n"
    cond = (" WHERE " + " AND ".join(where)) if where else ""
    rows = db.execute(f"SELECT g.beamtime, g.data_type, g.year, sum(CASE WHEN {GROUPS.under_embargo} THEN {n} END), "
                      f"sum({n}) FROM {source}{cond} GROUP BY 1, 2, 3", args).fetchall()
    groups = []
    for bt, dt, year, embargoed, total in rows:
        groups += [(bt, dt, year, True, embargoed or 0), (bt, dt, year, False, total - (embargoed or 0))]
    return [g for g in groups if g[4]]


def next_embargo_end(db: sqlite3.Connection, now: float) -> float:
    """The first embargo end after `now` among the datasets (their groups), or infinity: until
    then no dataset leaves its embargo, so no count of any query changes with the clock."""
    found = db.execute("SELECT min(emb) FROM ds_groups WHERE emb > ?", (now,)).fetchone()[0]
    return float("inf") if found is None else found


def broad(db: sqlite3.Connection, total: int) -> bool:
    """Whether `total` matches are at least 1/BROAD_SHARE of the datasets (by the largest rowid)."""
    return total * BROAD_SHARE >= (db.execute("SELECT max(rowid) FROM datasets").fetchone()[0] or 0)


def newest_of(db: sqlite3.Connection, beamtimes: tuple[str, ...]) -> float | None:
    """The newest created_at among the datasets of these beamtimes (one index seek each)."""
    return db.execute("SELECT max((SELECT max(created_at) FROM datasets WHERE beamtime = j.value)) "
                      "FROM json_each(?) j", (json.dumps(beamtimes),)).fetchone()[0]


def recent_window(db: sqlite3.Connection, start: float | None, size: int) -> tuple[float, int] | None:
    """(c, r) for the `size` newest datasets created at or before `start`: every dataset of them
    created after c has a rowid >= r. A page of the newest matches that finds enough of them
    after c is exact while the FTS lookups read only rowids >= r (a short tail when datasets are
    catalogued roughly in creation order). None when there are no more than `size` of them."""
    row = db.execute("SELECT count(*), min(created_at), min(rowid) FROM (SELECT created_at, rowid FROM datasets "
                     "INDEXED BY datasets_created WHERE created_at <= :start ORDER BY created_at DESC LIMIT :size)",
                     {"start": 1e300 if start is None else start, "size": size}).fetchone()
    return (row[1], row[2]) if row[0] == size else None


def bounded_rows(db: sqlite3.Connection, sql: str, args: dict) -> list[tuple] | None:
    """The rows of `sql`, or None when it needs more than PAGE_SCAN_STEPS virtual-machine steps
    (matches bunched at the far end of the order: the caller then lets the planner choose). The
    steps are counted here: SQLite's own count goes on across runs of a cached statement."""
    calls = [0]

    def tick() -> int:
        calls[0] += 1
        return calls[0] > PAGE_SCAN_STEPS // _TICK

    db.set_progress_handler(tick, _TICK)
    try:
        return db.execute(sql, args).fetchall()
    except sqlite3.OperationalError as e:
        if "interrupt" not in str(e):
            raise
        return None
    finally:
        db.set_progress_handler(None, 0)
