"""The SQLite catalogue's facet counter tables (ds_groups and ds_grp, kept by triggers): a search
without a time range (free text, identifiers, facet filters, embargo scope) takes its total and
facets from them, and they equal the counts of a full pass over the datasets after every kind of
write, on a new catalogue and on one opened from before the tables existed (or from the version
whose ds_groups had no ids)."""

from __future__ import annotations

import sqlite3

import pytest

from domas.catalogue.base import Beamtime, Dataset, FileRecord, Proposal
from domas.catalogue.search import SearchQuery, fold_facets
from domas.catalogue.sqlite import SQLiteCatalogue
from domas.catalogue import sqlite as sqlite_mod, sqlite_facets
from domas.catalogue.sqlite_facets import GROUPS, ROWS, filters

Y2024, Y2025 = 1_704_067_200.0, 1_735_689_600.0
NOW = Y2025 + 30 * 86400


def full_pass(cat: SQLiteCatalogue, query: SearchQuery) -> tuple[int, dict]:
    where, args = cat._search_where(query)
    cond = (" WHERE " + " AND ".join(where)) if where else ""
    beamtimes, groups = cat._facet_groups("FROM datasets d", cond, where, args)
    return sum(g[4] for g in groups), fold_facets(groups, beamtimes)


def from_table(cat: SQLiteCatalogue, query: SearchQuery) -> tuple[int, dict]:
    beamtimes, groups = cat._grouped_facets(query)
    return sum(g[4] for g in groups), fold_facets(groups, beamtimes)


QUERIES = [SearchQuery(now=NOW), SearchQuery(now=NOW, see_embargoed=True),
           SearchQuery(now=NOW, member_of=("BT2",)), SearchQuery(now=NOW + 400 * 86400),
           SearchQuery(now=NOW, see_embargoed=True, beamline="B7"), SearchQuery(now=NOW, beamline="unknown"),
           SearchQuery(now=NOW, see_embargoed=True, year="2024", access="embargoed"),
           SearchQuery(now=NOW, data_type="processed", access="open"),
           # free text: words of the datasets, of their beamtimes and proposals, of their files, mixed
           SearchQuery(q="raw", now=NOW), SearchQuery(q="ada", now=NOW, see_embargoed=True),
           SearchQuery(q="lysozyme", now=NOW), SearchQuery(q="lysozyme", now=NOW, see_embargoed=True, year="2025"),
           SearchQuery(q="ada raw", now=NOW, member_of=("BT1",)), SearchQuery(q="ad proc", now=NOW),
           SearchQuery(q="lysozyme raw", now=NOW, see_embargoed=True), SearchQuery(q="lyso cy", now=NOW),
           SearchQuery(q="bt9 1", now=NOW, see_embargoed=True), SearchQuery(q="b7 ada", now=NOW),
           SearchQuery(q="nothing", now=NOW), SearchQuery(q="3", now=NOW, beamline="B1"),
           # identifiers, alone and with words and facets
           SearchQuery(beamtime=" bt1 ", now=NOW), SearchQuery(pi="ADA", now=NOW, see_embargoed=True),
           SearchQuery(proposal="p-2", now=NOW, access="embargoed", see_embargoed=True),
           SearchQuery(pi="cy", q="raw", now=NOW, member_of=("BT2",)), SearchQuery(beamtime="bt9", q="d", now=NOW)]


def agree(cat: SQLiteCatalogue) -> None:
    keys = {r[0] for r in cat._db.execute("SELECT rowid FROM ds_fts")}       # each text keyed by its group
    assert keys == {r[0] for r in cat._db.execute("SELECT (d.rowid << 32) | k.g FROM datasets d "
                                                  "JOIN ds_grp k ON k.id = d.rowid")}
    for q in QUERIES:
        assert from_table(cat, q) == full_pass(cat, q), q
        found = cat.search_datasets(q)
        assert found.total == full_pass(cat, q)[0]
        where, args = cat._search_where(q)                    # the page: the same datasets, word by word
        expected = [r[0] for r in cat._db.execute(f"SELECT d.pid FROM datasets d WHERE {' AND '.join(where) or '1'} "
                                                  "ORDER BY d.created_at DESC, d.pid", args)]
        assert [d.pid for d in found.datasets] == expected, q


