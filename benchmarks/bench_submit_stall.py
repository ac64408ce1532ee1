"""Benchmark: does a huge submission stall the controller's other RPCs? (issue 10)

Goal: a 10^6-file submission never stalls other RPCs for more than 100 ms.

    python benchmarks/bench_submit_stall.py [--files 1000000] [--reps 3]

A real `domas controller` process (its own state dir, confined to the work dir) is started per
repetition. A tree of N empty files (1000 per directory, made once and kept under
benchmarks/work/stall_tree_N) is submitted from one client thread while this process polls a
cheap RPC (GetStatus of a 1-file transfer submitted first) back to back; the figure is the
longest GetStatus round trip that overlapped the submission, next to the submission's own time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc

from domas.v1 import domas_pb2 as pb
from domas.v1 import domas_pb2_grpc as pb_grpc

WORK = Path(__file__).parent / "work"
TOKEN = "bench"
LIMIT = 1_100_000


def make_tree(n: int, name: str = "stall_tree") -> Path:
    root = WORK / f"{name}_{n}"
    done = WORK / f"{name}_{n}.complete"
    if done.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    for d in range(0, n, 1000):
        sub = root / f"d{d // 1000:05d}"
        sub.mkdir(parents=True)
        for i in range(min(1000, n - d)):
            os.close(os.open(sub / f"f{i:04d}.h5", os.O_CREAT | os.O_WRONLY, 0o644))
    done.write_text("")
    return root


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_controller(tmp: Path, port: int) -> subprocess.Popen:
    env = dict(os.environ, DOMAS_TOKEN=TOKEN,      # 10^6 files and their 1 000 directories in one transfer
               DOMAS_CONTROLLER_MAX_FILES_PER_TRANSFER=str(LIMIT))
    env.pop("DOMAS_CONFIG", None)
    log = open(tmp / "controller.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "domas.cli", "controller", "--listen", f"127.0.0.1:{port}",
                             "--state-dir", str(tmp / "state"), "--metrics-listen", "127.0.0.1:0",
                             "--root", str(WORK)], env=env, stdout=log, stderr=log)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    grpc.channel_ready_future(channel).result(timeout=60)
    channel.close()
    return proc


def probe_source(tmp: Path) -> Path:
    """A directory holding one 1-byte file: the small transfer submitted beside the big one."""
    small = tmp / "small"
    small.mkdir()
    (small / "one").write_bytes(b"x")
    return small


def one_run(tree: Path, n: int) -> dict:
    md = (("authorization", f"Bearer {TOKEN}"),)
    with tempfile.TemporaryDirectory(dir=WORK) as tmp_s:
        tmp = Path(tmp_s)
        small = probe_source(tmp)
        port = free_port()
        proc = start_controller(tmp, port)
        try:
            channel = grpc.insecure_channel(f"127.0.0.1:{port}")
            stub = pb_grpc.ControllerStub(channel)
            probe = stub.SubmitTransfer(pb.SubmitTransferRequest(sources=[str(small)], destination=str(tmp / "d1"),
                                                                 beamline="probe"), metadata=md).transfer_id
            result: dict = {}

            def submit() -> None:
                big = grpc.insecure_channel(f"127.0.0.1:{port}",
                                            options=[("grpc.max_send_message_length", 64 << 20)])
                t0 = time.perf_counter()
                resp = pb_grpc.ControllerStub(big).SubmitTransfer(
                    pb.SubmitTransferRequest(sources=[str(tree)], destination=str(tmp / "big"), beamline="big"),
                    metadata=md, timeout=600)
                result.update(t0=t0, t1=time.perf_counter(), files=resp.files)
                big.close()

            worker = threading.Thread(target=submit)
            samples: list[tuple[float, float]] = []
            worker.start()
            while worker.is_alive() or "t1" not in result:
                a = time.perf_counter()
                stub.GetStatus(pb.GetStatusRequest(transfer_id=probe), metadata=md, timeout=60)
                samples.append((a, time.perf_counter()))
                if not worker.is_alive():
                    break
            worker.join()
            during = [b - a for a, b in samples if b >= result["t0"] and a <= result["t1"]]
            worst = max((b - a, a) for a, b in samples if b >= result["t0"] and a <= result["t1"])
            result["worst_at"] = (worst[1] - result["t0"]) / (result["t1"] - result["t0"])
            channel.close()
        finally:
            proc.terminate()
            proc.wait(60)
    assert result["files"] == n, result
    return {"submit_s": result["t1"] - result["t0"], "max_ms": 1000 * max(during),
            "p99_ms": 1000 * sorted(during)[int(0.99 * (len(during) - 1))], "probes": len(during),
            "worst_at": result["worst_at"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=1_000_000)
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    tree = make_tree(args.files)
    print(f"tree of {args.files:,} files ready in {time.perf_counter() - t0:.1f} s", flush=True)
    runs = []
    for i in range(args.reps):
        r = one_run(tree, args.files)
        runs.append(r)
        print(f"run {i + 1}: submit {r['submit_s']:.2f} s, GetStatus max {r['max_ms']:.0f} ms, "
              f"p99 {r['p99_ms']:.0f} ms over {r['probes']} probes (worst at {100 * r['worst_at']:.0f} % of the submission); load {os.getloadavg()[0]:.2f}", flush=True)
    print(f"median: submit {statistics.median(r['submit_s'] for r in runs):.2f} s, GetStatus max "
          f"{statistics.median(r['max_ms'] for r in runs):.0f} ms (worst {max(r['max_ms'] for r in runs):.0f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
