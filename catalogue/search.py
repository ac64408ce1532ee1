"""Dataset search shared by every catalogue backend: the query, the answer, and the pure pieces.

Contract (tests/test_catalogue_contract.py runs it on SQLite and MongoDB):
- Free text `q` is split into words (letters and digits, lowercased, accents removed); a dataset
  matches when EVERY word is a prefix of some word of its title/metadata text, path, beamtime, file
  names (their words that are not plain numbers), or of its beamtime's beamline, PI and team and its proposal's id, title and PI.
- Identifiers (beamtime, proposal, pi) compare case-insensitively and ignore surrounding spaces;
  `pi` names the beamtime's or the proposal's PI.
- The experiment time of a dataset is its beamtime's [start, end] when known, else its created_at;
  `start`/`end` keep the datasets whose experiment time overlaps [start, end].
- Embargo: unless `scope.see_embargoed`, a dataset under embargo (see domas.dataservice.access) is
  returned, counted and faceted only when its beamtime is in `scope.member_of`.
- Facet filters narrow the matches to one value of a facet, as the facets name them: `beamline`
  (case ignored; "unknown": no beamtime record or no beamline), `data_type`, `year` (the
  experiment's: its beamtime's start year, else the year it was created), `access` (open/embargoed).
- Order: `sort` "newest" (default): newest created_at first, then PID; "title": by the shown title
  (display_title, case ignored), then PID. `after` (from `next`) continues after that key.
- Facets count every match (not only the page): beamline, data_type, year, access (open/embargoed).
No I/O here.
"""

from __future__ import annotations

import base64
import calendar
import json
import re
import time
import unicodedata
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, NamedTuple

from domas.errors import UsageError

_WORD = re.compile(r"[^\W_]+")
MAX_WORDS = 16


@dataclass(frozen=True)
class SearchQuery:
    q: str = ""
    beamtime: str | None = None
    proposal: str | None = None
    pi: str | None = None
    start: float | None = None              # experiment time range, POSIX seconds
    end: float | None = None
    now: float = 0.0                        # decides who is under embargo
    see_embargoed: bool = False
    member_of: tuple[str, ...] = ()          # beamtimes whose embargoed datasets the caller may see
    after: tuple[float | str, str] | None = None   # (sort key, pid) of the last dataset already shown
    limit: int = 100
    beamline: str | None = None             # facet filters (see the contract above)
    data_type: str | None = None
    year: str | None = None
    access: str | None = None
    sort: str = "newest"


@dataclass(frozen=True)
class SearchResult:
    datasets: list = field(default_factory=list)      # list[Dataset], at most limit
    total: int = 0
    facets: dict[str, dict[str, int]] = field(default_factory=dict)
    next: tuple[float | str, str] | None = None        # key to pass as `after` for the next page


FILTERS = ("beamline", "data_type", "year", "access")
SORTS = ("newest", "title")


def check_query(query: SearchQuery) -> SearchQuery:
    """The query with its facet filters and sort checked (UsageError naming the parameter) and
    blank filters dropped; `after` must be a key of the chosen order."""
    if query.sort not in SORTS:
        raise UsageError(f"sort: use one of {', '.join(SORTS)}")
    clean = {name: (getattr(query, name) or "").strip() or None for name in FILTERS}
    if clean["year"] is not None and not (re.fullmatch(r"[0-9]{4}", clean["year"]) and clean["year"] != "0000"):
        raise UsageError("year: give a year of four digits, e.g. 2025")
    if clean["access"] is not None:
        clean["access"] = clean["access"].casefold()
        if clean["access"] not in ("open", "embargoed"):
            raise UsageError("access: use open or embargoed")
    if query.after is not None and isinstance(query.after[0], str) != (query.sort == "title"):
        raise UsageError("cursor: it belongs to another sort order; start again without it")
    return replace(query, **clean)


def year_range(year: str) -> tuple[float, float]:
    """[first second, first second of the next year) of a four-digit year, UTC."""
    y = int(year)
    start = float(calendar.timegm((y, 1, 1, 0, 0, 0)))
    return start, start + (366 if calendar.isleap(y) else 365) * 86400.0      # 9999 has no next year


def display_title(path: str, metadata: Any) -> str:
    """The metadata's title, else its sample name, else the path's last two parts ("2025-0042/raw",
    not a bare "raw")."""
    meta = metadata if isinstance(metadata, dict) else {}
    sample = meta.get("sample")
    for found in (meta.get("title"), sample.get("name") if isinstance(sample, dict) else sample):
        if found and isinstance(found, (str, int, float)) and not isinstance(found, bool):
            return str(found)
    return "/".join(path.rstrip("/").split("/")[-2:]) or path


