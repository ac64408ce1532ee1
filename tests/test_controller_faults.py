"""Faults against the real controller and agents: a killed agent, a killed controller, an outage
the agents ride out on their spool, a wrong token, and malformed messages from a raw gRPC client.

Real processes only: `domas controller` and two `domas agent`s on free loopback ports, found ready
by polling, stopped by PID (or SIGKILLed, which is the fault). Leases last 3 s so expiry is quick.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import zlib
from pathlib import Path

import grpc
import pytest

from domas.controller import events as ev
from domas.controller.service import verify_and_rename
from domas.v1 import domas_pb2 as pb
from domas.v1 import domas_pb2_grpc as pb_grpc
from tests.fixtures.common import free_port, stop_process, wait_until
from tests.fixtures.controller import _agent, _cli, _controller, _env, _metrics, _sample, _status

MiB = 1 << 20
LEASE = {"DOMAS_CONTROLLER_LEASE_SECONDS": "3"}


def _write(root: Path, sizes: dict[str, int]) -> dict[str, bytes]:
    root.mkdir(parents=True, exist_ok=True)
    data = {name: os.urandom(size) for name, size in sizes.items()}
    for name, content in data.items():
        (root / name).write_bytes(content)
    return data


def _submit(tmp: Path, port: int, src: Path, dst: Path, chunk: str) -> str:
    out = _cli(tmp, "submit", str(src), f"{dst}/", "--chunk-size", chunk, "--controller", f"127.0.0.1:{port}")
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def _progress(port: int, tid: str) -> tuple[int, int]:
    """(bytes_done, files_done) straight from GetStatus: a quick poll (no CLI process start-up)."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        t = pb_grpc.ControllerStub(channel).GetStatus(pb.GetStatusRequest(transfer_id=tid), timeout=10,
                                                      metadata=(("authorization", "Bearer s3cret"),)).transfer
    return t.bytes_done, t.files_done


def _finished(port: int, tid: str) -> bool:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        t = pb_grpc.ControllerStub(channel).GetStatus(pb.GetStatusRequest(transfer_id=tid), timeout=10,
                                                      metadata=(("authorization", "Bearer s3cret"),)).transfer
    return t.state in (pb.TRANSFER_STATE_DONE, pb.TRANSFER_STATE_FAILED, pb.TRANSFER_STATE_CANCELLED)


def _chunks_ok(metrics_port: int) -> float:
    try:
        return _sample(_metrics(metrics_port), "domas_agent_chunks_total", 'result="ok"')
    except OSError:
        return 0.0


def _kill(proc) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def _assert_done_once(tmp: Path, port: int, tid: str, src: Path, dst: Path, data: dict[str, bytes]) -> dict:
    """Every file done exactly once (one record per destination), bytes and adler32 equal the source."""
    st = _status(tmp, port, tid)
    dsts = [f["dst"] for f in st["files"]]
    assert len(dsts) == len(set(dsts)) == len(data), dsts
    assert {f["state"] for f in st["files"]} == {"done"}
    assert (st["state"], st["files_done"], st["bytes_done"]) == ("done", len(data), sum(map(len, data.values())))
    by_name = {Path(f["dst"]).name: f["adler32"] for f in st["files"]}
    for name, content in data.items():
        got = (dst / src.name / name).read_bytes()
        assert got == content, name
        assert by_name[name] == f"{zlib.adler32(got):08x}" == f"{zlib.adler32(content):08x}"
    assert not list(dst.rglob("*.domas-part"))
    return st


class Cluster:
    """A controller and two `--streams 1` agents with known metrics ports; `stop()` ends what still runs."""

    def __init__(self, tmp: Path, agents: int = 2) -> None:
        self.tmp, self.env = tmp, _env(tmp, **LEASE)
        self.port, self.ctl_metrics = free_port(), free_port()
        self.ctl = self.start_controller()
        self.metrics: list[int] = []
        self.agents: list = []
        for _ in range(agents):
            self.start_agent()

    def start_controller(self):
        return _controller(self.tmp, self.port, self.ctl_metrics, env=self.env)

    def start_agent(self) -> int:
        """One more `--streams 1` agent, once its lease stream is up; its index."""
        i, m = len(self.agents), free_port()
        self.metrics.append(m)
        self.agents.append(_agent(self.tmp, self.port, f"a{i}", streams=1, metrics_port=m, env=self.env))
        wait_until(lambda: _sample(_metrics(m), "domas_agent_controller_connected") == 1, 30,
                   f"agent a{i} connected", self.agents[i])
        return i

    def stop(self) -> None:
        for p in [*self.agents, self.ctl]:
            stop_process(p)


