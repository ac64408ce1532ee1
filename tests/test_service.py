"""The Controller gRPC service in-process on a free port, driven by a scripted agent over the wire."""

from __future__ import annotations

import asyncio
import os
import random
import zlib
from pathlib import Path

import grpc
import pytest

from domas.controller.scheduler import Scheduler, SchedulerConfig
from domas.controller.service import ControllerService
from domas.controller.state import StateStore
from domas.transfer.paths import parse_roots
from domas.v1 import domas_pb2 as pb
from domas.v1 import domas_pb2_grpc as pb_grpc

MD = (("authorization", "Bearer tok"),)
CS = 4096


class Wire:
    """A started server and a client stub (both on the running loop)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp

    async def __aenter__(self) -> "Wire":
        self.store = StateStore(self.tmp / "state.sqlite")
        sched = Scheduler(SchedulerConfig(lease_seconds=30.0), random.Random(1), self.store.epoch)
        self.service = ControllerService(sched, self.store, token="tok", default_chunk_size=CS,
                                         roots=parse_roots([("root", str(self.tmp))]))
        self.server = grpc.aio.server()
        pb_grpc.add_ControllerServicer_to_server(self.service, self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        self.stub = pb_grpc.ControllerStub(self.channel)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.channel.close()
        await self.server.stop(None)
        await self.service.close()
        self.store.close()

    async def submit(self, sizes: list[int]) -> tuple[str, dict[str, bytes]]:
        src = self.tmp / "src"
        src.mkdir(exist_ok=True)
        data = {}
        for i, size in enumerate(sizes):
            data[str(src / f"f{i}")] = os.urandom(size)
            (src / f"f{i}").write_bytes(data[str(src / f"f{i}")])
        resp = await self.stub.SubmitTransfer(pb.SubmitTransferRequest(
            sources=[str(src)], destination=str(self.tmp / "dst") + "/", beamline="b1"), metadata=MD)
        return resp.transfer_id, data


def _result(lease: pb.ChunkLease, data: bytes, rid: str, **changes) -> pb.ChunkResult:
    part = data[lease.offset:lease.offset + lease.length]
    fields = dict(report_id=rid, lease_id=lease.lease_id, transfer_id=lease.transfer_id, file_id=lease.file_id,
                  chunk_index=lease.chunk_index, offset=lease.offset, length=lease.length,
                  adler32=zlib.adler32(part), bytes=len(part), seconds=0.01)
    fields.update(changes)
    return pb.ChunkResult(**fields)


def _write(lease: pb.ChunkLease, data: bytes) -> None:
    with open(lease.dst_url, "r+b" if os.path.exists(lease.dst_url) else "wb") as fh:
        fh.seek(lease.offset)
        fh.write(data[lease.offset:lease.offset + lease.length])


async def _next(responses, want: str = "leases"):
    while True:
        msg = await asyncio.wait_for(responses.read(), 10)
        if want == "leases" and msg.batch.leases:
            return list(msg.batch.leases)
        if want == "acks" and msg.acks:
            return list(msg.acks)
        if want == "revoked" and msg.batch.revoked_lease_ids:
            return list(msg.batch.revoked_lease_ids)


def test_wrong_token_and_unregistered_stream_are_refused(tmp_path, event_loop_kind):
    async def body():
        async with Wire(tmp_path) as w:
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await w.stub.RegisterAgent(pb.RegisterAgentRequest(name="a"), metadata=(("authorization", "x"),))
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
            call = w.stub.Leases(metadata=MD)
            await call.write(pb.LeasesRequest(agent_id="ghost", lease_request=pb.LeaseRequest(want=1)))
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await call.read()
            assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await w.stub.GetStatus(pb.GetStatusRequest(transfer_id="nope"), metadata=MD)
            assert e.value.code() == grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await w.stub.ListTransfers(pb.ListTransfersRequest(page_token="x"), metadata=MD)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    event_loop_kind(body())


def test_stream_acks_each_report_and_a_bad_destination_is_copied_again(tmp_path, event_loop_kind):
    async def body():
        async with Wire(tmp_path) as w:
            tid, data = await w.submit([2 * CS])
            reg = await w.stub.RegisterAgent(pb.RegisterAgentRequest(name="a1"), metadata=MD)
            assert reg.agent_id == "a1" and reg.lease_seconds == 30.0
            call = w.stub.Leases(metadata=MD)
            await call.write(pb.LeasesRequest(agent_id="a1", lease_request=pb.LeaseRequest(want=2)))
            leases = await _next(call)
            assert [(x.chunk_index, x.offset, x.length) for x in leases] == [(0, 0, CS), (1, CS, CS)]
            assert leases[0].dst_url.endswith(".domas-part") and leases[0].source.size == 2 * CS
            src = data[leases[0].src_url]
            bad = _result(leases[0], src, "r-bad", offset=1)
            await call.write(pb.LeasesRequest(agent_id="a1", results=[bad]))
            (ack,) = await _next(call, "acks")
            assert ack.outcome == pb.REPORT_OUTCOME_REJECTED and "says offset=1" in ack.message
            _write(leases[0], src)
            _write(leases[1], src)
            # The agents read back what they write and the controller never reads data files; what it
            # can see without reading is the size: a part file that lost its tail is copied again.
            os.truncate(leases[1].dst_url, 2 * CS - 1)
            results = [_result(x, src, f"r{x.chunk_index}") for x in leases]
            await call.write(pb.LeasesRequest(agent_id="a1", results=results + [results[0]],
                                              lease_request=pb.LeaseRequest(want=2)))
            acks = await _next(call, "acks")
            assert [a.outcome for a in acks] == [pb.REPORT_OUTCOME_ACCEPTED, pb.REPORT_OUTCOME_ACCEPTED,
                                                 pb.REPORT_OUTCOME_DUPLICATE]
            again = await _next(call)                      # wrong size at finalize: the file is copied again
            assert sorted(x.chunk_index for x in again) == [0, 1]
            for x in again:
                _write(x, src)
            replay = await w.stub.ReportResults(pb.ReportResultsRequest(
                agent_id="a1", results=[_result(x, src, f"again{x.chunk_index}") for x in again]), metadata=MD)
            assert [a.outcome for a in replay.acks] == [pb.REPORT_OUTCOME_ACCEPTED] * 2
            for _ in range(100):
                st = await w.stub.GetStatus(pb.GetStatusRequest(transfer_id=tid, include_files=True), metadata=MD)
                if st.transfer.state == pb.TRANSFER_STATE_DONE:
                    break
                await asyncio.sleep(0.05)
            assert st.transfer.state == pb.TRANSFER_STATE_DONE
            assert st.files[0].adler32 == f"{zlib.adler32(src):08x}"
            assert Path(st.files[0].dst_url).read_bytes() == src
            call.cancel()
    event_loop_kind(body())


def test_cancel_revokes_on_the_stream_and_a_closed_stream_returns_leases(tmp_path, event_loop_kind):
    async def body():
        async with Wire(tmp_path) as w:
            tid, _ = await w.submit([CS, CS, CS])
            await w.stub.RegisterAgent(pb.RegisterAgentRequest(name="a1"), metadata=MD)
            await w.stub.RegisterAgent(pb.RegisterAgentRequest(name="a2"), metadata=MD)
            first = w.stub.Leases(metadata=MD)
            await first.write(pb.LeasesRequest(agent_id="a1", lease_request=pb.LeaseRequest(want=3)))
            held = await _next(first)
            assert len(held) == 3
            hb = await w.stub.Heartbeat(pb.HeartbeatRequest(agent_id="a1", lease_ids=[held[0].lease_id, "1-999"]),
                                        metadata=MD)
            assert list(hb.revoked_lease_ids) == ["1-999"]
            await first.done_writing()
            second = w.stub.Leases(metadata=MD)
            await second.write(pb.LeasesRequest(agent_id="a2", lease_request=pb.LeaseRequest(want=3)))
            moved = await _next(second)
            assert sorted(x.file_id for x in moved) == sorted(x.file_id for x in held)
            resp = await w.stub.CancelTransfer(pb.CancelTransferRequest(transfer_id=tid), metadata=MD)
            assert resp.transfer.state == pb.TRANSFER_STATE_CANCELLED
            assert sorted(await _next(second, "revoked")) == sorted(x.lease_id for x in moved)
            listed = await w.stub.ListTransfers(pb.ListTransfersRequest(states=[pb.TRANSFER_STATE_CANCELLED]),
                                                metadata=MD)
            assert [t.transfer_id for t in listed.transfers] == [tid]
            page = await w.stub.GetStatus(pb.GetStatusRequest(transfer_id=tid, include_files=True, page_size=2),
                                          metadata=MD)
            assert [f.file_id for f in page.files] == [1, 2] and page.next_page_token == "2"
            page = await w.stub.GetStatus(pb.GetStatusRequest(transfer_id=tid, include_files=True, page_size=2,
                                                              page_token=page.next_page_token), metadata=MD)
            assert [(f.file_id, f.state) for f in page.files] == [(3, pb.FILE_STATE_CANCELLED)]
            assert page.next_page_token == ""
            second.cancel()
    event_loop_kind(body())
