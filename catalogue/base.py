"""The one Catalogue interface and its records (proposal, beamtime, dataset, file, replica).

Contract, checked for every backend by tests/test_catalogue_contract.py:
- Every write is an idempotent upsert: applying the same call twice leaves the same state as once,
  so a spool may replay writes after a crash without doubling anything.
- A dataset's `file_count` and `bytes` are owned by the catalogue: they always equal the count and
  the size sum of its file records, whatever order and however often files are upserted.
- A dataset's PID is assigned once and never changes: re-upserting the same path keeps it.
- A file's content changed when its size differs, its modification time differs (both known) or a
  checksum known on both sides differs. Then
  every replica not named in that upsert becomes "stale" (a copy of old content must never count as
  a verified replica of the new one) and a checksum the upsert leaves empty is cleared. Otherwise an
  empty checksum in an upsert keeps the stored one, and filling in an unknown one changes nothing else.
- Discovery fills, operators set: upsert_proposal / upsert_beamtime only fill the fields that are
  empty in the store (with overwrite=True, the operator's path, every field is set as given);
  re-upserting an existing dataset keeps its state, its embargo end and every stored metadata key
  (new keys are added): only set_dataset_state changes state and embargo. So a new file or a new
  dataset never wipes what an operator set (PI, team, proposal, embargo).
- Operator changes are recorded (record_changes: who, when, what, old and new value) and
  history(targets) returns those of the given targets, oldest first.
- Times are POSIX seconds (float). Backends translate their own exceptions at the edge:
  unreachable -> CatalogueUnavailable, bad record -> InvalidMessage, unknown record -> NotFound.
"""

from __future__ import annotations

import abc
import json
import posixpath
import re
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from typing import Any, Iterable, Iterator, Sequence

from domas.errors import InvalidMessage

from .search import SearchQuery, SearchResult, text_of

DATA_TYPES = ("raw", "processed", "calibration", "simulated")
REPLICA_STATES = ("pending", "copying", "verified", "failed", "stale", "bad", "deleting", "deleted")
# "bad": the copy was read back and does not match the catalogued adler32 (rot, a damaged medium);
# it is never served and never counts as protection, and the archiver replaces it from a good tier.
DATASET_STATES = ("open", "closed", "archived", "embargoed", "released", "deleted")

_TIER_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_HEX8 = re.compile(r"[0-9a-f]{8}")
_HEX16 = re.compile(r"[0-9a-f]{16}")


@dataclass(frozen=True)
class Proposal:
    id: str
    title: str = ""
    pi: str = ""


@dataclass(frozen=True)
class Beamtime:
    id: str
    beamline: str = ""
    proposal: str = ""
    pi: str = ""
    team: tuple[str, ...] = ()
    start: float | None = None
    end: float | None = None


@dataclass(frozen=True)
class Change:
    """One operator change: `target` is "proposal:ID", "beamtime:ID" or "dataset:PID"."""

    at: float
    who: str
    target: str
    field: str
    old: Any = None
    new: Any = None


@dataclass(frozen=True)
class Dataset:
    beamtime: str
    path: str
    data_type: str = "raw"
    state: str = "open"
    embargo_end: float | None = None
    metadata: dict = field(default_factory=dict)
    pid: str = ""                    # assigned by the catalogue when empty
    file_count: int = 0              # owned by the catalogue: ignored on upsert
    bytes: int = 0                   # owned by the catalogue: ignored on upsert
    created_at: float | None = None  # set once, on first upsert (now, when not given)


@dataclass(frozen=True)
class Replica:
    state: str
    url: str = ""
    verified_at: float | None = None
    version: str = ""                # the content this copy holds: content_version(size, mtime) of
                                     # the source it was copied from ("" = not recorded)
    checked_at: float | None = None  # when its bytes were last read back and matched (scrubber)


def under_embargo(state: str, embargo_end: float | None, now: float) -> bool:
    if embargo_end is None:
        return state == "embargoed"
    return embargo_end > now


def public_state(state: str, embargo_end: float | None, now: float) -> str:
    """The state callers read: "embargoed" while under embargo, "released" once its end has passed
    (the data service's answers and the catalogue commands alike)."""
    if state == "deleted":
        return state
    if under_embargo(state, embargo_end, now):
        return "embargoed"
    if embargo_end is not None or state == "released":
        return "released"
    return state