def world(cat: SQLiteCatalogue) -> list[str]:
    cat.upsert_proposal(Proposal("P-2", "Lysozyme study", "Cy"))
    cat.upsert_beamtime(Beamtime("BT1", "B1", "P-1", "Ada", start=Y2024 + 86400))
    cat.upsert_beamtime(Beamtime("BT2", "B7", "P-2", "Bob"))                       # no dates: created year
    pids = []
    for i in range(12):
        pids.append(cat.upsert_dataset(Dataset(
            "BT1" if i % 3 == 0 else "BT2" if i % 3 == 1 else "BT9", f"/d/{i}", "processed" if i % 4 == 0 else "raw",
            embargo_end=NOW + 86400 * (i + 1) if i % 5 == 0 else None, state="embargoed" if i == 7 else "open",
            created_at=(Y2024 if i < 6 else Y2025) + i * 3600)).pid)
    cat.upsert_files([FileRecord(pids[i], f"lysozyme_{i:03d}.h5", 10) for i in (0, 3, 8)])
    return pids


def test_counts_from_the_table_equal_a_full_pass_after_every_kind_of_write(tmp_path):
    cat = SQLiteCatalogue(tmp_path / "cat.sqlite")
    pids = world(cat)
    agree(cat)
    cat.set_dataset_state(pids[1], "embargoed", NOW + 50)                         # embargo
    cat.set_dataset_state(pids[0], "released", NOW - 1)                           # release
    cat.set_dataset_state(pids[7], "archived")                                    # state only
    agree(cat)
    cat.upsert_dataset(Dataset("BT1", "/d/4", "processed"))                       # beamtime move (BT2 -> BT1)
    cat.upsert_dataset(Dataset("BT2", "/d/5", "processed"))                       # data type change
    cat.upsert_datasets([Dataset("BT2", f"/bulk/{i}", created_at=Y2025 + i) for i in range(30)])
    agree(cat)
    rows = cat._db.execute("SELECT count(*), sum(n) FROM ds_groups").fetchone()
    assert rows[1] == 42 and rows[0] < 42 and cat._db.execute("SELECT min(n) FROM ds_groups").fetchone()[0] > 0
    with cat._tx() as db:                                                          # any path, even raw SQL
        db.execute("DELETE FROM datasets WHERE pid=?", (pids[2],))
    agree(cat)
    assert cat._db.execute("SELECT sum(n) FROM ds_groups").fetchone()[0] == 41
    cat.close()


def test_a_catalogue_from_before_the_table_gets_it_filled_on_open(tmp_path):
    cat = SQLiteCatalogue(tmp_path / "cat.sqlite")
    world(cat)
    cat.close()
    with sqlite3.connect(tmp_path / "cat.sqlite") as db:                          # as an older version left it
        for trigger in ("insert", "delete", "update"):
            db.execute(f"DROP TRIGGER ds_groups_{trigger}")
        db.execute("DROP TABLE ds_groups")
    cat = SQLiteCatalogue(tmp_path / "cat.sqlite")
    agree(cat)
    cat.upsert_dataset(Dataset("BT1", "/d/new", created_at=Y2025))
    agree(cat)
    cat.close()


def test_only_a_time_range_needs_a_pass_over_the_datasets(tmp_path):
    cat = SQLiteCatalogue(tmp_path / "cat.sqlite")
    world(cat)
    assert cat._grouped_facets(SearchQuery(start=Y2024, now=NOW)) is None
    assert cat._grouped_facets(SearchQuery(q="ada", end=Y2025, now=NOW)) is None
    for query in (SearchQuery(q="x", now=NOW), SearchQuery(beamtime="BT1", now=NOW), SearchQuery(pi="Ada", now=NOW)):
        assert cat._grouped_facets(query) is not None
    cat.close()


def test_group_filters_are_written_once_for_datasets_and_groups(tmp_path):
    """The identifier, facet and scope conditions of the page (on datasets) and of the counts (on
    groups) come from one function: the same clauses with the columns renamed."""
    query = SearchQuery(now=NOW, beamtime="BT1", proposal="P", pi="Ada", beamline="B1", data_type="raw",
                        year="2024", access="open", member_of=("BT2",))
    rows, groups = filters(query, ROWS)[0], filters(query, GROUPS)[0]
    assert len(rows) == len(groups) == 8 and rows != groups
    where, _ = SQLiteCatalogue._search_where(query)
    assert where == rows


