"""Wire messages <-> scheduler events and actions (pure mapping, no server)."""

from __future__ import annotations

import pytest

from domas.controller import convert
from domas.controller import events as ev
from domas.v1 import domas_pb2 as pb

INFO = ev.LeaseInfo("2-17", "t1", 42, 3, 3 * 4096, 4096, "root://s.example//a", "/d/a.domas-part",
                    5 * 4096, 1_790_000_000_123_456_789, 1_800_000_060.25, "none")


def test_lease_carries_every_field_and_a_relative_ttl():
    msg = pb.ChunkLease.FromString(convert.lease_to_pb(INFO, now=1_800_000_000.0).SerializeToString())
    assert (msg.lease_id, msg.transfer_id, msg.file_id, msg.chunk_index, msg.offset, msg.length) == (
        "2-17", "t1", 42, 3, 3 * 4096, 4096)
    assert (msg.src_url, msg.dst_url, msg.file_size) == ("root://s.example//a", "/d/a.domas-part", 5 * 4096)
    assert (msg.source.size, msg.source.mtime_ns) == (5 * 4096, 1_790_000_000_123_456_789)
    assert msg.expires_at.ToNanoseconds() == 1_800_000_060_250_000_000
    assert msg.ttl_seconds == pytest.approx(60.25)
    assert msg.verify == pb.VERIFY_MODE_NONE


def test_batch_joins_grants_and_revocations_of_one_agent():
    batch = convert.batch_to_pb([ev.GrantLeases("a", (INFO, INFO))], [ev.RevokeLeases("a", ("1-1", "1-2"))], 0.0)
    assert len(batch.leases) == 2 and list(batch.revoked_lease_ids) == ["1-1", "1-2"]


@pytest.mark.parametrize("side, expected", [
    (pb.ERROR_SIDE_UNSPECIFIED, ""), (pb.ERROR_SIDE_SOURCE, "source"), (pb.ERROR_SIDE_DESTINATION, "destination")])
def test_report_from_the_wire(side, expected):
    msg = pb.ChunkResult(report_id="r", lease_id="1-1", transfer_id="t", file_id=9, chunk_index=2, offset=8192,
                         length=4096, adler32=0xDEADBEEF, xxh3=2**64 - 1, bytes=4096, seconds=0.5,
                         error_kind="timeout", error_message="slow", retriable=True, error_side=side)
    r = convert.report_from_pb(msg)
    assert (r.report_id, r.lease_id, r.transfer_id, r.file_id, r.index, r.offset, r.length) == (
        "r", "1-1", "t", 9, 2, 8192, 4096)
    assert (r.adler32, r.xxh3, r.nbytes, r.seconds, r.error_kind, r.retriable) == (
        0xDEADBEEF, 2**64 - 1, 4096, 0.5, "timeout", True)
    assert r.error_side == expected and r.observed_size is None and not r.ok


def test_observed_source_is_passed_only_when_present():
    msg = pb.ChunkResult(error_kind="source_changed", observed_source=pb.SourceIdentity(size=0, mtime_ns=5))
    r = convert.report_from_pb(msg)
    assert (r.observed_size, r.observed_mtime_ns) == (0, 5)


@pytest.mark.parametrize("actions, outcome, message", [
    ([ev.ChunkDone("t", 1, 0, 1, 0, 0)], pb.REPORT_OUTCOME_ACCEPTED, ""),
    ([], pb.REPORT_OUTCOME_ACCEPTED, ""),
    ([ev.Duplicate("r")], pb.REPORT_OUTCOME_DUPLICATE, ""),
    ([ev.Rejected("unknown lease '9-9'", "r")], pb.REPORT_OUTCOME_REJECTED, "unknown lease '9-9'"),
])
def test_acks(actions, outcome, message):
    ack = convert.ack_from_actions("r", actions)
    assert (ack.report_id, ack.outcome, ack.message) == ("r", outcome, message)


@pytest.mark.parametrize("mode, expected", [
    (pb.VERIFY_MODE_UNSPECIFIED, "default"), (pb.VERIFY_MODE_FULL, "default"), (pb.VERIFY_MODE_NONE, "none"),
    (99, "default")])
def test_verify_modes(mode, expected):
    assert convert.verify_from_pb(mode) == expected


def test_options_fill_defaults():
    spec = convert.options_from_pb("t", "b1", 3, pb.TransferOptions(), 8 << 20)
    assert spec == ev.TransferSpec("t", "b1", 3, 8 << 20, "default", 0)
    spec = convert.options_from_pb("t", "b1", 0, pb.TransferOptions(chunk_size=4096, verify=pb.VERIFY_MODE_NONE,
                                                                  max_attempts=2), 8 << 20)
    assert (spec.chunk_size, spec.verify, spec.max_attempts) == (4096, "none", 2)


def test_every_state_name_has_a_wire_value():
    assert [convert.file_state_to_pb(s) for s in ev.STATES] == [1, 2, 3, 4, 5, 6]
    assert convert.transfer_state_to_pb("failed") == pb.TRANSFER_STATE_FAILED
