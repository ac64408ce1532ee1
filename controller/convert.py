"""Translation between the wire messages (domas.v1) and the scheduler's events and actions.

Invariants: the one place where protobuf meets the pure core; every function is a total,
side-effect-free mapping (no clock: `now` is passed in). Enum zero values map to the defaults
("default" verify mode, unknown error side). Times are seconds since the Unix epoch.
"""

from __future__ import annotations

import math

from google.protobuf.timestamp_pb2 import Timestamp

from domas.controller import events as ev
from domas.v1 import domas_pb2 as pb

_VERIFY_TO_PB = {"default": pb.VERIFY_MODE_FULL, "none": pb.VERIFY_MODE_NONE}
_VERIFY_FROM_PB = {pb.VERIFY_MODE_UNSPECIFIED: "default", pb.VERIFY_MODE_FULL: "default",
                   pb.VERIFY_MODE_NONE: "none"}
_SIDE_FROM_PB = {pb.ERROR_SIDE_SOURCE: "source", pb.ERROR_SIDE_DESTINATION: "destination"}
_STATE_TO_PB = {"queued": pb.FILE_STATE_QUEUED, "active": pb.FILE_STATE_ACTIVE,
                "verifying": pb.FILE_STATE_VERIFYING, "done": pb.FILE_STATE_DONE,
                "failed": pb.FILE_STATE_FAILED, "cancelled": pb.FILE_STATE_CANCELLED}
_TRANSFER_STATE_TO_PB = {"queued": pb.TRANSFER_STATE_QUEUED, "active": pb.TRANSFER_STATE_ACTIVE,
                         "done": pb.TRANSFER_STATE_DONE, "failed": pb.TRANSFER_STATE_FAILED,
                         "cancelled": pb.TRANSFER_STATE_CANCELLED}


def timestamp(seconds: float) -> Timestamp:
    whole = math.floor(seconds)
    nanos = round((seconds - whole) * 1e9)
    if nanos >= 1_000_000_000:
        whole, nanos = whole + 1, nanos - 1_000_000_000
    return Timestamp(seconds=whole, nanos=nanos)


def verify_to_pb(mode: str) -> int:
    return _VERIFY_TO_PB[mode]


def verify_from_pb(mode: int) -> str:
    """Unknown future values fall back to the safe default (full verification)."""
    return _VERIFY_FROM_PB.get(mode, "default")


def file_state_to_pb(state: str) -> int:
    return _STATE_TO_PB[state]


def transfer_state_to_pb(state: str) -> int:
    return _TRANSFER_STATE_TO_PB[state]


def lease_to_pb(info: ev.LeaseInfo, now: float, expires_at: Timestamp | None = None) -> pb.ChunkLease:
    return pb.ChunkLease(
        lease_id=info.lease_id, transfer_id=info.transfer_id, file_id=info.file_id, chunk_index=info.index,
        offset=info.offset, length=info.length, src_url=info.src_url, dst_url=info.dst_url,
        file_size=info.file_size, source=pb.SourceIdentity(size=info.file_size, mtime_ns=info.mtime_ns,
                                                         version=info.version),
        expires_at=expires_at or timestamp(info.expires_at), ttl_seconds=max(0.0, info.expires_at - now),
        verify=_VERIFY_TO_PB[info.verify])


def batch_to_pb(grants: list[ev.GrantLeases], revokes: list[ev.RevokeLeases], now: float) -> pb.LeaseBatch:
    """One agent's batch from the actions addressed to it (leases granted together share an expiry)."""
    stamps: dict[float, Timestamp] = {}
    leases = []
    for g in grants:
        for x in g.leases:
            ts = stamps.get(x.expires_at)
            if ts is None:
                ts = stamps[x.expires_at] = timestamp(x.expires_at)
            leases.append(lease_to_pb(x, now, ts))
    return pb.LeaseBatch(leases=leases, revoked_lease_ids=[i for r in revokes for i in r.lease_ids])


def report_from_pb(msg: pb.ChunkResult) -> ev.ChunkReport:
    observed = bool(msg.error_kind) and msg.HasField("observed_source")
    return ev.ChunkReport(
        report_id=msg.report_id, lease_id=msg.lease_id, transfer_id=msg.transfer_id, file_id=msg.file_id,
        index=msg.chunk_index, offset=msg.offset, length=msg.length, adler32=msg.adler32, xxh3=msg.xxh3,
        nbytes=msg.bytes, seconds=msg.seconds, error_kind=msg.error_kind, error_message=msg.error_message,
        retriable=msg.retriable, error_side=_SIDE_FROM_PB.get(msg.error_side, ""),
        observed_size=msg.observed_source.size if observed else None,
        observed_mtime_ns=msg.observed_source.mtime_ns if observed else None,
        observed_version=msg.observed_source.version if observed else None)


def ack_from_actions(report_id: str, actions: list) -> pb.ReportAck:
    """What happened to one report, from the actions its ChunkReported event produced."""
    for a in actions:
        if isinstance(a, ev.Rejected):
            return pb.ReportAck(report_id=report_id, outcome=pb.REPORT_OUTCOME_REJECTED, message=a.reason)
        if isinstance(a, ev.Duplicate):
            return pb.ReportAck(report_id=report_id, outcome=pb.REPORT_OUTCOME_DUPLICATE)
    return pb.ReportAck(report_id=report_id, outcome=pb.REPORT_OUTCOME_ACCEPTED)


def options_from_pb(transfer_id: str, beamline: str, priority: int, opts: pb.TransferOptions,
                    default_chunk_size: int) -> ev.TransferSpec:
    return ev.TransferSpec(transfer_id, beamline, priority, opts.chunk_size or default_chunk_size,
                           verify_from_pb(opts.verify), opts.max_attempts)