def test_an_agent_killed_mid_file_leaves_its_chunks_to_the_other(tmp_path):
    src, dst = tmp_path / "scan", tmp_path / "out"
    data = _write(src, {"big.h5": 96 * MiB})
    c = Cluster(tmp_path)
    try:
        tid = _submit(tmp_path, c.port, src, dst, "512KiB")
        victim, survivor = 0, 1
        wait_until(lambda: _chunks_ok(c.metrics[victim]) >= 2, 60, "the victim agent reporting chunks")
        _kill(c.agents[victim])
        assert _progress(c.port, tid)[0] < len(data["big.h5"])       # killed mid-file, not after it
        wait_until(lambda: _finished(c.port, tid), 90, "the surviving agent finishing the file")
        _assert_done_once(tmp_path, c.port, tid, src, dst, data)
        assert _chunks_ok(c.metrics[survivor]) > 0
    finally:
        c.stop()


def test_a_controller_killed_mid_transfer_restarts_with_nothing_lost_or_twice(tmp_path):
    src, dst = tmp_path / "run", tmp_path / "out"
    data = _write(src, {f"f{i}.h5": 4 * MiB + i for i in range(8)})
    c = Cluster(tmp_path)
    try:
        tid = _submit(tmp_path, c.port, src, dst, "256KiB")
        wait_until(lambda: _progress(c.port, tid)[0] >= 4 * MiB, 60, "a quarter of the bytes done")
        _kill(c.ctl)
        assert not all((dst / src.name / name).exists() for name in data)   # mid-transfer
        c.ctl = c.start_controller()
        wait_until(lambda: _finished(c.port, tid), 90, "the transfer done after the restart")
        _assert_done_once(tmp_path, c.port, tid, src, dst, data)
    finally:
        c.stop()


@pytest.mark.parametrize("verify", [True, False])
def test_a_finalize_repeated_after_a_crash_finds_the_file_already_renamed(tmp_path, verify):
    """The controller died after renaming a file but before recording it; after the restart the
    file is finalized again. It must count as verified, not fail with "not found" (a bug found here)."""
    content = os.urandom(100_000)
    final = tmp_path / "f.h5"
    final.write_bytes(content)
    os.utime(final, ns=(1_600_000_000_123_456_789,) * 2)               # the source's, set by the finalize
    a = ev.FinalizeFile("t1", 1, f"{final}.domas-part", str(final), len(content), zlib.adler32(content), verify,
                        1_600_000_000_123_456_789)
    got = verify_and_rename(a)
    assert (got.error_kind, got.adler32) == ("", zlib.adler32(content) if verify else None)
    final.write_bytes(content[:-1] + bytes([content[-1] ^ 1]))       # another file than the one renamed
    if verify:
        assert verify_and_rename(a).error_kind == "not_found"
    final.unlink()
    assert verify_and_rename(a).error_kind == "not_found"


def test_agents_spool_reports_while_the_controller_is_down_and_replay_them_once(tmp_path):
    src, dst = tmp_path / "scan", tmp_path / "out"
    # enough chunks (96) that the agents are still busy when the controller dies, however fast the box
    data = _write(src, {"a.h5": 48 * MiB, "b.h5": 48 * MiB + 5})
    c = Cluster(tmp_path)
    spooled = lambda: sum(_sample(_metrics(m), "domas_agent_spooled_reports") for m in c.metrics)  # noqa: E731
    try:
        tid = _submit(tmp_path, c.port, src, dst, "1MiB")
        wait_until(lambda: sum(map(_chunks_ok, c.metrics)) >= 2, 60, "agents copying")
        _kill(c.ctl)
        wait_until(lambda: spooled() > 0, 30, "finished chunks waiting in an agent's spool")
        assert all(a.poll() is None for a in c.agents)           # the agents ride the outage out
        c.ctl = c.start_controller()
        wait_until(lambda: spooled() == 0, 60, "the spool replayed")
        wait_until(lambda: _finished(c.port, tid), 90, "the transfer done after the outage")
        st = _assert_done_once(tmp_path, c.port, tid, src, dst, data)
        assert st["errors"] == {}
    finally:
        c.stop()


def test_a_wrong_token_is_refused_in_one_sentence(tmp_path):
    port = free_port()
    src = tmp_path / "src"
    _write(src, {"x": 10})
    ctl = _controller(tmp_path, port, env=_env(tmp_path, DOMAS_TOKEN="a"))
    wrong = _env(tmp_path, DOMAS_TOKEN="b")
    try:
        out = _cli(tmp_path, "submit", str(src), f"{tmp_path / 'dst'}/", "--controller", f"127.0.0.1:{port}",
                   env=wrong)
        assert out.returncode == 77, out.stderr
        assert out.stderr.count("\n") == 1 and "token" in out.stderr and "Traceback" not in out.stderr
        agent = _agent(tmp_path, port, "intruder", env=wrong)
        agent.wait(timeout=60)
        log = (tmp_path / "agent-intruder.log").read_text()
        assert agent.returncode == 77 and "Traceback" not in log
        assert log.strip().splitlines()[-1] == ("domas: the controller at 127.0.0.1:%d refused this agent's "
                                                "token; set DOMAS_TOKEN to the controller's token" % port)
    finally:
        stop_process(ctl)