@pytest.mark.parametrize("steps", [4_000_000, 500])
def test_broad_queries_page_by_walking_the_order_and_fall_back_when_it_is_long(tmp_path, monkeypatch, steps):
    """A broad query's page comes from a bounded walk of the order's index; a walk that runs out of
    steps (matches at the far end) falls back to the planner's plan: the pages are the same."""
    monkeypatch.setattr(sqlite_facets, "PAGE_SCAN_STEPS", steps)
    cat = SQLiteCatalogue(tmp_path / "cat.sqlite", synchronous="OFF")
    cat.upsert_beamtime(Beamtime("OLD", "B1", "P", "Ada", start=Y2024))
    cat.upsert_beamtime(Beamtime("NEW", "B2", "P", "Ada", start=Y2025))
    cat.upsert_datasets([Dataset("OLD" if i < 1000 else "NEW", f"/d/{i:05d}", metadata={"title": f"t{3000 - i:05d}"},
                                 created_at=Y2024 + i * 60, embargo_end=NOW + 1 if i % 7 == 0 else None)
                         for i in range(3000)])
    expected_new = [f"/d/{i:05d}" for i in range(2999, 1000, -1) if i % 7][:20]
    expected_old = [f"/d/{i:05d}" for i in range(999, -1, -1) if i % 7][:20]
    for query, expected in ((SearchQuery(now=NOW, limit=20), expected_new),
                            (SearchQuery(now=NOW, limit=20, year="2024"), expected_old),   # at the far end
                            (SearchQuery(now=NOW, limit=20, beamline="B1"), expected_old)):
        found = cat.search_datasets(query)
        assert [d.path for d in found.datasets] == expected and found.next is not None
        second = cat.search_datasets(SearchQuery(**{**query.__dict__, "after": found.next}))
        assert second.datasets[0].path not in expected
    by_title = cat.search_datasets(SearchQuery(now=NOW, limit=5, sort="title", beamline="B1"))
    assert [d.metadata["title"] for d in by_title.datasets] == ["t02001", "t02002", "t02003", "t02004", "t02005"]
    assert cat._db.execute("SELECT 1").fetchone() == (1,)          # the progress handler is gone
    cat.close()


def test_a_walk_gets_its_whole_budget_each_time_its_statement_runs(monkeypatch):
    """SQLite's step count goes on across runs of a cached statement, so a walk that counted on
    the progress handler's own period was cut short from its second run on (and fell back to the
    planner's plan: ~0.5 s at 10^6 datasets); the walk counts its steps itself."""
    monkeypatch.setattr(sqlite_facets, "PAGE_SCAN_STEPS", 120_000)
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (x INTEGER)")
    db.executemany("INSERT INTO t VALUES (?)", ((i,) for i in range(20_000)))
    sql = "SELECT count(*) FROM t WHERE x % 7 = :k"                   # ~83 000 steps a run
    assert [sqlite_facets.bounded_rows(db, sql, {"k": k}) for k in range(4)] == [[(2858,)], [(2857,)], [(2857,)],
                                                                                 [(2857,)]]
    assert sqlite_facets.bounded_rows(db, "SELECT count(*) FROM t a, t b WHERE a.x < 50", {}) is None
    db.close()


def test_a_narrow_page_is_looked_up_through_its_beamtimes_not_a_scan(tmp_path):
    """The page of a query with few matches (an embargoed facet click: none for an anonymous
    caller, a handful for a team member) scanned every dataset (0.3-0.8 s at 10^6); now a query
    without matches reads no dataset, and one with few reads through its beamtimes' index."""
    cat = SQLiteCatalogue(tmp_path / "cat.sqlite", synchronous="OFF")
    for b in range(30):
        cat.upsert_beamtime(Beamtime(f"BT{b}", f"B{b % 3}", "P", "Ada", start=Y2024 + b * 86400))
    cat.upsert_datasets([Dataset(f"BT{i % 30}", f"/d/{i:05d}", created_at=Y2024 + i,
                                 embargo_end=NOW + 1 if i % 97 == 0 else None) for i in range(6000)])
    steps = [0]

    def tick() -> int:
        steps[0] += 1
        return 0

    for query, total in ((SearchQuery(now=NOW, access="embargoed"), 0),
                         (SearchQuery(now=NOW, access="embargoed", member_of=("BT7",)), 3)):
        cat.search_datasets(query)                                      # counts remembered: the page alone
        cat._db.set_progress_handler(tick, 100)
        steps[0] = 0
        found = cat.search_datasets(query)
        cat._db.set_progress_handler(None, 0)
        assert found.total == total == len(found.datasets)
        assert steps[0] * 100 < 6000, (query, steps[0])                 # far less than a step per dataset
    cat.close()


