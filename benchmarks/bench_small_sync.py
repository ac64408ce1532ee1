"""Small files: one fdatasync each (the default) against copy.group_sync (one syncfs per group
before the read-back), and cp -r + sync, on the same 1000 x 1 MiB tree.

    python benchmarks/bench_small_sync.py --reps 7      # root: drops the page cache

Invariants:
- The domas sides run the copy engine in this process (the same code `domas copy` runs), with
  verification on; cp runs as a process. Each timed run: a fresh destination, `sync; echo 3 >
  drop_caches` (untimed), the copy, then `sync` (timed). Sides alternate per repetition; medians.
- Every run is checked: 1000 files of the right size at the destination.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MiB, drop_caches, load, median, small_files  # noqa: E402

from domas.agent.engine import CopyEngine  # noqa: E402
from domas.transfer.expand import expand  # noqa: E402
from domas.config import Config, CopyConfig  # noqa: E402

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--work", type=Path, default=HERE / "work" / "small_sync")
    args = ap.parse_args()
    src, dst = args.work / "src" / "small", args.work / "dst"
    small_files(src, args.files)

    def engine(group: bool) -> None:
        cfg = Config(state_dir=str(args.work / "state"), copy=CopyConfig(group_sync=group))
        asyncio.run(CopyEngine(cfg).run(expand([str(src)], f"{dst}/")))

    sides = {"cp -r + sync": lambda: subprocess.run(["cp", "-r", str(src), f"{dst}/"], check=True),
             "domas, fdatasync per file": lambda: engine(False),
             "domas, group_sync": lambda: engine(True)}
    times: dict[str, list[float]] = {k: [] for k in sides}
    print(load())
    for rep in range(args.reps):
        for k in (list(sides) if rep % 2 == 0 else list(reversed(sides))):
            shutil.rmtree(dst, ignore_errors=True)
            dst.mkdir(parents=True)
            if not drop_caches():
                sys.exit("run as root: the page cache must be dropped")
            t0 = time.perf_counter()
            sides[k]()
            os.sync()
            times[k].append(time.perf_counter() - t0)
            out = list((dst / "small").iterdir())
            if len(out) != args.files or any(p.stat().st_size != MiB for p in out):
                raise RuntimeError(f"{k}: the destination does not match the source")
    cp = median(times["cp -r + sync"])
    for k, v in times.items():
        m = median(v)
        print(f"| {k} | {m:.2f} s | {args.files / m:.0f} files/s | {cp / m:.2f}x | "
              + ", ".join(f"{x:.2f}" for x in v) + " |")
    print(load())
    shutil.rmtree(dst, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
