"""Hostile submissions against a real controller: how fast and how small each refusal is, and what
the root and symlink checks cost a legitimate transfer.

    python benchmarks/bench_hostile.py           # ~1 min; writes results/hostile.md

Invariants:
- One `domas controller` process confined with --root to a scratch directory; every hostile
  request goes over gRPC with the shared token, exactly as a client holding it would send it.
- A figure is the wall time of the one call and the controller's RSS (VmRSS, VmHWM) right after.
- The planning cost is measured in-process on a 100 000-file tree (100 directories x 1000 empty
  files): `expand` alone, then the per-file root and symlink checks that follow it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import free_port, port_open  # noqa: E402

HERE = Path(__file__).resolve().parent
DOMAS = [sys.executable, "-m", "domas.cli"]
MD = (("authorization", "Bearer bench"),)


def rss(pid: int) -> tuple[int, int]:
    d = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(d["VmRSS"].split()[0]) // 1024, int(d["VmHWM"].split()[0]) // 1024


def start_controller(work: Path, root: Path):
    import os
    import subprocess

    port = free_port()
    env = dict(os.environ, DOMAS_TOKEN="bench", DOMAS_STATE_DIR=str(work / "state"))
    env.pop("DOMAS_CONFIG", None)
    proc = subprocess.Popen([*DOMAS, "controller", "--listen", f"127.0.0.1:{port}", "--state-dir", str(work / "ctl"),
                             "--metrics-listen", f"127.0.0.1:{free_port()}", "--root", str(root)],
                            env=env, stdout=open(work / "controller.log", "ab"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while not port_open(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the controller did not start")
        time.sleep(0.05)
    return proc, port


def hostile_cases(root: Path) -> list[tuple[str, dict]]:
    one = str(root / "src" / "a.bin")
    return [
        ("10^6 empty sources", dict(sources=[""] * 1_000_000)),
        ("100 000 copies of one source to one destination", dict(sources=[one] * 100_000)),
        ("100 000 distinct missing sources", dict(sources=[f"{root}/missing/{i}" for i in range(100_000)])),
        ("/etc/shadow as a source", dict(sources=["/etc/shadow"])),
        ("chunk_size 2^63", dict(options={"chunk_size": 2**63})),
        ("100 kB beamline name", dict(beamline="b" * 100_000)),
    ]


def run_hostile(work: Path) -> list[tuple[str, str, float, tuple[int, int]]]:
    from domas.v1 import domas_pb2 as pb
    from domas.v1 import domas_pb2_grpc as pb_grpc

    root = work / "root"
    (root / "src").mkdir(parents=True, exist_ok=True)
    (root / "src" / "a.bin").write_bytes(b"a" * 1000)
    proc, port = start_controller(work, root)
    rows = []
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 64 << 20)])
        stub = pb_grpc.ControllerStub(channel)
        rows.append(("(idle controller)", "", 0.0, rss(proc.pid)))
        for name, fields in hostile_cases(root):
            opts = pb.TransferOptions(**fields.pop("options", {}))
            req = pb.SubmitTransferRequest(**({"sources": [str(root / "src")], "destination": f"{root}/dst/",
                                               "beamline": "b1"} | fields), options=opts)
            t0 = time.perf_counter()
            try:
                stub.SubmitTransfer(req, metadata=MD, timeout=120)
                outcome = "ACCEPTED"
            except grpc.RpcError as e:
                outcome = f"{e.code().name}: {e.details()[:90]}"
            rows.append((name, outcome, time.perf_counter() - t0, rss(proc.pid)))
        channel.close()
    finally:
        proc.terminate()
        proc.wait(30)
    return rows


def planning_cost(work: Path, dirs: int = 100, per_dir: int = 1000) -> tuple[int, float, float]:
    from domas.transfer.expand import expand
    from domas.controller.service import _confine
    from domas.transfer.paths import Confinement, parse_roots

    root = work / "plan"
    for d in range(dirs):
        (root / "src" / f"d{d}").mkdir(parents=True, exist_ok=True)
        for i in range(per_dir):
            (root / "src" / f"d{d}" / f"f{i}").touch()
    t0 = time.perf_counter()
    plan = expand([str(root / "src")], f"{root}/dst/", max_files=10**6)
    t1 = time.perf_counter()
    _confine(plan, Confinement(parse_roots([("--root", str(root))])))
    return len(plan.jobs), t1 - t0, time.perf_counter() - t1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "hostile.md")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="domas-hostile-") as tmp:
        rows = run_hostile(Path(tmp))
        files, t_expand, t_confine = planning_cost(Path(tmp))
    lines = ["# Hostile submissions against a confined controller", "",
             "Command: `python benchmarks/bench_hostile.py`", "",
             "| request | answer | seconds | controller RSS / peak (MiB) |", "|---|---|---|---|"]
    lines += [f"| {n} | {o.replace('|', '/')} | {s:.2f} | {r[0]} / {r[1]} |" for n, o, s, r in rows]
    lines += ["", f"Planning {files:,} files: `expand` {t_expand:.2f} s, root and symlink checks {t_confine:.2f} s "
              f"({t_confine / files * 1e6:.1f} µs per file).", ""]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
