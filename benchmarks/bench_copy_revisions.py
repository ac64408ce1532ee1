"""`domas copy` of one tree as built from several git revisions, side by side with cp -r + sync.

    python benchmarks/bench_copy_revisions.py --reps 5 575ce42 HEAD          # root: drops the page cache
    python benchmarks/bench_copy_revisions.py --reps 5 HEAD HEAD:--streams=4  # one revision, other options

Invariants:
- Each revision's package is laid out from `git archive` (the compiled checksum extension of the
  working tree is copied in) and run as `python -m domas.cli copy -q` with it first on PYTHONPATH,
  so a revision is measured as committed, whatever the working tree holds meanwhile.
- Each timed run: a fresh destination, `sync; echo 3 > drop_caches` (untimed), the copy, then
  `sync` (timed); wall, user and system seconds of both. Sides alternate in a rotating order per
  repetition; medians. Every run is checked: the destination has as many files as the source.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import drop_caches, load, median, small_files  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# package -> folder in the repository (pyproject.toml's package-dir)
LAYOUT = {"domas": "src/domas", "domas/checksum": "ext", "domas/agent": "agent", "domas/transfer": "transfer",
          "domas/controller": "controller", "domas/archive": "archive", "domas/catalogue": "catalogue",
          "domas/dataservice": "dataservice", "domas/v1": "proto/domas/v1"}


def freeze(rev: str, into: Path) -> Path:
    """The package of `rev` as an importable tree under `into`."""
    arch = into / "archive"
    arch.mkdir(parents=True)
    tar = subprocess.run(["git", "-C", str(ROOT), "archive", rev, *sorted(set(LAYOUT.values()))],
                         check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(arch)], input=tar, check=True)
    for pkg, folder in sorted(LAYOUT.items()):
        shutil.copytree(arch / folder, into / "pkg" / pkg, dirs_exist_ok=True)
    for so in (ROOT / "ext").glob("_checksum*.so"):
        shutil.copy(so, into / "pkg" / "domas" / "checksum")
    return into / "pkg"


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["sync"], check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.monotonic() - t0, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sides", nargs="+", help="git revisions, each optionally REV:--opt=value,--opt2")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--work", type=Path, default=HERE / "work" / "revisions")
    args = ap.parse_args()
    src, dst = args.work / "src" / "small", args.work / "dst"
    small_files(src, args.files)
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        sides = {"cp -r + sync": (["cp", "-r", str(src), f"{dst}/"], None)}
        for k, side in enumerate(args.sides):
            rev, _, opts = side.partition(":")
            pkg = freeze(rev, Path(tmp) / str(k))
            env = dict(os.environ, PYTHONPATH=str(pkg), DOMAS_STATE_DIR=str(Path(tmp) / f"state{k}"))
            cmd = [sys.executable, "-m", "domas.cli", "copy", "-q", *[o for o in opts.split(",") if o], str(src),
                   f"{dst}/"]
            sides[side] = (cmd, env)
        runs: dict[str, list[tuple[float, float, float]]] = {k: [] for k in sides}
        print("load at start:", load())
        names = list(sides)
        for rep in range(args.reps):
            for name in names[rep % len(names):] + names[:rep % len(names)]:
                shutil.rmtree(dst, ignore_errors=True)
                dst.mkdir(parents=True)
                if not drop_caches():
                    sys.exit("run as root: the page cache is dropped before each run")
                runs[name].append(timed(*sides[name]))
                if len(os.listdir(dst / "small")) != args.files:
                    sys.exit(f"{name}: the destination does not have {args.files} files")
                print(f"rep {rep + 1} {name:40s} {runs[name][-1][0]:6.2f} s", flush=True)
        print("load at end:", load())
    cp = median([r[0] for r in runs["cp -r + sync"]])
    print("\n| side | median s | files/s | vs cp+sync | user s | sys s | raw s |\n|---|---|---|---|---|---|---|")
    for name, rs in runs.items():
        wall = median([r[0] for r in rs])
        print(f"| `{name}` | {wall:.2f} | {args.files / wall:.0f} | {cp / wall:.2f}x | "
              f"{median([r[1] for r in rs]):.2f} | {median([r[2] for r in rs]):.2f} | "
              f"{', '.join(f'{r[0]:.2f}' for r in rs)} |")
    shutil.rmtree(dst, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