def sort_title(path: str, metadata: Any) -> str:
    """The key of the "title" order: the shown title, case folded (stored with each dataset)."""
    return display_title(path, metadata).casefold()


def sort_key(ds, sort: str) -> tuple[float | str, str]:
    return (sort_title(ds.path, ds.metadata) if sort == "title" else ds.created_at, ds.pid)


def words(text: str) -> list[str]:
    """Lowercased words without accents: 'Lysozyme-ü 1.h5' -> ['lysozyme', 'u', '1', 'h5']."""
    plain = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return [w.casefold() for w in _WORD.findall(plain)]


def file_words(path: str) -> list[str]:
    """The words of a file path that find its dataset: plain numbers (scan_00017) are left out, so
    a dataset of a million numbered files keeps a small word list."""
    return sorted({w for w in words(path) if not w.isdigit()})


def query_words(q: str) -> list[str]:
    found = list(dict.fromkeys(words(q)))
    if len(found) > MAX_WORDS:
        raise UsageError(f"q: give at most {MAX_WORDS} words")
    return found


def text_of(value: Any) -> str:
    """Every string and number inside a metadata value, space-separated."""
    if isinstance(value, dict):
        return " ".join(text_of(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return " ".join(text_of(v) for v in value)
    if isinstance(value, bool) or value is None:
        return ""
    return str(value)


def dataset_text(beamtime: str, path: str, data_type: str, metadata: dict) -> str:
    return " ".join((beamtime, path, data_type, text_of(metadata)))


def beamtime_text(beamtime, proposal) -> str:
    """Words of a beamtime and its proposal that find its datasets."""
    parts = [beamtime.id, beamtime.beamline, beamtime.proposal, beamtime.pi, *beamtime.team]
    if proposal is not None:
        parts += [proposal.title, proposal.pi]
    return " ".join(parts)


def norm_id(value: str | None) -> str | None:
    return value.strip().casefold() if value is not None and value.strip() else None


def year_of(t: float | None) -> str:
    return time.strftime("%Y", time.gmtime(t)) if t is not None else "unknown"


class BeamtimeFacets(NamedTuple):
    """What the facets read of a beamtime: its beamline and the start that gives its year."""
    beamline: str
    start: float | None


def fold_facets(groups: Iterable[tuple[str, str, str, bool, int]], beamtimes: dict) -> dict:
    """Facet counts from (beamtime, data_type, year created, embargoed, count) groups; `beamtimes`
    maps id -> Beamtime or BeamtimeFacets (the beamline, and the year of its start when known).
    A beamtime's beamline and year are worked out once, however many groups it has."""
    beamline: dict[str, int] = {}
    data_type: dict[str, int] = {}
    year: dict[str, int] = {}
    access = {"embargoed": 0, "open": 0}
    known: dict[str, tuple[str, str | None]] = {}
    for bt_id, dt, created, embargoed, n in groups:
        line_year = known.get(bt_id)
        if line_year is None:
            bt = beamtimes.get(bt_id)
            line_year = known[bt_id] = (bt.beamline if bt and bt.beamline else "unknown",
                                        year_of(bt.start) if bt and bt.start is not None else None)
        beamline[line_year[0]] = beamline.get(line_year[0], 0) + n
        data_type[dt] = data_type.get(dt, 0) + n
        y = line_year[1] or created or "unknown"
        year[y] = year.get(y, 0) + n
        access["embargoed" if embargoed else "open"] += n
    facets = {"beamline": beamline, "data_type": data_type, "year": year,
              "access": {k: n for k, n in access.items() if n}}
    return {name: dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))) for name, c in facets.items()}


def encode_cursor(key: tuple[float | str, str] | None) -> str | None:
    if key is None:
        return None
    raw = json.dumps([key[0], key[1]], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str | None) -> tuple[float | str, str] | None:
    if not text:
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        created, pid = json.loads(raw)
        if isinstance(created, (int, float)) and not isinstance(created, bool) and isinstance(pid, str):
            return float(created), pid
        if isinstance(created, str) and isinstance(pid, str):
            return created, pid
    except (ValueError, TypeError, UnicodeDecodeError):
        pass
    raise UsageError("cursor: not a cursor this service gave out; start again without one")
