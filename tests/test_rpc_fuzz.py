"""Hostile requests over every Controller RPC (hypothesis over the proto messages), sent to a real
`domas controller` process: no call may end UNKNOWN or INTERNAL, every refusal is one sentence,
the controller stays up and logs no traceback.
"""

from __future__ import annotations

from types import SimpleNamespace

import grpc
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from domas.v1 import domas_pb2 as pb
from domas.v1 import domas_pb2_grpc as pb_grpc
from tests.fixtures.common import free_port, stop_process
from tests.fixtures.controller import _controller

MD = (("authorization", "Bearer s3cret"),)
BAD = (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL)

U32, I32 = st.integers(0, 2**32 - 1), st.integers(-2**31, 2**31 - 1)
U64, I64 = st.integers(0, 2**64 - 1), st.integers(-2**63, 2**63 - 1)
EDGE_INTS = st.sampled_from([0, 1, 2**31 - 1, 2**32 - 1, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1])
ENUM = st.integers(-3, 12)
DOUBLE = st.floats(allow_nan=True, allow_infinity=True)
HOSTILE = st.sampled_from(["", ".", "..", "/", "//", "\x00", "a\x00b", "\n", "\u00b2", "9" * 40, "-1",
                           "/etc/shadow", "/etc/", "file:///etc/passwd", "file://etc", "root://h//x",
                           "root://h/x", "http://x/", "C:\\x", "~/x", "x" * 300, "é" * 200, "\ud7ff"])


IDS = st.from_regex(r"\A[a-z0-9]{1,12}\Z")


def _u64() -> st.SearchStrategy[int]:
    return st.one_of(st.integers(0, 16), st.integers(0, 1 << 24), U64, EDGE_INTS)


def _text(root: str) -> st.SearchStrategy[str]:
    """Strings: plausible ids, paths inside and just outside the root, random, hostile, long."""
    inside = st.sampled_from([f"{root}/src", f"{root}/src/", f"{root}/src/f", f"{root}/missing", f"{root}/dst/",
                              f"{root}/dst", f"file://{root}/src/f", f"{root}//src/./f"])
    return st.one_of(
        IDS, inside, st.text(max_size=40), HOSTILE,
        st.builds(lambda s: f"{root}/{s}", st.text(max_size=30)),
        st.builds(lambda s: f"{root}/../{s}", st.text(max_size=10)),
        st.builds(lambda n, c: c * n, st.sampled_from([65, 129, 300, 5000, 100_000]), st.sampled_from("a/\x00.")))


@st.composite
def _plausible_submit(draw, root: str, hostile: pb.SubmitTransferRequest) -> pb.SubmitTransferRequest:
    """A submission that would be accepted, with at most one field taken from a hostile one."""
    inside = st.sampled_from([f"{root}/src", f"{root}/src/", f"{root}/src/f", f"{root}/missing"])
    req = pb.SubmitTransferRequest(sources=draw(st.lists(inside, min_size=1, max_size=3)),
                                   destination=draw(st.sampled_from([f"{root}/dst/", f"{root}/dst2", f"{root}/d/"])),
                                   beamline=draw(IDS), priority=draw(st.integers(-5, 5)),
                                   options=pb.TransferOptions(chunk_size=draw(st.sampled_from([0, 1 << 16, 1 << 30])),
                                                              verify=draw(st.integers(0, 2)),
                                                              overwrite=draw(st.booleans())),
                                   request_id=draw(st.one_of(st.just(""), IDS)))
    field = draw(st.sampled_from(["", "sources", "destination", "beamline", "priority", "options", "request_id"]))
    if field:
        req.ClearField(field)
        if field == "sources":
            req.sources.extend(hostile.sources)
        elif field == "options":
            req.options.CopyFrom(hostile.options)
        else:
            setattr(req, field, getattr(hostile, field))
    return req