def test_a_remembered_query_runs_only_its_page_and_a_beamtime_is_found_by_index(tmp_path):
    """With its counts remembered, the next page of a query runs its page's SELECT (the walk's
    start, one index seek per beamtime, was recomputed on every page: 3 ms at 2 000 beamtimes); the
    counts of beamtime=X (case ignored) seek ds_groups by index instead of reading every group."""
    cat = SQLiteCatalogue(tmp_path / "cat.sqlite", synchronous="OFF")
    world(cat)
    query = SearchQuery(now=NOW, limit=2)
    first = cat.search_datasets(query)
    ran: list[str] = []
    cat._db.set_trace_callback(ran.append)
    second = cat.search_datasets(SearchQuery(now=NOW, limit=2, after=first.next))
    cat._db.set_trace_callback(None)
    assert second.datasets and not [s for s in ran if "json_each" in s or "ds_groups" in s], ran
    assert len([s for s in ran if s.startswith("SELECT")]) <= 2, ran          # max(rowid) and the page
    where, args = filters(SearchQuery(now=NOW, beamtime="bt1", see_embargoed=True), GROUPS)
    plan = cat._db.execute(f"EXPLAIN QUERY PLAN SELECT sum(n) FROM ds_groups g WHERE {' AND '.join(where)}", args)
    assert "ds_groups_beamtime_nocase" in " ".join(str(r) for r in plan.fetchall())
    cat.close()


def test_a_catalogue_with_the_counter_table_of_the_previous_version_is_converted_on_open(tmp_path):
    """The previous ds_groups (WITHOUT ROWID, no ids, no ds_grp) is replaced and refilled on open."""
    cat = SQLiteCatalogue(tmp_path / "cat.sqlite")
    world(cat)
    cat.close()
    with sqlite3.connect(tmp_path / "cat.sqlite") as db:
        for trigger in ("insert", "delete", "update"):
            db.execute(f"DROP TRIGGER ds_groups_{trigger}")
        db.execute("DROP TABLE ds_groups")
        db.execute("DROP TABLE ds_grp")
        db.execute("CREATE TABLE ds_groups (beamtime TEXT NOT NULL, data_type TEXT NOT NULL, year TEXT NOT NULL, "
                   "emb REAL NOT NULL, st INTEGER NOT NULL, n INTEGER NOT NULL, "
                   "PRIMARY KEY (beamtime, data_type, year, emb, st)) WITHOUT ROWID")
        db.execute("CREATE TRIGGER ds_groups_insert AFTER INSERT ON datasets BEGIN "
                   "INSERT INTO ds_groups VALUES (new.beamtime, new.data_type, '1999', -1.0, 0, 1) "
                   "ON CONFLICT(beamtime, data_type, year, emb, st) DO UPDATE SET n = n + 1; END")
    cat = SQLiteCatalogue(tmp_path / "cat.sqlite")
    assert "id" in {r[1] for r in cat._db.execute("PRAGMA table_info(ds_groups)")}
    agree(cat)
    cat.upsert_datasets([Dataset("BT1", f"/again/{i}", created_at=Y2025 + i) for i in range(3)])
    agree(cat)
    assert cat._db.execute("SELECT count(*) FROM ds_grp").fetchone()[0] == 15
    cat.close()


def test_a_words_counts_come_from_the_fts_rowids_alone(tmp_path):
    """A common word cost a ds_grp lookup per matching dataset (~0.2 us each, half the time of a
    common word at 10^6 datasets); its ds_fts rowids now carry each dataset's group, so the
    per-group counts of a word read the FTS index and nothing per match."""
    cat = SQLiteCatalogue(tmp_path / "cat.sqlite", synchronous="OFF")
    world(cat)
    plan = cat._text_plan(SearchQuery(q="raw", now=NOW))
    read: set[str] = set()

    def tables(action, table, *_):
        if action == sqlite3.SQLITE_READ:
            read.add(table)
        return sqlite3.SQLITE_OK

    cat._db.set_authorizer(tables)
    for sql in plan.counts:
        cat._db.execute(sql, plan.args).fetchall()
    cat._db.set_authorizer(None)
    assert "ds_fts" in read and not read & {"ds_grp", "datasets"}, read
    cat.close()