def content_version(size: int, mtime: float) -> str:
    """The identity of one content of a file, as replicas record it: size and modification time."""
    return f"{int(size)}:{float(mtime)!r}"


def holds_current(f: "FileRecord", replica: Replica) -> bool:
    """True unless the replica names a content other than the file's current one."""
    return not replica.version or replica.version == content_version(f.size, f.mtime)


@dataclass(frozen=True)
class ReplicaUpdate:
    """One replica to record: the file (dataset PID, relative path), the tier and the replica."""

    dataset: str
    path: str
    tier: str
    replica: Replica


@dataclass(frozen=True)
class FileRecord:
    dataset: str                     # the dataset's PID
    path: str                        # relative to the dataset path, '/'-separated
    size: int
    adler32: str = ""                # 8 lowercase hex digits, or "" when not known yet
    xxh3: str = ""                   # 16 lowercase hex digits, or ""
    mtime: float = 0.0
    replicas: dict[str, Replica] = field(default_factory=dict)
    beamtime: str = ""               # filled in by the catalogue from the dataset


# -- plain-dict forms, shared by the backends and the spool -----------------------------------

def to_doc(record: Any) -> dict:
    doc = asdict(record)
    if isinstance(record, Beamtime):
        doc["team"] = list(record.team)
    return doc


def proposal_from(doc: dict) -> Proposal:
    return Proposal(id=doc["id"], title=doc.get("title", ""), pi=doc.get("pi", ""))


def beamtime_from(doc: dict) -> Beamtime:
    return Beamtime(id=doc["id"], beamline=doc.get("beamline", ""), proposal=doc.get("proposal", ""),
                    pi=doc.get("pi", ""), team=tuple(doc.get("team") or ()), start=doc.get("start"),
                    end=doc.get("end"))


def dataset_from(doc: dict) -> Dataset:
    return Dataset(beamtime=doc["beamtime"], path=doc["path"], data_type=doc.get("data_type", "raw"),
                   state=doc.get("state", "open"), embargo_end=doc.get("embargo_end"),
                   metadata=dict(doc.get("metadata") or {}), pid=doc.get("pid", ""),
                   file_count=int(doc.get("file_count", 0)), bytes=int(doc.get("bytes", 0)),
                   created_at=doc.get("created_at"))


def replicas_from(doc: dict | None) -> dict[str, Replica]:
    return {tier: Replica(state=r["state"], url=r.get("url", ""), verified_at=r.get("verified_at"),
                          version=r.get("version") or "", checked_at=r.get("checked_at"))
            for tier, r in sorted((doc or {}).items())}


def file_from(doc: dict) -> FileRecord:
    return FileRecord(dataset=doc["dataset"], path=doc["path"], size=int(doc["size"]),
                      adler32=doc.get("adler32", ""), xxh3=doc.get("xxh3", ""),
                      mtime=float(doc.get("mtime", 0.0)), replicas=replicas_from(doc.get("replicas")),
                      beamtime=doc.get("beamtime", ""))


def plain_metadata(metadata: dict) -> dict:
    """The metadata as every backend stores it: JSON types only (tuples become lists, others str),
    and keys without '.' or a leading '$' (replaced by '_'), which not every MongoDB accepts."""
    return _safe_keys(json.loads(json.dumps(metadata, sort_keys=True, default=str)))


def _safe_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {_safe_key(str(k)): _safe_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_safe_keys(v) for v in value]
    return value


def _safe_key(key: str) -> str:
    key = key.replace(".", "_")
    return "_" + key[1:] if key.startswith("$") else key


# -- discovery fills, operators set (pure) -------------------------------------------------------

def _empty(value: Any) -> bool:
    return value is None or value == "" or value == ()


def filled(stored: Any, new: Any) -> Any:
    """A proposal or beamtime upserted by discovery over the stored one: only empty fields take the
    new value, so whatever is already set (by an operator or an earlier import) stays."""
    if stored is None:
        return new
    return replace(stored, **{f.name: getattr(new, f.name) for f in fields(new) if f.name != "id"
                              and _empty(getattr(stored, f.name)) and not _empty(getattr(new, f.name))})


