"""The operations test, long form: a facility's week on a compressed clock, several rounds of every
fault, more files per drop (tests/operations_week.py holds the scenario; the suite runs one round).

Real processes from one config in an empty directory: controller, two agents, archive, then
`domas up`; a MongoDB-wire catalogue (secantusd-py) and an XRootD tape tier that go down and come
back. Each round: controller SIGTERM and kill -9, an agent killed, catalogue down/up, tape down/up
(the operator's embargo and PI in the first). At the end every file is checked on central and
tape (adler32 of what was written), one catalogue record each, operator fields intact, no beamline
copy removed before an equal downstream copy, no traceback in any log.

    python benchmarks/bench_operations_week.py [--rounds 4] [--files-per-drop 5]

Writes benchmarks/results/operations_week.md; exits 1 if the week was not survived.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from common import load, machine_info  # noqa: E402

from tests.fixtures.mongo import SecantusServer  # noqa: E402
from tests.fixtures.xrootd import start_xrootd  # noqa: E402
from tests.operations_week import run_week  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--files-per-drop", type=int, default=5)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="domas-week-"))
    xrd = start_xrootd()
    servers: list[SecantusServer] = []

    def mongo_factory() -> SecantusServer:
        s = SecantusServer(tmp / "mongo")
        s.workdir.mkdir(parents=True, exist_ok=True)
        servers.append(s)
        return s.start()

    started, week = time.monotonic(), None
    try:
        week = run_week(tmp / "week", mongo_factory, xrd, rounds=args.rounds, files_per_drop=args.files_per_drop)
        problems = week.verdict()
    finally:
        if week is not None:
            week.close()
        for s in servers:
            s.stop()
        xrd.stop()
    fig = week.fig
    lines = [
        "## Operations: a week in minutes (long form)",
        "",
        f"Command: `python benchmarks/bench_operations_week.py --rounds {args.rounds} "
        f"--files-per-drop {args.files_per_drop}`",
        "",
        "Machine: " + "; ".join(f"{k} {v}" for k, v in machine_info(HERE).items()) + f"; load at start {load()}",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| files written (3 beamlines; plain, NeXus, growing; raw and processed) | {fig.files} |",
        f"| bytes written | {fig.bytes} |",
        f"| drops (rounds of new files) | {fig.rounds} |",
        f"| process restarts (controller, agents, archive, `domas up`) | {fig.restarts} |",
        f"| faults survived | {len(fig.faults)} |",
        f"| beamline copies expired by the retention (each watched) | {fig.beamline_copies_expired} |",
        f"| time to converge after the last drop (every file verified on central and tape) | "
        f"{fig.seconds_to_converge:.1f} s |",
        f"| whole run | {time.monotonic() - started:.0f} s |",
        f"| **verdict** | **{'survived' if not problems else 'FAILED'}** |",
        "",
        "Faults, in order:",
        "",
        *[f"1. {f}" for f in fig.faults],
        "",
    ]
    if problems:
        lines += ["Problems:", "", *[f"- {p}" for p in problems[:50]], ""]
    out = HERE / "results" / "operations_week.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(out.read_text())
    if not problems:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
