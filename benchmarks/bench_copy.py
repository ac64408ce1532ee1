"""`domas copy` side by side with cp+sync, rsync and xrdcp, on the same data, from a cold page cache.

    python benchmarks/bench_copy.py            # full run, as root (~16 min here, ~21 GB of disk at the peak)
    python benchmarks/bench_copy.py --quick    # smaller data, a smoke run

Invariants:
- Every timed run writes into a fresh, empty destination, starts with a cold page cache (sync +
  drop_caches, untimed) and ends with `sync` (timed): each figure includes getting the data to disk.
- Within a repetition every tool runs once; the order rotates from one repetition to the next.
  A figure is the median over the repetitions; all raw times are kept.
- A run counts only after its output is checked (number of files and bytes).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import GiB, MiB, drop_caches, first_line, free_port, load, machine_info, median, port_open, \
    run_timed, tree_size, write_random_file  # noqa: E402

HERE = Path(__file__).resolve().parent
SYNC = ["sync"]
XRDCP = "xrdcp --cksum adler32:source + sync"


@dataclass(frozen=True)
class Dataset:
    name: str
    label: str
    files: int
    file_size: int

    @property
    def total(self) -> int:
        return self.files * self.file_size

    @property
    def is_dir(self) -> bool:
        return self.files > 1

    @property
    def src_name(self) -> str:
        return self.name if self.is_dir else f"{self.name}.bin"


def datasets(quick: bool) -> list[Dataset]:
    if quick:
        return [Dataset("big", "one 256 MiB file", 1, 256 * MiB),
                Dataset("small", "200 x 1 MiB files", 200, MiB),
                Dataset("medium", "4 x 64 MiB files", 4, 64 * MiB)]
    return [Dataset("big", "one 4 GiB file", 1, 4 * GiB),
            Dataset("small", "1000 x 1 MiB files", 1000, MiB),
            Dataset("medium", "16 x 256 MiB files", 16, 256 * MiB)]


@dataclass(frozen=True)
class Tool:
    name: str
    commands: Callable[[str, str, Dataset], list[list[str]]]  # (src, dst dir with '/', dataset)
    is_domas: bool = False
    verifying: bool = False  # domas with its default verification


def local_tools(domas: list[str]) -> list[Tool]:
    return [
        Tool("cp -r + sync", lambda s, d, ds: [["cp", "-r", s, d], SYNC]),
        Tool("rsync -a + sync", lambda s, d, ds: [["rsync", "-a", s, d], SYNC]),
        Tool("rsync -a --checksum + sync", lambda s, d, ds: [["rsync", "-a", "--checksum", s, d], SYNC]),
        Tool("domas copy + sync", lambda s, d, ds: [domas + ["copy", "-q", s, d], SYNC], True, True),
        Tool("domas copy --verify none + sync",
             lambda s, d, ds: [domas + ["copy", "-q", "--verify", "none", s, d], SYNC], True),
    ]


def xrootd_tools(domas: list[str], parallel: int, plain: bool) -> list[Tool]:
    def xrdcp(cksum: bool):
        def commands(s: str, d: str, ds: Dataset) -> list[list[str]]:
            base = ["xrdcp", "-s"] + (["--cksum", "adler32:source"] if cksum else [])
            if ds.is_dir:
                return [base + ["-r", "--parallel", str(parallel), s, d], SYNC]
            return [base + [s, d + ds.src_name], SYNC]
        return commands

    tools = [Tool(XRDCP, xrdcp(True)),
             Tool("domas copy + sync", lambda s, d, ds: [domas + ["copy", "-q", s, d], SYNC], True, True)]
    return tools + ([Tool("xrdcp (no checksum) + sync", xrdcp(False))] if plain else [])


def rotated(tools: list[Tool], rep: int) -> list[Tool]:
    k = rep % len(tools)
    return tools[k:] + tools[:k]


# -- data -----------------------------------------------------------------------------------------
def make_dataset(src_root: Path, ds: Dataset) -> Path:
    """Random data for `ds` under src_root (kept from an earlier --keep run when it matches)."""
    path = src_root / ds.src_name
    if path.exists() and tree_size(path) == (ds.files, ds.total):
        return path
    shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    if not ds.is_dir:
        write_random_file(path, ds.file_size)
        return path
    path.mkdir(parents=True)
    for i in range(ds.files):
        write_random_file(path / f"f{i:05d}.bin", ds.file_size)
    return path


def check_output(dst: Path, ds: Dataset, what: str) -> None:
    got = tree_size(dst / ds.src_name) if (dst / ds.src_name).exists() else (0, 0)
    if got != (ds.files, ds.total):
        raise RuntimeError(f"{what}: {dst / ds.src_name} holds {got[0]} files, {got[1]} bytes; "
                           f"expected {ds.files} files, {ds.total} bytes")


def fresh_dir(path: Path, owner: str | None = None) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    if owner:
        shutil.chown(path, owner, owner)
    return path


# -- one timed run --------------------------------------------------------------------------------
class Runner:
    def __init__(self, work: Path, env: dict, log) -> None:
        self.work, self.env, self.log = work, env, log
        self.results: dict[str, dict[str, list[float]]] = {}
        self.cpu: dict[str, dict[str, list[float]]] = {}
        self.failures: dict[str, dict[str, list[str]]] = {}

    def run(self, key: str, tool: Tool, ds: Dataset, src: str, dst_url: str, dst_disk: Path, rep: int) -> None:
        """Time one run; a failure is recorded (and reported) rather than ending the benchmark."""
        shutil.rmtree(self.work / "state", ignore_errors=True)
        drop_caches()
        try:
            seconds, cpu = run_timed(*tool.commands(src, dst_url, ds), env=self.env)
            check_output(dst_disk, ds, f"{key} / {tool.name}")
        except RuntimeError as e:
            self.failures.setdefault(key, {}).setdefault(tool.name, []).append(f"rep {rep + 1}: {e}".strip())
            self.log(f"  rep {rep + 1} {tool.name:38s} FAILED: {e}")
            return
        finally:
            shutil.rmtree(dst_disk, ignore_errors=True)
        self.results.setdefault(key, {}).setdefault(tool.name, []).append(seconds)
        self.cpu.setdefault(key, {}).setdefault(tool.name, []).append(cpu)
        self.log(f"  rep {rep + 1} {tool.name:38s} {seconds:7.2f} s  {ds.total / seconds / 1e6:8.1f} MB/s  "
                 f"cpu {cpu:6.2f} s")


def run_local(runner: Runner, tools: list[Tool], ds: Dataset, src: Path, reps: int) -> str:
    key = f"local: {ds.label}"
    runner.log(key)
    for rep in range(reps):
        for tool in rotated(tools, rep):
            dst = fresh_dir(runner.work / "dst")
            runner.run(key, tool, ds, str(src), f"{dst}/", dst, rep)
    return key


# -- XRootD ---------------------------------------------------------------------------------------
class XrootdServer:
    """Debian's xrootd serving the work dir on a free loopback port, as user xrootd, with adler32."""

    def __init__(self, work: Path) -> None:
        self.work, self.port, self.proc = work, free_port(), None
        self.admin = fresh_dir(work / "xrd-admin", "xrootd")

    def __enter__(self) -> "XrootdServer":
        cfg = self.admin / "xrootd.cfg"
        cfg.write_text(f"xrd.port {self.port}\nxrd.allow host 127.0.0.1\nall.export / r/w\noss.localroot {self.work}\n"
                       f"all.adminpath {self.admin}\nall.pidpath {self.admin}\nxrootd.chksum adler32\n")
        shutil.chown(cfg, "xrootd", "xrootd")
        self.proc = subprocess.Popen(["xrootd", "-c", str(cfg), "-l", str(self.admin / "xrootd.log"),
                                      "-R", "xrootd", "-n", "bench", "-I", "v4"], cwd=self.admin,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not port_open(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"xrootd did not start; see {self.admin}/bench/xrootd.log")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def store_checksums(self, src: Path) -> None:
        """Let the server compute and keep (as an xattr) each source file's adler32, untimed, as a
        production server holds the checksums of files it stores: downloads then do not pay for it."""
        for f in [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file()):
            shutil.chown(f, "xrootd", "xrootd")  # the server may set user.XrdCks.adler32 on it
            subprocess.run(["xrdfs", f"127.0.0.1:{self.port}", "query", "checksum", f"/{f.relative_to(self.work)}"],
                           check=True, stdout=subprocess.DEVNULL)

    def url(self, path: str) -> str:
        return f"root://127.0.0.1:{self.port}//{path.lstrip('/')}"


def run_xrootd(runner: Runner, server: XrootdServer, tools: list[Tool], ds: Dataset, reps: int) -> list[str]:
    work = runner.work
    up_key, down_key = f"XRootD upload: {ds.label}", f"XRootD download: {ds.label}"
    runner.log(up_key)
    for rep in range(reps):
        for tool in rotated(tools, rep):
            dst = fresh_dir(work / "up" / "run", "xrootd")
            runner.run(up_key, tool, ds, str(work / "src" / ds.src_name), server.url("up/run/"), dst, rep)
    runner.log(down_key)
    server.store_checksums(work / "src" / ds.src_name)
    for rep in range(reps):
        for tool in rotated(tools, rep):
            dst = fresh_dir(work / "dst")
            runner.run(down_key, tool, ds, server.url(f"src/{ds.src_name}"), f"{dst}/", dst, rep)
    shutil.rmtree(work / "up", ignore_errors=True)
    return [up_key, down_key]


# -- report ---------------------------------------------------------------------------------------
def summarize(runner: Runner, sets: dict[str, Dataset]) -> dict:
    out = {}
    for key, by_tool in runner.results.items():
        ds = sets[key]
        out[key] = {name: {"median_s": median(ts), "mb_s": ds.total / median(ts) / 1e6,
                           "files_s": ds.files / median(ts), "cpu_s": median(runner.cpu[key][name]),
                           "raw_s": ts, "raw_cpu_s": runner.cpu[key][name]} for name, ts in by_tool.items()}
    return out


def table(key: str, rows: dict, ds: Dataset, tools: dict[str, Tool]) -> list[str]:
    dom = [n for n in rows if tools[n].is_domas]
    many = ds.file_size <= 16 * MiB
    head = ["tool", "median s", "MB/s"] + (["files/s"] if many else []) + ["CPU s"] + \
        [f"{d.replace(' + sync', '')} / this" for d in dom] + ["raw s"]
    lines = [f"### {key}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in rows.items():
        cells = [f"`{name}`", f"{r['median_s']:.2f}", f"{r['mb_s']:.0f}"]
        cells += [f"{r['files_s']:.0f}"] if many else []
        cells += [f"{r['cpu_s']:.1f}"]
        cells += [f"{r['median_s'] / rows[d]['median_s']:.2f}x" for d in dom]
        cells += [", ".join(f"{t:.2f}" for t in r["raw_s"])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


GOALS = [  # (description, result-key prefix, dataset names, peer tool, minimum ratio)
    ("domas (verifying) >= 1.0x cp+sync", "local", ("big", "medium"), "cp -r + sync", 1.0),
    ("domas (verifying) >= 2x rsync --checksum", "local", ("big", "medium"), "rsync -a --checksum + sync", 2.0),
    ("domas >= 1.5x xrdcp with checksums", "XRootD", ("big", "medium"), XRDCP, 1.5),
    ("small files: domas (verifying) >= 1.0x cp+sync files/s", "local", ("small",), "cp -r + sync", 1.0),
]


def goals(summary: dict, sets: dict[str, Dataset]) -> list[str]:
    lines = ["| goal | measurement | domas / peer | verdict |", "|---|---|---|---|"]
    for text, prefix, names, peer, need in GOALS:
        for key, rows in summary.items():
            if not key.startswith(prefix) or sets[key].name not in names or peer not in rows:
                continue
            if "domas copy + sync" not in rows:
                lines.append(f"| {text} | {key} | - | **MISSED** (every domas run failed) |")
                continue
            ratio = rows[peer]["median_s"] / rows["domas copy + sync"]["median_s"]
            verdict = "MET" if ratio >= need else "MISSED"
            lines.append(f"| {text} | {key} | {ratio:.2f}x | **{verdict}** |")
    return lines + [""]


def versions(domas: list[str]) -> dict[str, str]:
    rev = subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"],
                         stdout=subprocess.PIPE, text=True).stdout.strip()
    impl = subprocess.run([sys.executable, "-c", "import domas.checksum as c; print(c.IMPLEMENTATION)"],
                          stdout=subprocess.PIPE, text=True).stdout.strip()
    return {"domas": f"{first_line(domas + ['--version'])} (git {rev}, checksum path {impl})",
            "cp": first_line(["cp", "--version"]), "rsync": first_line(["rsync", "--version"]),
            "xrdcp": first_line(["xrdcp", "--version"]), "xrootd": first_line(["xrootd", "-v"]),
            "python": sys.version.split()[0]}


def report(args, machine: dict, vers: dict, summary: dict, failures: dict, sets: dict, tools: dict,
           elapsed: float) -> str:
    lines = ["# domas copy vs cp, rsync, xrdcp (generated by benchmarks/bench_copy.py)", "",
             f"Command: `python benchmarks/bench_copy.py {' '.join(sys.argv[1:])}`",
             f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {args.reps} repetitions; "
             f"whole run {elapsed / 60:.1f} min.", "", "Machine: " +
             "; ".join(f"{k}: {v}" for k, v in machine.items()), "", "Versions: " +
             "; ".join(f"{k}: {v}" for k, v in vers.items()), "",
             "MB/s = 10^6 bytes per second of median wall time; CPU s = median user+sys seconds of the "
             "commands. `A / this` = A's throughput divided by this row's (above 1: A is faster).", ""]
    for key in sets:
        lines += table(key, summary.get(key, {}), sets[key], tools)
        for name, errors in failures.get(key, {}).items():
            lines += [f"FAILED runs of `{name}` (not in the median):", ""] + [f"- {e}" for e in errors] + [""]
    return "\n".join(lines + ["## Goals", ""] + goals(summary, sets))


# -- main -----------------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=3, help="repetitions per tool (default 3)")
    p.add_argument("--quick", action="store_true", help="small data sets, for a smoke run")
    p.add_argument("--keep", action="store_true", help="keep the generated data (reused by the next run)")
    p.add_argument("--work", type=Path, default=HERE / "work" / "copy",
                   help="scratch directory, deleted afterwards unless --keep (default benchmarks/work/copy)")
    p.add_argument("--only", choices=["local", "xrootd"], help="run one part only")
    p.add_argument("--datasets", default="big,small,medium", help="comma-separated subset of big,small,medium")
    p.add_argument("--xrdcp-parallel", type=int, default=4, help="xrdcp --parallel for directories (default 4)")
    p.add_argument("--xrdcp-plain", action="store_true", help="also time xrdcp without --cksum (reference)")
    p.add_argument("--out", type=Path, help="write the Markdown report here (it is always printed)")
    p.add_argument("--json", type=Path, help="write machine, versions and all raw times here as JSON")
    return p.parse_args(argv)


def preflight(args, sets: list[Dataset]) -> list[str]:
    if os.geteuid() != 0:
        sys.exit("run as root: dropping the page cache and starting xrootd as user xrootd need it")
    missing = [t for t in ("rsync", "xrdcp", "xrootd", "domas") if shutil.which(t) is None]
    if missing:
        sys.exit(f"missing tools: {', '.join(missing)} (apt-get install -y rsync xrootd-client xrootd-server; "
                 "pip install -e .)")
    args.work.mkdir(parents=True, exist_ok=True)
    need = sum(d.total for d in sets) + max(d.total for d in sets) + 4 * GiB
    free = shutil.disk_usage(args.work).free
    if free < need:
        sys.exit(f"{args.work} has {free / GiB:.1f} GiB free; this run needs about {need / GiB:.1f} GiB")
    return [shutil.which("domas")]


def main(argv=None) -> int:
    args = parse_args(argv)
    wanted = set(args.datasets.split(","))
    sets = [d for d in datasets(args.quick) if d.name in wanted]
    domas = preflight(args, sets)
    started = time.monotonic()
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    machine = machine_info(args.work)
    machine["busy at start"] = load()
    vers = versions(domas)
    env = dict(os.environ, DOMAS_STATE_DIR=str(args.work / "state"))
    runner = Runner(args.work, env, log)
    locals_, xrds = local_tools(domas), xrootd_tools(domas, args.xrdcp_parallel, args.xrdcp_plain)
    by_key: dict[str, Dataset] = {}
    try:
        src_root = args.work / "src"
        src_root.mkdir(exist_ok=True)
        os.chmod(args.work, 0o755)
        log("generating data ...")
        srcs = {d.name: make_dataset(src_root, d) for d in sets}
        os.sync()
        if args.only in (None, "local"):
            for d in sets:
                by_key[run_local(runner, locals_, d, srcs[d.name], args.reps)] = d
        if args.only in (None, "xrootd"):
            with XrootdServer(args.work) as server:
                for d in (d for d in sets if d.name != "small"):
                    for key in run_xrootd(runner, server, xrds, d, args.reps):
                        by_key[key] = d
    finally:
        if not args.keep:
            shutil.rmtree(args.work, ignore_errors=True)
    machine["busy at end"] = load()
    summary = summarize(runner, by_key)
    tools = {t.name: t for t in locals_ + xrds}
    text = report(args, machine, vers, summary, runner.failures, by_key, tools, time.monotonic() - started)
    print(text)
    if args.out:
        args.out.write_text(text)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "versions": vers, "results": summary,
                                               "failures": runner.failures}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