def kept_dataset(stored: Dataset, new: Dataset) -> Dataset:
    """A dataset re-upserted over the stored one: state, embargo end and stored metadata keys stay
    (at every depth: new keys inside a stored table are added, e.g. a scan's stop after its start)."""
    return replace(new, state=stored.state, embargo_end=stored.embargo_end,
                   metadata=_kept_keys(stored.metadata, plain_metadata(new.metadata)))


def _kept_keys(stored: dict, new: dict) -> dict:
    out = dict(stored)
    for k, v in new.items():
        if k not in out:
            out[k] = v
        elif isinstance(out[k], dict) and isinstance(v, dict):
            out[k] = _kept_keys(out[k], v)
    return out


# -- validation (pure): a bad record is refused with one sentence -----------------------------

def _need(cond: bool, message: str) -> None:
    if not cond:
        raise InvalidMessage(message)


def check_id(kind: str, value: str) -> None:
    _need(isinstance(value, str) and value.strip() == value and 0 < len(value) <= 200,
          f"{kind} id {value!r} is not valid: give 1 to 200 characters without surrounding spaces")


def check_tier(tier: str) -> None:
    _need(isinstance(tier, str) and bool(_TIER_RE.fullmatch(tier)),
          f"storage tier {tier!r} is not valid: use lowercase letters, digits, '-' or '_' (e.g. central)")


def check_replica(tier: str, replica: Replica) -> None:
    check_tier(tier)
    _need(replica.state in REPLICA_STATES,
          f"replica state {replica.state!r} is not one of {', '.join(REPLICA_STATES)}")


def check_replica_updates(batch: Sequence[ReplicaUpdate]) -> None:
    for u in batch:
        check_id("dataset", u.dataset)
        check_relpath(u.path)
        check_replica(u.tier, u.replica)


def check_dataset(d: Dataset) -> None:
    check_id("beamtime", d.beamtime)
    _need(isinstance(d.path, str) and d.path.startswith("/") and posixpath.normpath(d.path) == d.path,
          f"dataset path {d.path!r} must be absolute and normalised (no '..', '//' or trailing '/')")
    _need(d.data_type in DATA_TYPES, f"data type {d.data_type!r} is not one of {', '.join(DATA_TYPES)}")
    check_dataset_state(d.state)
    _need(isinstance(d.metadata, dict), "dataset metadata must be a dict")


def check_dataset_state(state: str) -> None:
    _need(state in DATASET_STATES, f"dataset state {state!r} is not one of {', '.join(DATASET_STATES)}")


def check_relpath(path: str) -> None:
    ok = (isinstance(path, str) and bool(path) and not path.startswith("/")
          and posixpath.normpath(path) == path and not path.startswith("../") and path != "..")
    _need(ok, f"file path {path!r} must be relative to its dataset and normalised (no '..' or '//')")


def check_file(f: FileRecord) -> None:
    check_id("dataset", f.dataset)
    check_relpath(f.path)
    _need(isinstance(f.size, int) and f.size >= 0, f"file size {f.size!r} of {f.path} must be a whole number >= 0")
    _need(f.adler32 == "" or bool(_HEX8.fullmatch(f.adler32)),
          f"adler32 {f.adler32!r} of {f.path} must be 8 lowercase hex digits")
    _need(f.xxh3 == "" or bool(_HEX16.fullmatch(f.xxh3)), f"xxh3 {f.xxh3!r} of {f.path} must be 16 lowercase hex digits")
    for tier, replica in f.replicas.items():
        check_replica(tier, replica)


# -- the counter and staleness rules (pure), applied identically by every backend --------------

def counter_delta(old_size: int | None, size: int) -> tuple[int, int]:
    """(files, bytes) to add to a dataset when a file of `size` replaces one of `old_size` (None: new)."""
    if old_size is None:
        return 1, size
    return 0, size - old_size


def content_changed(before: FileRecord, new: FileRecord) -> bool:
    """Size differs, the mtime differs (both known: a rewrite of the same size), or a checksum known
    on both sides differs (an empty one is unknown)."""
    return (before.size != new.size or bool(before.mtime and new.mtime and before.mtime != new.mtime)
            or any(a and b and a != b for a, b in ((before.adler32, new.adler32), (before.xxh3, new.xxh3))))


