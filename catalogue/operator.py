"""Operator controls: proposals, beamtimes, embargoes, set by a person, every change recorded.

Invariants: an operator's write sets exactly the fields given (the catalogue's overwrite path), so
it wins over whatever discovery filled in, and discovery never undoes it (it only fills empty
fields). Every field that changed is recorded once, with who and when (`Change`); a write that
changes nothing records nothing. `changes_between` is pure; the rest are thin shells over a
Catalogue. Dates are POSIX seconds; `parse_date` reads what operators type (ISO dates/times, UTC).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import fields, replace
from datetime import datetime, timezone
from typing import Any, Iterable

from domas.errors import InvalidMessage, NotFound

from .base import Beamtime, Catalogue, Change, Dataset, Proposal, check_id

PROPOSAL_FIELDS = ("title", "pi")
BEAMTIME_FIELDS = ("beamline", "proposal", "pi", "team", "start", "end")


def parse_date(text: str, what: str = "date") -> float:
    """'2027-03-01', '2027-03-01T12:00', '2027-03-01 12:00:00+08:00' -> POSIX seconds (naive = UTC)."""
    try:
        dt = datetime.fromisoformat(str(text).strip())
    except ValueError:
        raise InvalidMessage(f"{what} {text!r} is not a date; give YYYY-MM-DD or YYYY-MM-DDTHH:MM") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def changes_between(before: Any, after: Any, target: str, who: str, now: float) -> list[Change]:
    """The Change of every field that differs between two records of the same kind (None = absent)."""
    out = []
    for f in fields(after):
        old = getattr(before, f.name) if before is not None else None
        new = getattr(after, f.name)
        if f.name != "id" and old != new and not (before is None and new in ("", (), None)):
            out.append(Change(now, who, target, f.name, _plain(old), _plain(new)))
    return out


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def set_proposal(cat: Catalogue, proposal_id: str, changes: dict, *, who: str, now: float) -> Proposal:
    """Create or update a proposal with exactly the given fields (title, pi)."""
    check_id("proposal", proposal_id)
    _known(changes, PROPOSAL_FIELDS, "proposal")
    before = cat.get_proposal(proposal_id)
    after = replace(before or Proposal(proposal_id), **changes)
    cat.upsert_proposal(after, overwrite=True)
    cat.record_changes(changes_between(before, after, f"proposal:{proposal_id}", who, now))
    return after


def set_beamtime(cat: Catalogue, beamtime_id: str, changes: dict, *, who: str, now: float) -> Beamtime:
    """Create or update a beamtime with exactly the given fields (proposal, pi, team, start, end)."""
    check_id("beamtime", beamtime_id)
    _known(changes, BEAMTIME_FIELDS, "beamtime")
    if "team" in changes:
        changes = {**changes, "team": tuple(changes["team"])}
    before = cat.get_beamtime(beamtime_id)
    after = replace(before or Beamtime(beamtime_id), **changes)
    if after.start is not None and after.end is not None and after.end < after.start:
        raise InvalidMessage(f"beamtime {beamtime_id}: end {_utc(after.end)} is before start {_utc(after.start)} "
                             "(UTC); give an end after the start")
    if after.proposal and cat.get_proposal(after.proposal) is None:
        set_proposal(cat, after.proposal, {}, who=who, now=now)
    cat.upsert_beamtime(after, overwrite=True)
    cat.record_changes(changes_between(before, after, f"beamtime:{beamtime_id}", who, now))
    return after


def _known(changes: dict, allowed: tuple[str, ...], kind: str) -> None:
    unknown = sorted(set(changes) - set(allowed))
    if unknown:
        raise InvalidMessage(f"{kind} has no field {unknown[0]!r} (fields: {', '.join(allowed)})")


def _dataset(cat: Catalogue, pid: str) -> Dataset:
    ds = cat.get_dataset(pid)
    if ds is None:
        raise NotFound(f"dataset {pid} is not in the catalogue; see `domas catalogue find`")
    return ds


def _set_state(cat: Catalogue, ds: Dataset, state: str, embargo_end: float, who: str, now: float) -> Dataset:
    cat.set_dataset_state(ds.pid, state, embargo_end)
    after = replace(ds, state=state, embargo_end=embargo_end)
    cat.record_changes([c for c in changes_between(ds, after, f"dataset:{ds.pid}", who, now)
                        if c.field in ("state", "embargo_end")])
    return after


def embargo(cat: Catalogue, pid: str, until: float, *, who: str, now: float) -> Dataset:
    """Put a dataset under embargo until `until` (its team, staff and admins still see it)."""
    return _set_state(cat, _dataset(cat, pid), "embargoed", until, who, now)


def embargo_beamtime(cat: Catalogue, beamtime_id: str, until: float, *, who: str, now: float) -> list[Dataset]:
    """Embargo a beamtime until `until`: every dataset of it catalogued so far, and, kept on the
    beamtime, every dataset catalogued in it later (unless that one comes with its own embargo).
    The datasets embargoed now are returned."""
    found = cat.find_datasets(beamtime=beamtime_id)
    if not found and cat.get_beamtime(beamtime_id) is None:
        raise NotFound(f"beamtime {beamtime_id} is not in the catalogue; add it with `domas catalogue beamtime`")
    before = cat.beamtime_embargo(beamtime_id)
    cat.set_beamtime_embargo(beamtime_id, until)
    if before != until:
        cat.record_changes([Change(now, who, f"beamtime:{beamtime_id}", "embargo_end", before, until)])
    return [_set_state(cat, ds, "embargoed", until, who, now) for ds in found]


def release(cat: Catalogue, pid: str, *, who: str, now: float) -> Dataset:
    """Lift the embargo of a dataset now: it becomes released (open to everyone)."""
    return _set_state(cat, _dataset(cat, pid), "released", now, who, now)


def history(cat: Catalogue, key: str) -> list[Change]:
    """The changes that concern `key`: a dataset PID (with its beamtime and proposal), a beamtime
    id (with its proposal) or a proposal id; oldest first."""
    targets: list[str] = []
    ds = cat.get_dataset(key)
    beamtime = ds.beamtime if ds else key
    if ds:
        targets.append(f"dataset:{ds.pid}")
    bt = cat.get_beamtime(beamtime)
    if bt:
        targets.append(f"beamtime:{bt.id}")
    proposal = bt.proposal if bt else key
    if proposal and cat.get_proposal(proposal) is not None:
        targets.append(f"proposal:{proposal}")
    if not targets:
        raise NotFound(f"{key} is neither a dataset PID, a beamtime nor a proposal in the catalogue")
    return sorted(cat.history(targets), key=lambda c: c.at)


# -- bulk import from a user-office export --------------------------------------------------------

def read_records(name: str, text: str) -> list[dict]:
    """Rows of a CSV (header line) or JSON (a list of objects) export; one dict per row."""
    if name.lower().endswith(".json") or text.lstrip().startswith(("[", "{")):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise InvalidMessage(f"{name} is not valid JSON: {e.msg} at line {e.lineno}") from None
        rows = doc if isinstance(doc, list) else doc.get("records") if isinstance(doc, dict) else None
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise InvalidMessage(f"{name}: give a JSON list of objects (one per beamtime or proposal)")
        return rows
    return [dict(r) for r in csv.DictReader(io.StringIO(text))]


def import_records(cat: Catalogue, rows: Iterable[dict], *, who: str, now: float) -> tuple[int, int]:
    """Proposals and beamtimes from export rows. Columns: proposal, title, proposal_pi (or pi for a
    row without beamtime), beamtime, beamline, pi, team (names split by ';' or ','), start, end.
    Only non-empty cells are set. Returns (proposals, beamtimes) written."""
    n_prop = n_bt = 0
    for i, raw in enumerate(rows, start=1):
        row = {str(k).strip().lower(): v for k, v in raw.items() if k is not None}
        cell = {k: (v.strip() if isinstance(v, str) else v) for k, v in row.items() if v not in (None, "", [])}
        proposal, beamtime = str(cell.get("proposal", "")), str(cell.get("beamtime", ""))
        if not proposal and not beamtime:
            raise InvalidMessage(f"row {i}: give a proposal or a beamtime column")
        if proposal:
            pc = {"title": cell["title"]} if "title" in cell else {}
            pi = cell.get("proposal_pi") or (cell.get("pi") if not beamtime else None)
            if pi:
                pc["pi"] = str(pi)
            set_proposal(cat, proposal, pc, who=who, now=now)
            n_prop += 1
        if beamtime:
            bc: dict[str, Any] = {k: str(cell[k]) for k in ("beamline", "pi") if k in cell}
            if proposal:
                bc["proposal"] = proposal
            if "team" in cell:
                team = cell["team"]
                bc["team"] = tuple(team) if isinstance(team, list) else tuple(
                    t.strip() for t in str(team).replace(";", ",").split(",") if t.strip())
            for key in ("start", "end"):
                if key in cell:
                    v = cell[key]
                    bc[key] = float(v) if isinstance(v, (int, float)) else parse_date(v, f"row {i} {key}")
            set_beamtime(cat, beamtime, bc, who=who, now=now)
            n_bt += 1
    return n_prop, n_bt


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M")