def _strategies(root: str) -> dict:
    t = _text(root)
    opts = st.builds(pb.TransferOptions, chunk_size=st.one_of(st.just(0), st.just(1 << 16), _u64()), verify=ENUM,
                     max_attempts=st.one_of(st.integers(0, 5), U32), recursive=st.booleans(),
                     overwrite=st.booleans())
    ident = st.builds(pb.SourceIdentity, size=_u64(), mtime_ns=I64)
    result = st.builds(pb.ChunkResult, report_id=t, lease_id=t, transfer_id=t, file_id=_u64(), chunk_index=U32,
                       offset=_u64(), length=_u64(), adler32=U32, xxh3=_u64(), bytes=_u64(), seconds=DOUBLE,
                       error_kind=t, error_message=t, retriable=st.booleans(), error_side=ENUM,
                       observed_source=ident)
    agent = st.one_of(st.just("fuzz-agent"), t)
    small = st.one_of(st.integers(0, 100), U32)
    hostile = st.builds(pb.SubmitTransferRequest, sources=st.lists(t, max_size=4), destination=t,
                        beamline=st.one_of(IDS, t), priority=st.one_of(st.integers(-5, 5), I32), options=opts,
                        request_id=t)
    return {
        "SubmitTransfer": st.one_of(hostile, hostile.flatmap(lambda h: _plausible_submit(root, h))),
        "GetStatus": st.builds(pb.GetStatusRequest, transfer_id=t, include_files=st.booleans(), page_size=small,
                               page_token=st.one_of(st.just(""), st.integers(0, 50).map(str), t), file_states=st.lists(ENUM, max_size=20)),
        "ListTransfers": st.builds(pb.ListTransfersRequest, beamline=t, states=st.lists(ENUM, max_size=20),
                                   page_size=small, page_token=st.one_of(st.just(""), st.integers(0, 50).map(str), t)),
        "CancelTransfer": st.builds(pb.CancelTransferRequest, transfer_id=t, reason=t),
        "RegisterAgent": st.builds(pb.RegisterAgentRequest, name=t, hostname=t, slots=U32, version=t),
        "Heartbeat": st.builds(pb.HeartbeatRequest, agent_id=agent, lease_ids=st.lists(t, max_size=4),
                               spooled_results=U32),
        "ReportResults": st.builds(pb.ReportResultsRequest, agent_id=agent, results=st.lists(result, max_size=3)),
        "Leases": st.builds(pb.LeasesRequest, agent_id=agent,
                            lease_request=st.builds(pb.LeaseRequest, want=small), results=st.lists(result, max_size=2)),
    }


@pytest.fixture(scope="module")
def ctl(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    root = tmp / "root"
    (root / "src").mkdir(parents=True)
    (root / "src" / "f").write_bytes(b"x" * 100)
    port = free_port()
    proc = _controller(tmp, port, roots=(root,))
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = pb_grpc.ControllerStub(channel)
    stub.RegisterAgent(pb.RegisterAgentRequest(name="fuzz-agent"), metadata=MD, timeout=10)
    yield SimpleNamespace(stub=stub, root=str(root), proc=proc)
    channel.close()
    stop_process(proc)
    log = (tmp / f"controller-{port}.log").read_text()
    assert "Traceback" not in log and "unexpected" not in log.lower(), log[-3000:]


def _call(stub, rpc: str, request):
    if rpc == "Leases":     # one message on the work stream, then the client closes its side
        return list(stub.Leases(iter([request]), metadata=MD, timeout=5))
    return getattr(stub, rpc)(request, metadata=MD, timeout=10)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=st.data())
def test_hostile_requests_never_crash_the_controller(ctl, data):
    strategies = _strategies(ctl.root)
    rpc = data.draw(st.sampled_from(sorted(strategies)), label="rpc")
    request = data.draw(strategies[rpc], label="request")
    try:
        _call(ctl.stub, rpc, request)
        event(f"{rpc}: OK")
    except grpc.RpcError as e:
        event(f"{rpc}: {e.code().name}")
        assert e.code() not in BAD, (rpc, e.code(), e.details())
        if e.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
            assert "\n" not in (e.details() or "") and "Traceback" not in (e.details() or "")
    assert ctl.proc.poll() is None, "the controller died"