def merged_replicas(before: FileRecord | None, new: FileRecord) -> dict[str, Replica]:
    """Replicas after an upsert: named tiers replaced, others kept, or marked stale if content changed."""
    if before is None:
        return dict(new.replicas)
    changed = content_changed(before, new)
    out = {}
    for tier, rep in before.replicas.items():
        out[tier] = replace(rep, state="stale") if changed and rep.state != "deleted" else rep
    out.update(new.replicas)
    return out


def merged_file(before: FileRecord | None, new: FileRecord) -> FileRecord:
    """The record stored when `new` is upserted over `before` (see the module contract)."""
    if before is None:
        return new
    changed = content_changed(before, new)
    return replace(new, adler32=new.adler32 or ("" if changed else before.adler32),
                   xxh3=new.xxh3 or ("" if changed else before.xxh3), replicas=merged_replicas(before, new))


def inherit_embargo(d: Dataset, beamtime_until: float | None) -> Dataset:
    """A NEW dataset of a beamtime under embargo starts under that embargo, unless it comes with an
    embargo (or another state than open) of its own."""
    if beamtime_until is None or d.embargo_end is not None or d.state != "open":
        return d
    return replace(d, state="embargoed", embargo_end=beamtime_until)


class Catalogue(abc.ABC):
    """Where every dataset, file and replica of the facility is recorded."""

    pid_prefix: str = ""

    # -- writes: idempotent upserts ----------------------------------------------------------
    @abc.abstractmethod
    def upsert_proposal(self, proposal: Proposal, *, overwrite: bool = False) -> None:
        """Fill the empty fields of a stored proposal (create it); overwrite=True sets every field."""

    @abc.abstractmethod
    def upsert_beamtime(self, beamtime: Beamtime, *, overwrite: bool = False) -> None:
        """Fill the empty fields of a stored beamtime (create it); overwrite=True sets every field."""

    @abc.abstractmethod
    def record_changes(self, changes: Sequence[Change]) -> None:
        """Append operator changes to the history."""

    @abc.abstractmethod
    def history(self, targets: Sequence[str]) -> list[Change]:
        """Every recorded change of the given targets, oldest first."""

    @abc.abstractmethod
    def upsert_dataset(self, dataset: Dataset) -> Dataset:
        """Insert or update by path; returns the stored dataset with its (stable) PID and counters."""

    def upsert_datasets(self, batch: Sequence[Dataset]) -> None:
        """Upsert many datasets (the bulk path for imports); backends may do it in one round trip."""
        for d in batch:
            self.upsert_dataset(d)

    def upsert_file(self, file: FileRecord) -> None:
        """Insert or update one file by (dataset, path); the dataset must exist (NotFound if not)."""
        self.upsert_files([file])

    @abc.abstractmethod
    def upsert_files(self, batch: Sequence[FileRecord]) -> None:
        """Upsert many files at once; same rules as upsert_file, applied in order."""

    def set_replica(self, dataset: str, path: str, tier: str, state: str, url: str = "",
                    verified_at: float | None = None) -> None:
        """Record the replica of one file on one tier (NotFound if the file is not catalogued)."""
        self.set_replicas([ReplicaUpdate(dataset, path, tier, Replica(state, url, verified_at))])

    @abc.abstractmethod
    def set_replicas(self, batch: Sequence["ReplicaUpdate"]) -> None:
        """Record many replicas at once. If any file is not catalogued: NotFound, and none is written."""

    @abc.abstractmethod
    def set_dataset_state(self, pid: str, state: str, embargo_end: float | None = None) -> None:
        """Change a dataset's state (and embargo end, when given); NotFound if unknown."""

    @abc.abstractmethod
    def set_beamtime_embargo(self, beamtime_id: str, until: float | None) -> None:
        """Keep an embargo end on a beamtime (None: none): every dataset catalogued in it from now
        on starts under that embargo unless it comes with its own (inherit_embargo)."""

    @abc.abstractmethod
    def beamtime_embargo(self, beamtime_id: str) -> float | None:
        """The embargo end kept on a beamtime, or None."""

    # -- reads -------------------------------------------------------------------------------
    @abc.abstractmethod
    def get_proposal(self, proposal_id: str) -> Proposal | None: ...

    @abc.abstractmethod
    def get_beamtime(self, beamtime_id: str) -> Beamtime | None: ...

    @abc.abstractmethod
    def get_dataset(self, pid: str) -> Dataset | None: ...

    @abc.abstractmethod
    def dataset_by_path(self, path: str) -> Dataset | None: ...

    @abc.abstractmethod
    def find_datasets(self, *, beamtime: str | None = None, proposal: str | None = None,
                      pi: str | None = None, since: float | None = None,
                      path_prefix: str | None = None, limit: int | None = None) -> list[Dataset]:
        """Datasets matching every given filter, newest first. `pi` matches the beamtime's or the
        proposal's PI; `since` compares with created_at; `path_prefix` is a directory."""

    @abc.abstractmethod
    def search_datasets(self, query: "SearchQuery") -> "SearchResult":
        """One page of the datasets matching `query`, their total and facets (contract: search.py)."""

    @abc.abstractmethod
    def beamtimes_of_person(self, name: str) -> list[str]:
        """Beamtimes whose PI, proposal PI or team names `name` (case-insensitive): the teams they are in."""

    @abc.abstractmethod
    def get_file(self, dataset: str, path: str) -> FileRecord | None: ...

    @abc.abstractmethod
    def files_of(self, pid: str) -> Iterator[FileRecord]:
        """Every file of a dataset, by path; streams, so a dataset may hold millions."""

    @abc.abstractmethod
    def files_by_replica_state(self, tier: str, state: str, *, dataset: str | None = None,
                               beamtime: str | None = None, limit: int | None = None) -> Iterator[FileRecord]:
        """Files whose replica on `tier` is in `state` (e.g. verified on tape), by dataset and path."""

    @abc.abstractmethod
    def files_lacking_replica(self, tier: str, state: str = "verified", *, dataset: str | None = None,
                              beamtime: str | None = None, limit: int | None = None) -> Iterator[FileRecord]:
        """Files with no replica on `tier` in `state` (absent, or in another state)."""

    def replicas_due_for_check(self, tier: str, checked_before: float, limit: int = 1000) -> list[FileRecord]:
        """Files whose verified replica on `tier` was last checked (or verified) before
        `checked_before`, the longest unchecked first: what the scrubber reads next."""
        def last(f: FileRecord) -> float:
            r = f.replicas[tier]
            return r.checked_at or r.verified_at or 0.0

        due = [f for f in self.files_by_replica_state(tier, "verified") if last(f) < checked_before]
        return sorted(due, key=last)[:limit]

    # -- scans: Bluesky runs, one record each (see Scan) -------------------------------------
    @abc.abstractmethod
    def upsert_scans(self, batch: Sequence["Scan"]) -> None:
        """Insert or fill scans by uid (merged_scan: only empty fields take the new value); every
        scan's dataset must exist (NotFound if not, and none is written)."""

    @abc.abstractmethod
    def get_scan(self, uid: str) -> "Scan | None": ...

    @abc.abstractmethod
    def scans_of(self, pid: str, limit: int | None = None) -> list["Scan"]:
        """The scans of a dataset, oldest start first (then by uid)."""

    @abc.abstractmethod
    def recount_dataset(self, pid: str) -> Dataset:
        """Recompute file_count and bytes from the file records (repair after an interrupted write)."""

    def ping(self) -> None:
        """Raise CatalogueUnavailable when the catalogue cannot be reached."""

    def close(self) -> None:
        """Release connections."""

    def __enter__(self) -> "Catalogue":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def batched(items: Iterable, size: int) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


