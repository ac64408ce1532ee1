"""Detection to catalogued central copy: files per second through `domas up`.

Starts a real `domas up` (controller, agent, archiver, SQLite catalogue) in a temporary data
directory, drops N small files into one beamtime's raw/ tree at once, and measures how long it
takes until every file has a verified central copy on record in the catalogue (read from the
catalogue file, as `domas catalogue` would), and until every file is on tape.

    python benchmarks/bench_up.py [--files 10000] [--size 4096] [--reps 3]

Writes benchmarks/results/up.md.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import load, machine_info  # noqa: E402

CONFIG = """
state_dir = "{data}/state"
[storage]
beamline = "{data}/beamline"
central = "{data}/central"
tape = "{data}/tape"
[policy]
stability_seconds = {stability}
[controller]
listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
[agent]
metrics_listen = "127.0.0.1:0"
"""


def counts(db: Path) -> tuple[int, int, int]:
    """(catalogued, verified on central, verified on tape), straight from the catalogue file."""
    if not db.exists():
        return 0, 0, 0
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        total = con.execute("SELECT count(*) FROM files").fetchone()[0]
        by = dict(con.execute("SELECT tier, count(*) FROM replicas WHERE state='verified' GROUP BY tier").fetchall())
    except sqlite3.OperationalError:
        return 0, 0, 0
    finally:
        con.close()
    return total, by.get("central", 0), by.get("tape", 0)


def one_run(n: int, size: int, stability: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="domas-bench-up-", dir=str(HERE)) as tmp:
        data = Path(tmp) / "domas-data"
        cfg = Path(tmp) / "domas.toml"
        cfg.write_text(CONFIG.format(data=data, stability=stability))
        log = open(Path(tmp) / "up.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "domas.cli", "--config", str(cfg), "up", "--data-dir",
                                 str(data)], stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
        try:
            while not (data / "domas.toml").exists():
                if proc.poll() is not None:
                    raise SystemExit(f"domas up exited: see {log.name}")
                time.sleep(0.05)
            raw = data / "beamline" / "B1" / "202611" / "Data" / "BT0001" / "raw"
            payload = os.urandom(size)
            for d in range(10):
                (raw / f"scan_{d:02d}").mkdir(parents=True)
            t0 = time.monotonic()
            for i in range(n):
                (raw / f"scan_{i % 10:02d}" / f"frame_{i:06d}.tif").write_bytes(payload)
            written = time.monotonic()
            db = data / "state" / "catalogue.sqlite"
            first_cat = central = tape = None
            while tape is None:
                total, c, t = counts(db)
                now = time.monotonic()
                if first_cat is None and total > 0:
                    first_cat = now
                if central is None and c >= n:
                    central = now
                if t >= n:
                    tape = now
                if now - written > 1800:
                    raise SystemExit(f"timed out: catalogued {total}, central {c}, tape {t}")
                time.sleep(0.2)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
            log.close()
    settle = written + stability
    return {"write_s": written - t0, "first_catalogued_s": first_cat - written,
            "central_s": central - written, "tape_s": tape - written,
            "central_files_per_s": n / (central - settle), "tape_files_per_s": n / (tape - settle)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--stability", type=float, default=1.0)
    args = ap.parse_args()
    runs = []
    for r in range(args.reps):
        res = one_run(args.files, args.size, args.stability)
        runs.append(res)
        print(f"run {r + 1}: " + ", ".join(f"{k} {v:.2f}" for k, v in res.items()), flush=True)
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    lines = [
        "## domas up: detection to catalogued central copy",
        "",
        f"Command: `python benchmarks/bench_up.py --files {args.files} --size {args.size} --reps {args.reps}`",
        "",
        "Machine: " + "; ".join(f"{k} {v}" for k, v in machine_info(HERE).items()) + f"; load at start {load()}",
        "",
        f"{args.files} files of {args.size} bytes dropped at once into one beamtime's raw/ (10 directories);",
        f"stability window {args.stability:g} s. One `domas up` per run: controller, one agent (default streams),",
        "archiver, embedded SQLite catalogue; local disk for all tiers. Times from the last file written;",
        "files/s counts from the end of the stability window. Medians of "
        f"{args.reps} runs (raw runs below).",
        "",
        "| measure | median |",
        "|---|---:|",
        f"| first file catalogued, after the last one was written (0: while writing) | {med['first_catalogued_s']:.2f} s |",
        f"| all files verified on central after | {med['central_s']:.2f} s |",
        f"| **detection → catalogued central copy** | **{med['central_files_per_s']:.0f} files/s** |",
        f"| all files verified on tape after | {med['tape_s']:.2f} s |",
        f"| detection → catalogued tape copy | {med['tape_files_per_s']:.0f} files/s |",
        "",
        "Raw runs:",
        "",
    ]
    lines += [f"- run {i + 1}: " + ", ".join(f"{k}={v:.2f}" for k, v in r.items()) for i, r in enumerate(runs)]
    out = HERE / "results" / "up.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(out.read_text())


if __name__ == "__main__":
    main()
