"""Every field of every Controller RPC, checked before it reaches the scheduler or SQLite.

Invariants: pure (no I/O, no clock, no grpc); a request passes or raises InvalidMessage with one
sentence naming the field. Strings are bounded and never carry NUL; integers stay below 2^63
(SQLite's INTEGER) and inside the range their field means; enum values are ones this controller
knows. Locations are checked lexically against the storage roots here (domas.transfer.paths); symlinks
are the service shell's job, after expansion.
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass
from typing import Sequence

from domas.errors import InvalidMessage, UnsafePath
from domas.transfer.paths import Root, inside
from domas.v1 import domas_pb2 as pb

INT64_MAX = (1 << 63) - 1
MIN_CHUNK, MAX_CHUNK = 64 << 10, 1 << 30
MAX_PRIORITY = 1000
MAX_ATTEMPTS = 100
MAX_ID = 128                   # agent, lease, report and request ids
MAX_TRANSFER_ID = 64
MAX_BEAMLINE = 64
MAX_SHORT_TEXT = 256           # hostname, version, error kind
MAX_TEXT = 4096                # cancel reasons, error messages
MAX_PAGE_SIZE = 10_000
MAX_PAGE_TOKEN = 18            # digits: an offset below 10^18 < 2^63
MAX_WANT = 65_536              # credit asked for in one stream message
MAX_LIST = 100_000             # lease ids in a heartbeat, results in one report
MAX_SECONDS = 1e7              # a chunk's copy time

_FILE_STATES = frozenset(v for v in pb.FileState.values() if v)
_TRANSFER_STATES = frozenset(v for v in pb.TransferState.values() if v)
_VERIFY_MODES = frozenset(pb.VerifyMode.values())


@dataclass(frozen=True)
class Limits:
    max_sources: int = 100_000
    max_files: int = 1_000_000


def text(value: str, field: str, limit: int, *, required: bool = False, printable: bool = False) -> str:
    """A bounded string without NUL (and, when `printable`, without control characters)."""
    if required and not value:
        raise InvalidMessage(f"{field} is empty")
    if len(value) > limit:
        raise InvalidMessage(f"{field} is {len(value)} characters long; at most {limit} are allowed")
    if "\x00" in value:
        raise InvalidMessage(f"{field} contains a NUL character")
    if printable and not (value.isascii() and value.isprintable()) \
            and any(unicodedata.category(c)[0] in "CZ" and c != " " for c in value):   # ASCII: one C call
        raise InvalidMessage(f"{field} {value!r} contains a control or separator character")
    return value


def ident(value: str, field: str, limit: int = MAX_ID, required: bool = True) -> str:
    """An id: bounded, printable, no spaces."""
    text(value, field, limit, required=required, printable=True)
    if " " in value:
        raise InvalidMessage(f"{field} {value!r} contains a space")
    return value


def beamline(value: str, field: str = "beamline") -> str:
    text(value, field, MAX_BEAMLINE, printable=True)
    if "/" in value or "\\" in value:
        raise InvalidMessage(f"{field} {value!r} contains a slash")
    return value


def integer(value: int, field: str, low: int = 0, high: int = INT64_MAX) -> int:
    if not low <= value <= high:
        raise InvalidMessage(f"{field} is {value}; it must be between {low} and {high}")
    return value


def location(value: str, field: str, roots: Sequence[Root]):
    try:
        return inside(value, roots, field)
    except UnsafePath as e:
        raise InvalidMessage(str(e)) from None


# -- clients -------------------------------------------------------------------------------------

def submit(req: pb.SubmitTransferRequest, roots: Sequence[Root], limits: Limits) -> None:
    n = len(req.sources)
    if n == 0 or not req.destination:
        raise InvalidMessage("give at least one source and a destination")
    if n > limits.max_sources:
        raise InvalidMessage(f"a transfer takes at most {limits.max_sources} sources, got {n}; "
                             "give their common directory or split the transfer")
    ident(req.request_id, "request_id", required=False)
    beamline(req.beamline)
    integer(req.priority, "priority", -MAX_PRIORITY, MAX_PRIORITY)
    o = req.options
    if o.chunk_size and not MIN_CHUNK <= o.chunk_size <= MAX_CHUNK:
        raise InvalidMessage(f"chunk_size is {o.chunk_size} bytes; it must be 0 (the controller's default) "
                             f"or between 64 KiB ({MIN_CHUNK}) and 1 GiB ({MAX_CHUNK})")
    if o.verify not in _VERIFY_MODES:
        raise InvalidMessage(f"options.verify {o.verify} is not a verify mode this controller knows")
    integer(o.max_attempts, "options.max_attempts", 0, MAX_ATTEMPTS)
    location(req.destination, "destination", roots)
    seen: set[tuple] = set()
    for i, src in enumerate(req.sources):
        loc = location(src, f"source {i + 1}", roots)
        key = (loc, src.endswith("/"))
        if key in seen:
            raise InvalidMessage(f"source {src!r} is given more than once; each destination file takes one source")
        seen.add(key)


def page(token: str, size: int, default: int) -> tuple[int, int]:
    """(page size, offset) from a page request."""
    integer(size, "page_size", 0, MAX_PAGE_SIZE)
    if token and not (len(token) <= MAX_PAGE_TOKEN and token.isascii() and token.isdigit()):
        raise InvalidMessage(f"page token {token[:40]!r} is not one this controller gave")
    return size or default, int(token or 0)


def _states(values: Sequence[int], known: frozenset, enum, prefix: str, field: str) -> tuple[str, ...]:
    if len(values) > 2 * len(known):
        raise InvalidMessage(f"{field} lists {len(values)} states; there are only {len(known)}")
    out = []
    for v in values:
        if v not in known:
            raise InvalidMessage(f"{field}: {v} is not a state this controller knows")
        out.append(enum.Name(v)[len(prefix):].lower())
    return tuple(dict.fromkeys(out))


def file_states(values: Sequence[int]) -> tuple[str, ...]:
    return _states(values, _FILE_STATES, pb.FileState, "FILE_STATE_", "file_states")


def transfer_states(values: Sequence[int]) -> tuple[str, ...]:
    return _states(values, _TRANSFER_STATES, pb.TransferState, "TRANSFER_STATE_", "states")


def get_status(req: pb.GetStatusRequest) -> tuple[int, int, tuple[str, ...]]:
    ident(req.transfer_id, "transfer_id", MAX_TRANSFER_ID)
    size, offset = page(req.page_token, req.page_size, 1000)
    return size, offset, file_states(req.file_states)


def list_transfers(req: pb.ListTransfersRequest) -> tuple[int, int, tuple[str, ...]]:
    beamline(req.beamline)
    size, offset = page(req.page_token, req.page_size, 100)
    return size, offset, transfer_states(req.states)


def cancel(req: pb.CancelTransferRequest) -> None:
    ident(req.transfer_id, "transfer_id", MAX_TRANSFER_ID)
    text(req.reason, "reason", MAX_TEXT)


# -- agents --------------------------------------------------------------------------------------

def register(req: pb.RegisterAgentRequest) -> None:
    ident(req.name, "name", required=False)
    text(req.hostname, "hostname", MAX_SHORT_TEXT)
    text(req.version, "version", MAX_SHORT_TEXT)


def heartbeat(req: pb.HeartbeatRequest) -> None:
    ident(req.agent_id, "agent_id")
    if len(req.lease_ids) > MAX_LIST:
        raise InvalidMessage(f"a heartbeat names at most {MAX_LIST} leases, got {len(req.lease_ids)}")
    for lid in req.lease_ids:
        ident(lid, "lease id")


def stream_message(msg: pb.LeasesRequest) -> None:
    ident(msg.agent_id, "agent_id", required=False)
    integer(msg.lease_request.want, "lease_request.want", 0, MAX_WANT)
    results(msg.results)


def results(items: Sequence[pb.ChunkResult]) -> None:
    """The batch itself: bounded, and every report_id usable as the key of its ack."""
    if len(items) > MAX_LIST:
        raise InvalidMessage(f"at most {MAX_LIST} results per message, got {len(items)}")
    for r in items:
        ident(r.report_id, "report_id")


def result_problem(r: pb.ChunkResult) -> str:
    """Why one result cannot be applied ("" when it can); such a result is acknowledged as rejected."""
    try:
        ident(r.lease_id, "lease_id")
        ident(r.transfer_id, "transfer_id", MAX_TRANSFER_ID)
        for name in ("file_id", "offset", "length", "bytes"):
            integer(getattr(r, name), name)
        if r.HasField("observed_source"):
            integer(r.observed_source.size, "observed_source.size")
        if not (math.isfinite(r.seconds) and 0 <= r.seconds <= MAX_SECONDS):
            raise InvalidMessage(f"seconds is {r.seconds}; it must be between 0 and {MAX_SECONDS:g}")
        ident(r.error_kind, "error_kind", MAX_SHORT_TEXT, required=False)
        text(r.error_message, "error_message", MAX_TEXT)
    except InvalidMessage as e:
        return str(e)
    return ""
