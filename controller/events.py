"""What goes into the scheduler (events) and what comes out (actions), plus its persisted records.

Invariants: every event and action is an immutable value; the scheduler keeps no reference
to a mutable caller object. Actions that derive from `Persist` are facts the shell must store
durably before it acknowledges the event that caused them; replaying the stored facts through
`Scheduler.restore` rebuilds the same queue. File ids are assigned by the scheduler, contiguous
per transfer (`TransferAccepted.first_file_id + position`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from domas.transfer.parts import PART_SUFFIX, part_path  # noqa: F401  (the one spelling of part names)
from domas.transfer.plan import chunk_at
from domas.errors import ImpossibleRange

part_url = part_path        # the hidden name agents write a destination URL under until it is done
VERIFY_MODES = ("default", "none")
STATES = ("queued", "active", "verifying", "done", "failed", "cancelled")


# -- specifications and records --------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class TransferSpec:
    """A transfer as submitted; `max_attempts` 0 means the scheduler's default."""

    transfer_id: str
    beamline: str = ""
    priority: int = 0
    chunk_size: int = 8 * 1024 * 1024
    verify: str = "default"
    max_attempts: int = 0


@dataclass(frozen=True, slots=True)
class FileSpec:
    """One file to copy: `dst` is the final name (the agents write `part_url(dst)`)."""

    src: str
    dst: str
    size: int
    mtime_ns: int = 0
    version: str = ""               # Stat.version() of the source when planned


@dataclass(frozen=True, slots=True)
class FileRecord:
    """A file as the shell stored it (for restore); `state` is one of STATES."""

    file_id: int
    transfer_id: str
    src: str
    dst: str
    size: int
    mtime_ns: int = 0
    state: str = "queued"
    version: str = ""


@dataclass(frozen=True, slots=True)
class ChunkRecord:
    """A chunk the shell stored as done (for restore)."""

    file_id: int
    index: int
    adler32: int


@dataclass(frozen=True, slots=True)
class ChunkReport:
    """An agent's result for one lease; `error_kind` empty means success."""

    report_id: str
    lease_id: str
    transfer_id: str
    file_id: int
    index: int
    offset: int
    length: int
    adler32: int = 1
    xxh3: int = 0
    nbytes: int = 0
    seconds: float = 0.0
    error_kind: str = ""
    error_message: str = ""
    retriable: bool = False
    error_side: str = ""            # "source" | "destination" | "" (unknown: both blamed)
    observed_size: int | None = None
    observed_mtime_ns: int | None = None
    observed_version: str | None = None

    @property
    def ok(self) -> bool:
        return not self.error_kind


# -- events ----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class TransferSubmitted:
    """`first_file_id` 0: the scheduler numbers the files. A large submission is prepared off the
    event loop: ids reserved (`Scheduler.reserve_file_ids`), `prepared` built from the same spec,
    files and first id by the pure `Scheduler.prepare` (its owner hands it over with the event)."""

    transfer: TransferSpec
    files: tuple[FileSpec, ...]
    first_file_id: int = 0
    prepared: object = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class AgentRegistered:
    agent: str


@dataclass(frozen=True, slots=True)
class AgentHeartbeat:
    """Renews the listed leases of the agent (all of them when `lease_ids` is None)."""

    agent: str
    lease_ids: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class LeaseRequested:
    """The agent can take `n` more chunks (credit adds up until leases are granted)."""

    agent: str
    n: int


@dataclass(frozen=True, slots=True)
class ChunkReported:
    agent: str
    report: ChunkReport


@dataclass(frozen=True, slots=True)
class AgentLost:
    agent: str


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed: expire leases, retry verifications, hand out chunks whose backoff ended."""


@dataclass(frozen=True, slots=True)
class DestinationVerified:
    """Outcome of a FinalizeFile: the destination's adler32, or the error that prevented it."""

    transfer_id: str
    file_id: int
    adler32: int | None = None
    error_kind: str = ""
    error_message: str = ""
    retriable: bool = False
    observed: tuple[int, int, str] | None = None    # with "source_changed": (size, mtime_ns, version) now


@dataclass(frozen=True, slots=True)
class TiersDown:
    """The storage roots (URLs) that are down now (controller/tiers.py): no lease reads or writes a
    file under one of them until a later TiersDown leaves it out; leases held there are revoked."""

    roots: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CancelTransfer:
    transfer_id: str
    reason: str = ""


# -- actions ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """One chunk handed to an agent (the ChunkLease message); `dst_url` is the part file."""

    lease_id: str
    transfer_id: str
    file_id: int
    index: int
    offset: int
    length: int
    src_url: str
    dst_url: str
    file_size: int
    mtime_ns: int
    expires_at: float
    verify: str
    version: str = ""


@dataclass(frozen=True, slots=True)
class GrantLeases:
    agent: str
    leases: tuple[LeaseInfo, ...]


