"""Benchmark: does the part-file janitor stall the controller when many files are queued?

    python benchmarks/bench_janitor_stall.py [--files 1000000] [--seconds 20] [--lease 2] [--old PYTHONPATH]

A real `domas controller` (lease time --lease, which is also how often a directory finalized into
is swept) gets a tree of N empty files (benchmarks/work/janitor_tree_N, 1000 per directory, made
once) queued in one transfer, then one `domas agent` (2 streams) starts copying: every file it
finishes makes its directory due for a sweep. For --seconds this process polls a cheap RPC
(GetStatus of a 1-file transfer) back to back; the figures are the longest round trip, the 99th
percentile, and how many took over 100 ms. The code before the change runs the same way with
--old pointing at an installed copy of it (`pip install --no-deps --target DIR <checkout>`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

from domas.v1 import domas_pb2 as pb
from domas.v1 import domas_pb2_grpc as pb_grpc

sys.path.insert(0, str(Path(__file__).parent))
from bench_submit_stall import LIMIT, TOKEN, WORK, free_port, make_tree, probe_source  # noqa: E402


def _env(lease: float, old: str) -> dict:
    env = dict(os.environ, DOMAS_TOKEN=TOKEN, DOMAS_CONTROLLER_MAX_FILES_PER_TRANSFER=str(LIMIT),
               DOMAS_CONTROLLER_LEASE_SECONDS=str(lease))
    env.pop("DOMAS_CONFIG", None)
    if old:
        env["PYTHONPATH"] = old
    return env


def one_run(tree: Path, n: int, seconds: float, lease: float, old: str) -> dict:
    md = (("authorization", f"Bearer {TOKEN}"),)
    env = _env(lease, old)
    with tempfile.TemporaryDirectory(dir=WORK) as tmp_s:
        tmp = Path(tmp_s)
        small = probe_source(tmp)
        port = free_port()
        log = open(tmp / "processes.log", "ab")
        procs = [subprocess.Popen([sys.executable, "-m", "domas.cli", "controller", "--listen", f"127.0.0.1:{port}",
                                   "--state-dir", str(tmp / "state"), "--metrics-listen", "127.0.0.1:0",
                                   "--root", str(WORK)], env=env, stdout=log, stderr=log, cwd=tmp)]
        try:
            channel = grpc.insecure_channel(f"127.0.0.1:{port}")
            grpc.channel_ready_future(channel).result(timeout=60)
            stub = pb_grpc.ControllerStub(channel)
            probe = stub.SubmitTransfer(pb.SubmitTransferRequest(sources=[str(small)], destination=str(tmp / "d1"),
                                                                 beamline="probe"), metadata=md).transfer_id
            t0 = time.perf_counter()
            big = stub.SubmitTransfer(pb.SubmitTransferRequest(sources=[str(tree)], destination=str(tmp / "big"),
                                                               beamline="big"), metadata=md, timeout=600)
            submit_s = time.perf_counter() - t0
            assert big.files == n, big
            procs.append(subprocess.Popen([sys.executable, "-m", "domas.cli", "agent", "--controller",
                                           f"127.0.0.1:{port}", "--name", "dtn", "--streams", "2", "--state-dir",
                                           str(tmp / "agent"), "--metrics-listen", "127.0.0.1:0"],
                                          env=env, stdout=log, stderr=log, cwd=tmp))
            samples = []
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                a = time.perf_counter()
                stub.GetStatus(pb.GetStatusRequest(transfer_id=probe), metadata=md, timeout=60)
                samples.append(time.perf_counter() - a)
            done = stub.GetStatus(pb.GetStatusRequest(transfer_id=big.transfer_id), metadata=md).transfer.files_done
            channel.close()
        finally:
            for p in reversed(procs):
                p.terminate()
                p.wait(60)
            log.close()
    samples.sort()
    return {"submit_s": submit_s, "max_ms": 1000 * samples[-1], "p99_ms": 1000 * samples[int(0.99 * (len(samples) - 1))],
            "over_100ms": sum(1 for s in samples if s > 0.1), "probes": len(samples), "copied": done}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=1_000_000)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--lease", type=float, default=2.0)
    p.add_argument("--old", default="", help="PYTHONPATH of an installed copy of the code before")
    args = p.parse_args(argv)
    tree = make_tree(args.files, "janitor_tree")
    r = one_run(tree, args.files, args.seconds, args.lease, args.old)
    print(f"{'old' if args.old else 'new'}: {args.files:,} queued, submit {r['submit_s']:.1f} s; over {args.seconds:g} s "
          f"of copying ({r['copied']} files done): GetStatus max {r['max_ms']:.0f} ms, p99 {r['p99_ms']:.1f} ms, "
          f"{r['over_100ms']} of {r['probes']} over 100 ms; load {os.getloadavg()[0]:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