def test_a_catalogue_with_plain_fts_rowids_is_rekeyed_on_open(tmp_path):
    """Search version 1 keyed ds_fts by the dataset's rowid alone; opening such a catalogue gives
    every row its group key (and drops rows of datasets deleted by raw SQL back then)."""
    cat = SQLiteCatalogue(tmp_path / "cat.sqlite")
    pids = world(cat)
    cat.close()
    with sqlite3.connect(tmp_path / "cat.sqlite") as db:
        rows = db.execute("SELECT rowid >> 32, body FROM ds_fts").fetchall()
        db.execute("DELETE FROM ds_fts")
        db.executemany("INSERT INTO ds_fts (rowid, body) VALUES (?, ?)", rows + [(999, "lysozyme orphan")])
        db.execute("PRAGMA user_version=1")
    cat = SQLiteCatalogue(tmp_path / "cat.sqlite")
    assert cat._db.execute("PRAGMA user_version").fetchone()[0] == 4
    agree(cat)
    cat.set_dataset_state(pids[4], "embargoed", NOW + 60)                          # re-keyed by the trigger
    agree(cat)
    cat.close()


def newest_matches(cat: SQLiteCatalogue, query: SearchQuery) -> list[str]:
    where, args = cat._search_where(query)
    if query.after is not None:
        where.append("(d.created_at < :ac OR (d.created_at = :ac AND d.pid > :ap))")
        args.update(ac=query.after[0], ap=query.after[1])
    return [r[0] for r in cat._db.execute(f"SELECT d.path FROM datasets d WHERE {' AND '.join(where)} "
                                          f"ORDER BY d.created_at DESC, d.pid LIMIT {query.limit}", args)]


