"""What coordination costs: controller + 2 agents against one `domas copy`, on the same data.

    python benchmarks/bench_coordination.py            # 16 x 128 MiB and 1 x 2 GiB, 3 reps (~10 min)
    python benchmarks/bench_coordination.py --quick    # 8 x 32 MiB and 1 x 256 MiB, a smoke run
    python benchmarks/bench_coordination.py --datasets one,small    # 1 x 2 GiB and 1000 x 1 MiB

Invariants:
- Both sides move the same bytes with the same parallelism: `domas copy --streams 2S` against two
  agents with `--streams S` each, on this one host; the same chunk size (the default).
- The controller and agents run for the whole benchmark (services, not timed). A timed run is
  `domas submit SRC DST/ --wait` then `sync`, against `domas copy SRC DST/` then `sync`.
- Every timed run writes into a fresh, empty destination, after `sync; echo 3 > drop_caches` (untimed).
  The order of the two sides alternates per repetition; a figure is the median of the repetitions.
- A run counts only after its output is checked (number of files and bytes).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import GiB, MiB, drop_caches, free_port, load, machine_info, median, port_open, run_timed, \
    tree_size, write_random_file  # noqa: E402

HERE = Path(__file__).resolve().parent
DOMAS = [sys.executable, "-m", "domas.cli"]


def datasets(quick: bool, names: str = "many,one") -> list[tuple[str, int, int]]:
    """(name, files, bytes per file)."""
    if quick:
        sets = [("many", 8, 32 * MiB), ("one", 1, 256 * MiB), ("small", 200, MiB)]
    else:
        sets = [("many", 16, 128 * MiB), ("one", 1, 2 * GiB), ("small", 1000, MiB)]
    want = names.split(",")
    return sorted((d for d in sets if d[0] in want), key=lambda d: want.index(d[0]))


def make_dataset(root: Path, name: str, files: int, size: int) -> Path:
    src = root / name
    if tree_size(src) == (files, files * size) if src.exists() else False:
        return src
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    for i in range(files):
        write_random_file(src / f"f{i:03d}.bin", size)
    return src


def wait_port(port: int, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 60
    while not port_open(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start (exit {proc.poll()})")
        time.sleep(0.05)


class Cluster:
    """A controller and two agents on loopback, for the whole benchmark."""

    def __init__(self, work: Path, env: dict, streams: int) -> None:
        self.port, self.env = free_port(), env
        log = open(work / "cluster.log", "ab")
        self.procs = [subprocess.Popen([*DOMAS, "controller", "--listen", f"127.0.0.1:{self.port}", "--state-dir",
                                        str(work / "ctl"), "--metrics-listen", f"127.0.0.1:{free_port()}",
                                        "--root", str(work)],
                                       env=env, stdout=log, stderr=log)]
        wait_port(self.port, self.procs[0], "the controller")
        for name in ("bench-a1", "bench-a2"):
            m = free_port()
            self.procs.append(subprocess.Popen(
                [*DOMAS, "agent", "--controller", f"127.0.0.1:{self.port}", "--name", name, "--streams",
                 str(streams), "--state-dir", str(work / name), "--metrics-listen", f"127.0.0.1:{m}"],
                env=env, stdout=log, stderr=log))
            wait_port(m, self.procs[-1], name)

    def submit(self, src: Path, dst: Path) -> list[str]:
        return [*DOMAS, "submit", str(src), f"{dst}/", "--wait", "--controller", f"127.0.0.1:{self.port}"]

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.terminate()
            p.wait(timeout=30)


def timed_run(cmd: list[str], src: Path, dst: Path, env: dict) -> float:
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    if not drop_caches():
        raise RuntimeError("cannot drop the page cache: run as root")
    wall, _cpu = run_timed(cmd, ["sync"], env=env)
    if tree_size(dst / src.name) != tree_size(src):
        raise RuntimeError(f"{' '.join(cmd)}: the destination does not match the source")
    shutil.rmtree(dst)
    return wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--datasets", default="many,one",
                    help="comma-separated subset of many (16 x 128 MiB), one (1 x 2 GiB), small (1000 x 1 MiB)")
    ap.add_argument("--streams", type=int, default=4, help="streams per agent (domas copy gets twice this)")
    ap.add_argument("--work", type=Path, default=HERE / "work" / "coordination")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "coordination.md")
    args = ap.parse_args()
    work = args.work
    shutil.rmtree(work / "ctl", ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, DOMAS_TOKEN="bench", DOMAS_STATE_DIR=str(work / "state"))
    env.pop("DOMAS_CONFIG", None)
    info, load_before = machine_info(work), load()
    cluster = Cluster(work, env, args.streams)
    rows, raw = [], []
    try:
        for name, files, size in datasets(args.quick, args.datasets):
            src, dst = make_dataset(work / "src", name, files, size), work / "dst"
            sides = {"domas copy": [*DOMAS, "copy", "-q", "--streams", str(2 * args.streams), str(src), f"{dst}/"],
                     "controller + 2 agents": cluster.submit(src, dst)}
            times: dict[str, list[float]] = {k: [] for k in sides}
            for rep in range(args.reps):
                order = list(sides) if rep % 2 == 0 else list(reversed(sides))
                for side in order:
                    times[side].append(timed_run(sides[side], src, dst, env))
                    print(f"{name} rep {rep} {side}: {times[side][-1]:.2f} s", flush=True)
            total = files * size
            base, coord = median(times["domas copy"]), median(times["controller + 2 agents"])
            rows.append((f"{files} x {size // MiB} MiB", total, base, coord))
            raw.append((name, times))
    finally:
        cluster.stop()
    write_report(args, info, load_before, load(), rows, raw)
    return 0


def write_report(args, info: dict, load_before: str, load_after: str, rows: list, raw: list) -> None:
    lines = ["# Coordination cost: controller + 2 agents vs one `domas copy`", "",
             "Command: `python benchmarks/bench_coordination.py" + (" --quick" if args.quick else "")
             + ("" if args.datasets == "many,one" else f" --datasets {args.datasets}") + "`", "",
             "## Machine", ""] + [f"- {k}: {v}" for k, v in info.items()] + [
             f"- load before: {load_before}", f"- load after: {load_after}",
             "- the box is shared with other workers and busy; figures carry that noise", "",
             "## Method", "",
             f"Same data, same parallelism: `domas copy --streams {2 * args.streams}` against a controller and two",
             f"agents with `--streams {args.streams}` each, all on this host, default chunk size. Each timed run: a",
             "fresh destination, `sync; echo 3 > /proc/sys/vm/drop_caches` (untimed), then the copy and `sync`",
             "(timed); for the controller, `domas submit SRC DST/ --wait` (the agents read each chunk back;",
             f"the controller folds their sums and renames without reading). {args.reps} repetitions, sides",
             "alternating; medians.", "",
             "## Results", "",
             "| data | bytes | domas copy (s) | MB/s | controller + 2 agents (s) | MB/s | cost | cost, best runs |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for (label, total, base, coord), (_, times) in zip(rows, raw):
        best = min(times["domas copy"]), min(times["controller + 2 agents"])
        lines.append(f"| {label} | {total} | {base:.2f} | {total / base / 1e6:.0f} | {coord:.2f} | "
                     f"{total / coord / 1e6:.0f} | {100 * (coord - base) / base:+.1f} % | "
                     f"{100 * (best[1] - best[0]) / best[0]:+.1f} % |")
    lines += ["", "Times are medians; \"best runs\" compares the fastest run of each side (the least disturbed "
              "by other work on the box)."]
    lines += ["", "Raw wall times (s):", ""]
    for name, times in raw:
        for side, ts in times.items():
            lines.append(f"- {name}, {side}: " + ", ".join(f"{t:.2f}" for t in ts))
    lines += ["", "## Verdict", "", "Goal: coordination costs < 10 %.", ""]
    for (label, _, base, coord), (_, times) in zip(rows, raw):
        lines.append(f"- {label}: {verdict(base, coord, times)}")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def spread(ts: list[float]) -> float:
    """Run-to-run spread of one side, in % of its median: (max - min) / median."""
    return 100 * (max(ts) - min(ts)) / median(ts)


def verdict(base: float, coord: float, times: dict[str, list[float]]) -> str:
    """Met / not met only when the difference stands out of the run-to-run spread; else inconclusive."""
    cost, noise = 100 * (coord - base) / base, max(map(spread, times.values()))
    if abs(cost) <= noise:
        return (f"cost {cost:+.1f} % is inside the run-to-run spread ({noise:.0f} %): inconclusive on this box; "
                f"no coordination cost above the noise")
    return f"cost {cost:+.1f} % (spread {noise:.0f} %): goal {'met' if cost < 10 else 'not met'}"


if __name__ == "__main__":
    sys.exit(main())