# -- scans: Bluesky runs as their own records (pure) -------------------------------------------
# A beamtime's dataset may gather thousands of runs; kept inside the dataset's metadata, every
# document of one run rewrote (and re-indexed for search) all of them. As records of their own, a
# document writes only its run; the dataset's page shows them under metadata "scans" (with_scans).

@dataclass(frozen=True)
class Scan:
    """One Bluesky run (its start, descriptor and stop documents) in the dataset it writes to."""

    uid: str                          # the start document's uid
    dataset: str                      # the dataset's PID
    scan_id: int | None = None
    plan_name: str = ""
    sample: Any = None                # as the start document gives it: a name or a table
    detectors: tuple[str, ...] = ()
    motors: tuple[str, ...] = ()
    start_time: float | None = None
    stop_time: float | None = None
    exit_status: str = ""
    reason: str = ""
    num_events: dict = field(default_factory=dict)     # stream -> events
    streams: dict = field(default_factory=dict)        # stream -> its data keys
    data_path: str = ""               # where inside the dataset it writes ("" = not said)
    files: int | None = None          # its files that arrived ([source.amqp] files_grace); None = not checked


SCAN_FIELDS = tuple(f.name for f in fields(Scan) if f.name not in ("uid", "dataset"))


def _blank(value: Any) -> bool:
    return value is None or value == "" or value == () or value == [] or value == {}