@pytest.mark.parametrize("order", ["created", "reversed", "shuffled"])
def test_a_words_page_from_the_newest_datasets_stays_exact(tmp_path, order):
    """The page of a free-text query is looked for among the newest datasets first, reading only
    their tail of the FTS rowids; whatever the order datasets were catalogued in, for broad and
    narrow (rare word) queries, and when the matches are bunched among the oldest (the window
    falls short), the pages are exact."""
    cat = SQLiteCatalogue(tmp_path / "cat.sqlite", synchronous="OFF")
    stamps = list(range(6000))
    if order == "reversed":
        stamps.reverse()
    elif order == "shuffled":
        stamps = stamps[::7] + [t for t in stamps if t % 7]
    cat.upsert_datasets([Dataset("BT1", f"/d/{t:05d}", metadata={"title": ("common" if t % 3 else "other") +
                                                                   (" ancient" if t < 1800 else "") +
                                                                   (" rare" if t % 97 == 0 else "")},
                                 created_at=Y2024 + t // 2, embargo_end=NOW + 1 if t % 11 == 0 else None)
                         for t in stamps])
    for words in ("common", "ancient", "common ancient", "other", "rare", "rare other"):
        query = SearchQuery(q=words, now=NOW, limit=5)
        for _ in range(3):
            found = cat.search_datasets(query)
            assert [d.path for d in found.datasets] == newest_matches(cat, query), (words, query.after)
            query = SearchQuery(q=words, now=NOW, limit=5, after=found.next)
    cat.close()


def test_a_broad_words_page_reads_only_the_newest_rowids(tmp_path, monkeypatch):
    """The page of a word matching 20 000 datasets read every one of its FTS rowids into a
    temporary index before walking the newest datasets (~15 ms at 10^6 datasets); now it reads
    the rowids of the newest few thousand datasets alone: its walk fits in fewer SQLite steps
    than there are matches."""
    monkeypatch.setattr(sqlite_facets, "PAGE_SCAN_STEPS", 20_000)
    walks: list[bool] = []

    def recorded(*args):
        rows = sqlite_facets.bounded_rows(*args)
        walks.append(rows is not None)
        return rows

    monkeypatch.setattr(sqlite_mod, "bounded_rows", recorded)
    cat = SQLiteCatalogue(tmp_path / "cat.sqlite", synchronous="OFF")
    cat.upsert_datasets([Dataset("BT1", f"/d/{i:05d}", metadata={"title": "common"}, created_at=Y2024 + i)
                         for i in range(20_000)])
    found = cat.search_datasets(SearchQuery(q="common", now=NOW, limit=50))
    assert found.total == 20_000 and [d.path for d in found.datasets] == [f"/d/{i:05d}" for i in range(19_999, 19_949, -1)]
    assert walks and walks[0], walks                                   # the first walk finished within its steps
    cat.close()


def test_a_prefix_is_asked_as_the_few_words_of_the_index_it_begins(tmp_path):
    """FTS5 builds a prefix query's whole list of matches before its first row, and a rowid bound
    cannot skip it (two common prefixes: ~40 ms of a two-word search at 10^6 datasets); a search
    word longer than the prefix index's lengths that begins at most MAX_TERMS words of the index is
    asked as those words, else as a prefix; a short one is a prefix query the prefix index answers."""
    cat = SQLiteCatalogue(tmp_path / "cat.sqlite", synchronous="OFF")
    cat.upsert_datasets([Dataset("BT1", f"/d/{i}", metadata={"title": f"lysozyme lysozymal sample{i}"})
                         for i in range(12)])
    db = cat._db
    assert sqlite_facets.ds_match(db, "lysozy") == '("lysozymal" OR "lysozyme")'
    assert sqlite_facets.ds_match(db, "lysozyme") == '("lysozyme")'
    assert sqlite_facets.ds_match(db, "sample") == '"sample"*'         # sample0 ... sample11: more than MAX_TERMS
    assert sqlite_facets.ds_match(db, "zzzzzz") == '"zzzzzz"*'
    assert [sqlite_facets.ds_match(db, w) for w in ("l", "lyso", "lysoz")] == ['"l"*', '"lyso"*', '"lysoz"*']
    found = cat.search_datasets(SearchQuery(q="lysozy sample1", now=NOW))
    assert sorted(d.path for d in found.datasets) == ["/d/1", "/d/10", "/d/11"] and found.total == 3
    assert cat.search_datasets(SearchQuery(q="lyso sa", now=NOW)).total == 12
    cat.close()


def _fts_sql(db) -> str:
    return db.execute("SELECT sql FROM sqlite_master WHERE name = 'ds_fts'").fetchone()[0]


def test_short_prefixes_have_an_index_and_an_older_catalogue_gets_it_on_open(tmp_path):
    """A search word that begins a million words of the index ("scan" beside scan0000001 ... in
    every path) made FTS5 merge a million lists before the first row: 405 ms at 10^6 datasets. ds_fts
    now keeps a prefix index for words of 1 to 5 characters; a catalogue of search version 2 (no
    prefix index) is rebuilt with it on open and answers every query exactly as before."""
    cat = SQLiteCatalogue(tmp_path / "cat.sqlite")
    assert "prefix='1 2 3 4 5'" in _fts_sql(cat._db)
    world(cat)
    cat.upsert_datasets([Dataset("BT2", f"/scans/scan{i:05d}", metadata={"title": f"scan {i}"}, created_at=Y2025 + i)
                         for i in range(200)])
    queries = [SearchQuery(q=q, now=NOW, member_of=m) for q in ("scan", "sc", "s", "scan0", "scan001", "lyso d",
                                                                "scan00199", "bt") for m in ((), ("BT1",))]
    before = [(r.total, r.facets, [d.pid for d in r.datasets]) for r in map(cat.search_datasets, queries)]
    assert [b[0] for b in before] == [full_pass(cat, q)[0] for q in queries] and before[0][0] == 200
    cat.close()
    with sqlite3.connect(tmp_path / "cat.sqlite") as db:              # as search version 2 left it
        rows = db.execute(f"SELECT rowid, ltrim(body, '{sqlite_facets.EVERY} ') FROM ds_fts").fetchall()
        db.execute("DROP TABLE ds_fts")
        db.execute("CREATE VIRTUAL TABLE ds_fts USING fts5(body, tokenize='unicode61')")
        db.executemany("INSERT INTO ds_fts (rowid, body) VALUES (?, ?)", rows)
        db.execute("PRAGMA user_version=2")
    cat = SQLiteCatalogue(tmp_path / "cat.sqlite")
    assert "prefix='1 2 3 4 5'" in _fts_sql(cat._db) and cat._db.execute("PRAGMA user_version").fetchone()[0] == 4
    assert [(r.total, r.facets, [d.pid for d in r.datasets]) for r in map(cat.search_datasets, queries)] == before
    cat.close()


def test_opening_a_current_catalogue_changes_no_schema(tmp_path):
    """The triggers are replaced only when another version left them: reopening a catalogue of
    this version writes no schema (other connections keep their prepared statements)."""
    cat = SQLiteCatalogue(tmp_path / "cat.sqlite")
    world(cat)
    cat.close()
    with sqlite3.connect(tmp_path / "cat.sqlite") as db:
        before = db.execute("PRAGMA schema_version").fetchone()[0]
    SQLiteCatalogue(tmp_path / "cat.sqlite").close()
    with sqlite3.connect(tmp_path / "cat.sqlite") as db:
        assert db.execute("PRAGMA schema_version").fetchone()[0] == before


def test_a_word_in_most_datasets_is_counted_by_its_misses(tmp_path):
    """Counting the groups of 974 000 matches ("scan", in every title at 10^6 datasets) was 150 ms
    of GROUP BY sorting; a text part that matches most datasets now counts the few it misses
    (EVERY NOT ...) and takes them from the group sizes. The counts equal a pass over the datasets,
    for words in most, half and few datasets, after writes that move datasets between groups; no
    search word finds EVERY."""
    cat = SQLiteCatalogue(tmp_path / "cat.sqlite")
    pids = world(cat)
    cat.upsert_datasets([Dataset("BT2" if i % 3 else "BT1", f"/scans/scan{i:05d}", "raw" if i % 2 else "processed",
                                 metadata={"title": f"scan {i}" if i % 10 else f"survey {i}"}, created_at=Y2025 + i,
                                 embargo_end=NOW + i if i % 7 == 0 else None) for i in range(100)])
    assert all(body.startswith(sqlite_facets.EVERY + " ") for (body,) in cat._db.execute("SELECT body FROM ds_fts"))

    def check() -> None:
        for q in ("scan", "sc", "s", "scan0001", "survey", "raw", "scan raw", "lyso"):
            for member in ((), ("BT1",)):
                query = SearchQuery(q=q, now=NOW, member_of=member)
                assert from_table(cat, query) == full_pass(cat, query), query
                assert cat.search_datasets(query).total == full_pass(cat, query)[0]
        plan = cat._text_plan(SearchQuery(q="scan", now=NOW))
        assert any(f'"{sqlite_facets.EVERY}" NOT' in v for v in plan.args.values() if isinstance(v, str)), plan.args
        assert not any(" NOT " in str(v) for v in cat._text_plan(SearchQuery(q="survey", now=NOW)).args.values())

    check()
    cat.set_dataset_state(pids[1], "embargoed", NOW + 50)
    cat.upsert_datasets([Dataset("BT1", f"/scans/scan{i:05d}", "processed", created_at=Y2024 + i) for i in range(0, 40, 3)])
    check()
    assert cat.search_datasets(SearchQuery(q=sqlite_facets.EVERY, now=NOW)).total == full_pass(
        cat, SearchQuery(now=NOW))[0]                              # no word: every dataset, as q="" does
    cat.close()


def test_a_dataset_whose_embargo_ends_is_found_at_once(tmp_path):
    """Counts were remembered for the minute, and the page is looked for among the beamtimes with
    matches: ten seconds after its embargo ended, a search (same minute) still found nothing, though
    the dataset's own URL answered. Counts are now remembered until the next embargo end."""
    cat = SQLiteCatalogue(tmp_path / "cat.sqlite")
    world(cat)
    start = 60 * 29_000_000 + 5.0                                    # 5 s into a minute
    soon = cat.upsert_dataset(Dataset("BT5", "/d/soon", metadata={"title": "soon open"}, embargo_end=start + 10,
                                      created_at=Y2025)).pid
    assert cat.search_datasets(SearchQuery(q="soon", now=start)).total == 0
    before = cat.search_datasets(SearchQuery(now=start)).total
    for query in (SearchQuery(q="soon", now=start + 20), SearchQuery(q="soon open", now=start + 20)):
        found = cat.search_datasets(query)
        assert found.total == 1 and [d.pid for d in found.datasets] == [soon], query
    assert cat.search_datasets(SearchQuery(now=start + 20)).total == before + 1
    assert cat.search_datasets(SearchQuery(q="soon", now=start)).total == 0        # a clock set back
    cat.close()
