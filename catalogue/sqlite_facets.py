"""The SQLite catalogue's fast paths for broad searches: a facet counter table kept by triggers,
and a bounded walk of an order's index for the page.

Invariants:
- ds_groups holds the number of datasets per (beamtime, data_type, year created, embargo end or
  -1, embargoed without an end): triggers on datasets keep it exact after every insert, update
  and delete, whichever code path (or raw SQL) makes it; it is filled once when it is new.
- grouped_rows answers a query with nothing but facet filters and the embargo scope (the front
  page, facet clicks) with the same groups a pass over the matching datasets gives; for any other
  query it returns None and the caller counts the datasets.
- bounded_rows never runs longer than PAGE_SCAN_STEPS SQLite VM steps; it returns None instead.
"""

from __future__ import annotations

import sqlite3

from .search import SearchQuery, norm_id, query_words, year_range

BROAD_SHARE = 50                 # a query matching >= 1/50 of the datasets pages by walking its order's index
PAGE_SCAN_STEPS = 4_000_000      # ... within this many SQLite VM steps (~tens of ms), else the planner's way

_KEY = ("{t}.beamtime, {t}.data_type, strftime('%Y', {t}.created_at, 'unixepoch'), "
        "coalesce({t}.embargo_end, -1.0), ({t}.embargo_end IS NULL AND {t}.state = 'embargoed')")
_MATCH = ("beamtime={t}.beamtime AND data_type={t}.data_type AND year=strftime('%Y', {t}.created_at, "
          "'unixepoch') AND emb=coalesce({t}.embargo_end, -1.0) AND "
          "st=({t}.embargo_end IS NULL AND {t}.state = 'embargoed')")
_UNDER = "(g.emb > :now OR g.st = 1)"


def ensure_facet_table(db: sqlite3.Connection) -> None:
    """Create ds_groups and its triggers (inside the caller's transaction); fill it when new."""
    new = db.execute("SELECT 1 FROM sqlite_master WHERE name='ds_groups'").fetchone() is None
    add = (f"INSERT INTO ds_groups VALUES ({_KEY.format(t='new')}, 1) "
           "ON CONFLICT(beamtime, data_type, year, emb, st) DO UPDATE SET n = n + 1;")
    drop = (f"UPDATE ds_groups SET n = n - 1 WHERE {_MATCH.format(t='old')}; "
            f"DELETE FROM ds_groups WHERE n <= 0 AND {_MATCH.format(t='old')};")
    db.execute("CREATE TABLE IF NOT EXISTS ds_groups (beamtime TEXT NOT NULL, data_type TEXT NOT NULL, "
               "year TEXT NOT NULL, emb REAL NOT NULL, st INTEGER NOT NULL, n INTEGER NOT NULL, "
               "PRIMARY KEY (beamtime, data_type, year, emb, st)) WITHOUT ROWID")
    db.execute(f"CREATE TRIGGER IF NOT EXISTS ds_groups_insert AFTER INSERT ON datasets BEGIN {add} END")
    db.execute(f"CREATE TRIGGER IF NOT EXISTS ds_groups_delete AFTER DELETE ON datasets BEGIN {drop} END")
    db.execute("CREATE TRIGGER IF NOT EXISTS ds_groups_update AFTER UPDATE OF beamtime, data_type, created_at, "
               f"embargo_end, state ON datasets WHEN ({_KEY.format(t='old')}) IS NOT ({_KEY.format(t='new')}) "
               f"BEGIN {drop} {add} END")
    if new:
        db.execute(f"INSERT INTO ds_groups SELECT {_KEY.format(t='d')}, count(*) FROM datasets d GROUP BY 1, 2, 3, 4, 5")


def _group_where(query: SearchQuery) -> tuple[list[str], dict]:
    where, args = [], {"now": query.now}
    if query.beamline is not None:
        if query.beamline.casefold() == "unknown":
            where.append("g.beamtime NOT IN (SELECT id FROM beamtimes WHERE beamline != '')")
        else:
            where.append("g.beamtime IN (SELECT id FROM beamtimes WHERE beamline = :beamline COLLATE NOCASE)")
            args["beamline"] = query.beamline
    if query.data_type is not None:
        where.append("g.data_type = :data_type")
        args["data_type"] = query.data_type
    if query.year is not None:
        args["y0"], args["y1"], args["year"] = *year_range(query.year), query.year
        where.append("(g.beamtime IN (SELECT id FROM beamtimes WHERE start >= :y0 AND start < :y1) OR "
                     "(g.year = :year AND g.beamtime NOT IN (SELECT id FROM beamtimes WHERE start IS NOT NULL)))")
    if query.access is not None:
        where.append(_UNDER if query.access == "embargoed" else f"NOT {_UNDER}")
    if not query.see_embargoed:
        members = ",".join(f":m{i}" for i in range(len(query.member_of)))
        args.update({f"m{i}": m for i, m in enumerate(query.member_of)})
        where.append(f"(NOT {_UNDER}" + (f" OR g.beamtime IN ({members}))" if members else ")"))
    return where, args


def grouped_rows(db: sqlite3.Connection, query: SearchQuery) -> list[tuple] | None:
    """Facet groups (beamtime, data_type, year created, embargoed, count) of a query from
    ds_groups, or None when the query has free text, identifiers or a time range."""
    if (query_words(query.q) or norm_id(query.beamtime) or norm_id(query.proposal) or norm_id(query.pi)
            or query.start is not None or query.end is not None):
        return None
    where, args = _group_where(query)
    cond = (" WHERE " + " AND ".join(where)) if where else ""
    rows = db.execute(f"SELECT g.beamtime, g.data_type, g.year, sum(CASE WHEN {_UNDER} THEN g.n END), sum(g.n) "
                      f"FROM ds_groups g{cond} GROUP BY 1, 2, 3", args).fetchall()
    groups = []
    for bt, dt, year, embargoed, n in rows:
        groups += [(bt, dt, year, True, embargoed or 0), (bt, dt, year, False, n - (embargoed or 0))]
    return [g for g in groups if g[4]]


def broad(db: sqlite3.Connection, total: int) -> bool:
    """Whether `total` matches are at least 1/BROAD_SHARE of the datasets (by the largest rowid)."""
    return total * BROAD_SHARE >= (db.execute("SELECT max(rowid) FROM datasets").fetchone()[0] or 0)


def bounded_rows(db: sqlite3.Connection, sql: str, args: dict) -> list[tuple] | None:
    """The rows of `sql`, or None when it needs more than PAGE_SCAN_STEPS virtual-machine steps
    (matches bunched at the far end of the order: the caller then lets the planner choose)."""
    db.set_progress_handler(lambda: 1, PAGE_SCAN_STEPS)
    try:
        return db.execute(sql, args).fetchall()
    except sqlite3.OperationalError as e:
        if "interrupt" not in str(e):
            raise
        return None
    finally:
        db.set_progress_handler(None, 0)