def check_scan(s: Scan) -> None:
    check_id("scan", s.uid)
    check_id("dataset", s.dataset)
    _need(s.scan_id is None or (isinstance(s.scan_id, int) and not isinstance(s.scan_id, bool)),
          f"scan {s.uid}: scan_id {s.scan_id!r} must be a whole number")
    _need(all(t is None or isinstance(t, (int, float)) for t in (s.start_time, s.stop_time)),
          f"scan {s.uid}: start and stop times must be POSIX seconds")
    _need(s.files is None or (isinstance(s.files, int) and s.files >= 0),
          f"scan {s.uid}: files {s.files!r} must be a count")
    _need(isinstance(s.num_events, dict) and isinstance(s.streams, dict),
          f"scan {s.uid}: num_events and streams must be tables by stream")


def scan_doc(s: Scan) -> dict:
    """The scan as plain JSON (tuples become lists, keys safe as plain_metadata makes them), as
    every backend and the spool store it; built field by field (it runs for every document)."""
    doc = {name: getattr(s, name) for name in ("uid", "dataset", *SCAN_FIELDS)}
    doc["detectors"], doc["motors"] = list(s.detectors), list(s.motors)
    if not isinstance(s.sample, (str, int, float, type(None))):
        doc["sample"] = plain_metadata({"sample": s.sample})["sample"]
    for name in ("num_events", "streams"):
        doc[name] = plain_metadata(doc[name]) if doc[name] else {}
    return doc


def scan_from(doc: dict) -> Scan:
    return Scan(uid=doc["uid"], dataset=doc["dataset"], scan_id=doc.get("scan_id"),
                plan_name=doc.get("plan_name") or "", sample=doc.get("sample"),
                detectors=tuple(doc.get("detectors") or ()), motors=tuple(doc.get("motors") or ()),
                start_time=doc.get("start_time"), stop_time=doc.get("stop_time"),
                exit_status=doc.get("exit_status") or "", reason=doc.get("reason") or "",
                num_events=dict(doc.get("num_events") or {}), streams=dict(doc.get("streams") or {}),
                data_path=doc.get("data_path") or "", files=doc.get("files"))


def merged_scan(stored: Scan | None, new: Scan) -> Scan:
    """A scan upserted over the stored one: only empty fields take the new value (tables by stream
    gain new streams), so a replayed or late document never overwrites; the dataset stays."""
    if stored is None:
        return new
    out = {}
    for name in SCAN_FIELDS:
        old, value = getattr(stored, name), getattr(new, name)
        if isinstance(old, dict) and isinstance(value, dict):
            out[name] = {**value, **old}
        else:
            out[name] = value if _blank(old) else old
    return replace(stored, **out)


def scan_text(s: Scan) -> str:
    """What free-text search finds a scan's dataset by: plan, sample, detectors, motors, scan id."""
    return text_of([s.plan_name, s.sample, list(s.detectors), list(s.motors), s.scan_id])


def scan_metadata(scans: Iterable[Scan]) -> dict:
    """{uid: its fields} as a dataset's page and API show them: empty fields left out, times ISO UTC."""
    out = {}
    for s in scans:
        shown = {}
        for name in SCAN_FIELDS:
            value = getattr(s, name)
            if name in ("start_time", "stop_time") and value is not None:
                value = datetime.fromtimestamp(value, timezone.utc).isoformat(timespec="milliseconds")
            if not _blank(value):
                shown[name] = list(value) if isinstance(value, tuple) else value
        out[s.uid] = shown
    return out


def with_scans(metadata: dict, scans: Sequence[Scan]) -> dict:
    """A dataset's metadata with its scan records under "scans" (beside any kept there before)."""
    if not scans:
        return metadata
    return {**metadata, "scans": {**(metadata.get("scans") or {}), **scan_metadata(scans)}}