class RawAgent:
    """A hand-driven agent speaking domas.v1 with a raw stub, to send what a real agent never would."""

    def __init__(self, port: int, name: str = "raw") -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = pb_grpc.ControllerStub(self.channel)
        self.md = (("authorization", "Bearer s3cret"),)
        self.name = name
        self.outq: queue.Queue = queue.Queue()
        self.responses = None

    def register(self) -> None:
        self.stub.RegisterAgent(pb.RegisterAgentRequest(name=self.name, slots=1), metadata=self.md, timeout=10)

    def open(self, want: int):
        self.outq.put(pb.LeasesRequest(agent_id=self.name, lease_request=pb.LeaseRequest(want=want)))
        self.responses = self.stub.Leases(iter(self.outq.get, None), metadata=self.md)
        return self.responses

    def report(self, agent_id: str, *results: pb.ChunkResult) -> list[pb.ReportAck]:
        req = pb.ReportResultsRequest(agent_id=agent_id, results=list(results))
        return list(self.stub.ReportResults(req, metadata=self.md, timeout=10).acks)

    def close(self) -> None:
        self.outq.put(None)
        if self.responses is not None:
            self.responses.cancel()
        self.channel.close()


def _result(lease: pb.ChunkLease, rid: str, **changes) -> pb.ChunkResult:
    fields = dict(report_id=rid, lease_id=lease.lease_id, transfer_id=lease.transfer_id, file_id=lease.file_id,
                  chunk_index=lease.chunk_index, offset=lease.offset, length=lease.length, adler32=1,
                  bytes=lease.length, seconds=0.01)
    return pb.ChunkResult(**(fields | changes))


def _first_lease(responses) -> pb.ChunkLease:
    for msg in responses:
        if msg.batch.leases:
            return msg.batch.leases[0]
    raise AssertionError("the lease stream ended without a lease")


def test_malformed_and_out_of_range_messages_change_nothing(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    data = _write(src, {"f.h5": 1 * MiB + 3})
    port = free_port()
    ctl = _controller(tmp_path, port, env=_env(tmp_path, **LEASE))
    raw, agent = RawAgent(port), None
    try:
        tid = _submit(tmp_path, port, src, dst, "256KiB")
        raw.register()
        lease = _first_lease(raw.open(want=1))
        before = _status(tmp_path, port, tid)
        bad = [_result(lease, "r1", offset=5 * MiB),                        # past the end of the file
               _result(lease, "r2", length=lease.length + 1),               # not the leased range
               _result(lease, "r3", chunk_index=99, offset=99 * 256 * 1024),  # a chunk that does not exist
               _result(lease, "r4", lease_id="no-such-lease"),              # unknown lease id
               _result(lease, "r5", bytes=lease.length - 1),                # success with bytes missing
               _result(lease, "r6", transfer_id="nope"),                    # unknown transfer
               _result(lease, "r7", file_id=lease.file_id + 1000)]          # a file not in the transfer
        acks = raw.report("raw", *bad)
        assert [(a.report_id, a.outcome) for a in acks] == [(r.report_id, pb.REPORT_OUTCOME_REJECTED) for r in bad]
        assert all(a.message for a in acks)
        with pytest.raises(grpc.RpcError) as unregistered:       # was accepted before the fix
            raw.report("ghost", _result(lease, "r8"))
        assert unregistered.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        with pytest.raises(grpc.RpcError) as beat:
            raw.stub.Heartbeat(pb.HeartbeatRequest(agent_id="ghost"), metadata=raw.md, timeout=10)
        assert beat.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        ghost = RawAgent(port, "ghost")
        with pytest.raises(grpc.RpcError) as stream:
            list(ghost.open(want=1))
        assert stream.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        ghost.close()
        raw.outq.put(pb.LeasesRequest(agent_id="raw", lease_request=pb.LeaseRequest(want=2**32 - 1)))
        assert _status(tmp_path, port, tid) == before
        raw.close()                                   # the raw agent's lease goes back to the queue
        agent = _agent(tmp_path, port, "a1", env=_env(tmp_path, **LEASE))
        wait_until(lambda: _finished(port, tid), 60, "the transfer done by a real agent")
        _assert_done_once(tmp_path, port, tid, src, dst, data)
        more = _cli(tmp_path, "submit", str(src), f"{tmp_path / 'dst2'}/", "--wait", "--json", "--controller",
                    f"127.0.0.1:{port}")
        assert more.returncode == 0 and json.loads(more.stdout)["state"] == "done", more.stderr
    finally:
        raw.close()
        for p in (agent, ctl):
            if p is not None:
                stop_process(p)