@dataclass(frozen=True, slots=True)
class RevokeLeases:
    agent: str
    lease_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class LeasesRenewed:
    """Answer to a heartbeat: new expiry, and the listed leases that are no longer the agent's."""

    agent: str
    expires_at: float
    revoked: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FinalizeFile:
    """Shell: when `verify`, establish the adler32 of `part_url` without reading it (the agents read
    their chunks back; else the server's checksum); rename it to `final_url` only if it equals
    `expected_adler32`; then feed back DestinationVerified with the adler32 found."""

    transfer_id: str
    file_id: int
    part_url: str
    final_url: str
    size: int
    expected_adler32: int
    verify: bool
    mtime_ns: int = 0               # given to the final file (0: leave it)
    src_url: str = ""               # whose permission bits the final file gets ("": leave them)
    src_version: str = ""           # with size and mtime_ns: the source the chunks were read from


@dataclass(frozen=True, slots=True)
class PartLeft:
    """Shell: a started file ended without its part file being renamed (failed, cancelled): the
    part-file janitor visits its directory, or the part file would stay there for good."""
    part_url: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """An invalid event; the servicer answers INVALID_ARGUMENT with `reason`. Nothing changed."""

    reason: str
    report_id: str = ""


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A report already applied (or about a finished file); nothing changed."""

    report_id: str


class Persist:
    """Marker: an action the shell stores durably."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class TransferAccepted(Persist):
    """`staged`: the file rows were written ahead (StateStore.stage_files); this fact makes them visible."""

    transfer: TransferSpec
    first_file_id: int
    files: tuple[FileSpec, ...]
    staged: bool = False


@dataclass(frozen=True, slots=True)
class ChunkDone(Persist):
    transfer_id: str
    file_id: int
    index: int
    adler32: int
    xxh3: int
    length: int


@dataclass(frozen=True, slots=True)
class FileReset(Persist):
    """Every done chunk of the file is forgotten (source changed or destination mismatch)."""

    transfer_id: str
    file_id: int
    size: int
    mtime_ns: int
    reason: str
    version: str = ""


@dataclass(frozen=True, slots=True)
class FileDone(Persist):
    transfer_id: str
    file_id: int
    final_url: str
    size: int
    adler32: int


@dataclass(frozen=True, slots=True)
class FileFailed(Persist):
    transfer_id: str
    file_id: int
    part_url: str
    kind: str
    message: str


@dataclass(frozen=True, slots=True)
class TransferEnded(Persist):
    """`state` is "done", "failed" (some file failed) or "cancelled"."""

    transfer_id: str
    state: str
    counts: dict[str, int] = field(default_factory=dict)


# -- validation and grouping -------------------------------------------------------------

def submission_error(spec: TransferSpec, files: tuple, exists: bool) -> str:
    """Why a submission cannot be accepted (empty when it can)."""
    if not spec.transfer_id:
        return "the transfer has no id"
    if exists:
        return f"transfer {spec.transfer_id!r} already exists"
    if spec.chunk_size <= 0:
        return f"chunk size must be positive, got {spec.chunk_size}"
    if spec.verify not in VERIFY_MODES:
        return f"verify must be one of {', '.join(VERIFY_MODES)}, got {spec.verify!r}"
    if spec.max_attempts < 0:
        return f"max_attempts must not be negative, got {spec.max_attempts}"
    return files_error(files)


def files_error(files: tuple) -> str:
    """Why these files cannot be queued (empty when they can)."""
    for fs in files:
        if fs.size < 0 or not fs.src or not fs.dst:
            return f"file {fs.src!r} -> {fs.dst!r} has no path or a negative size ({fs.size})"
    return ""


def range_error(r: ChunkReport, size: int, chunk_size: int) -> str:
    """Why a report does not fit the chunk it names (empty when it fits)."""
    try:
        c = chunk_at(r.index, size, chunk_size)
    except ImpossibleRange:
        return f"chunk {r.index} does not exist in file {r.file_id}"
    if (r.offset, r.length) != (c.offset, c.length):
        return (f"report for file {r.file_id} chunk {r.index} says offset={r.offset} length={r.length}, "
                f"the chunk is offset={c.offset} length={c.length}")
    if r.ok and (r.nbytes != c.length or not 0 <= r.adler32 <= 0xFFFFFFFF):
        return f"success report for file {r.file_id} chunk {r.index} with {r.nbytes} of {c.length} bytes"
    return ""


def merge_revocations(out: list) -> list:
    """One RevokeLeases per agent, where the first of them was."""
    revokes = [a for a in out if isinstance(a, RevokeLeases)]
    if len(revokes) < 2:
        return out
    ids: dict[str, list[str]] = {}
    for a in revokes:
        ids.setdefault(a.agent, []).extend(a.lease_ids)
    merged = []
    for a in out:
        if not isinstance(a, RevokeLeases):
            merged.append(a)
        elif a.agent in ids:
            merged.append(RevokeLeases(a.agent, tuple(ids.pop(a.agent))))
    return merged
