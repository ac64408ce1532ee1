"""A rerun after kill -9 part-way through a large `domas copy`, against the whole copy.

    python benchmarks/bench_resume.py                  # 1 x 2 GiB, killed at 60 %, 3 reps
    python benchmarks/bench_resume.py --size-mib 256 --reps 1     # a smoke run

Invariants:
- A timed run is `domas copy -q SRC DST` then `sync`, after `sync; echo 3 > drop_caches` (untimed):
  the rerun finds nothing of the first run's in the page cache (the worst case after a crash).
- "full" copies into an empty destination. "rerun" first starts the same copy untimed, kills it
  with SIGKILL once the resume journal holds the wanted fraction of the chunks (the journal is the
  copy's own durable record of finished chunks), then times the rerun that completes it.
- The two kinds alternate per repetition; a figure is the median. Every result is checked: same
  size and same bytes as the source (cmp), no part file or journal left behind.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MiB, drop_caches, load, machine_info, median, run_timed, write_random_file  # noqa: E402

HERE = Path(__file__).resolve().parent
DOMAS = [sys.executable, "-m", "domas.cli"]
CHUNK = 8 * MiB           # the default chunk size


def journal_records(state: Path) -> int:
    """Finished chunks in the (only) journal under the state directory: its lines minus the header."""
    total = 0
    for j in (state / "journal").glob("*.jsonl"):
        try:
            total += max(0, j.read_bytes().count(b"\n") - 1)
        except FileNotFoundError:
            pass
    return total


def kill_at(cmd: list[str], env: dict, state: Path, want: int) -> int:
    """Start the copy, SIGKILL it once `want` chunks are journaled; the chunks journaled then."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while journal_records(state) < want:
        if proc.poll() is not None:
            raise RuntimeError("the copy finished before it could be killed: use a larger file")
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return journal_records(state)


def check(src: Path, dst: Path, state: Path) -> None:
    if not dst.is_file() or dst.stat().st_size != src.stat().st_size or not filecmp.cmp(src, dst, shallow=False):
        raise RuntimeError(f"{dst} differs from {src}")
    leftovers = list(dst.parent.glob(".*domas-part*")) + list((state / "journal").glob("*.jsonl"))
    if leftovers:
        raise RuntimeError(f"left behind: {leftovers}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=2048)
    ap.add_argument("--at", type=float, default=0.6, help="fraction of the chunks journaled at the kill")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--work", type=Path, default=HERE / "work" / "resume")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "resume.md")
    args = ap.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    src = work / "src.bin"
    size = args.size_mib * MiB
    if not src.exists() or src.stat().st_size != size:
        write_random_file(src, size)
    dst_dir, state = work / "dst", work / "state"
    dst = dst_dir / src.name
    env = dict(os.environ, DOMAS_STATE_DIR=str(state))
    env.pop("DOMAS_CONFIG", None)
    cmd = [*DOMAS, "copy", "-q", str(src), str(dst)]
    want = int(args.at * -(-size // CHUNK))
    info, load_before = machine_info(work), load()
    times: dict[str, list[float]] = {"full": [], "rerun": []}
    killed_at: list[int] = []
    for rep in range(args.reps):
        for kind in (("full", "rerun") if rep % 2 == 0 else ("rerun", "full")):
            shutil.rmtree(dst_dir, ignore_errors=True)
            shutil.rmtree(state, ignore_errors=True)
            dst_dir.mkdir(parents=True)
            if kind == "rerun":
                killed_at.append(kill_at(cmd, env, state, want))
            if not drop_caches():
                raise RuntimeError("cannot drop the page cache: run as root")
            wall, _cpu = run_timed(cmd, ["sync"], env=env)
            check(src, dst, state)
            times[kind].append(wall)
            print(f"rep {rep} {kind}: {wall:.2f} s", flush=True)
    full, rerun = median(times["full"]), median(times["rerun"])
    chunks = -(-size // CHUNK)
    lines = ["# Rerun after kill -9 vs a whole `domas copy`", "",
             f"Command: `python benchmarks/bench_resume.py --size-mib {args.size_mib} --at {args.at} "
             f"--reps {args.reps}`", "", "## Machine", ""] + [f"- {k}: {v}" for k, v in info.items()] + [
             f"- before: {load_before}", f"- after: {load()}", "",
             "## Result (medians; caches dropped before every timed run)", "",
             "| file | killed with | full copy | rerun | rerun / full |", "|---|---|---|---|---|",
             f"| 1 x {args.size_mib} MiB | {median(killed_at):.0f} of {chunks} chunks journaled | {full:.2f} s | "
             f"{rerun:.2f} s | {rerun / full:.2f} |", "",
             "Runs (s): full " + ", ".join(f"{t:.2f}" for t in times["full"]) + "; rerun "
             + ", ".join(f"{t:.2f}" for t in times["rerun"]) + "; journaled at the kill "
             + ", ".join(str(k) for k in killed_at), ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
