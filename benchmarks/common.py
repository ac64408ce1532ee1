"""Helpers the benchmark scripts share: cold page cache, timed commands, medians, machine facts.

Invariants:
- A timed run starts with a cold page cache (`drop_caches`) so every tool reads from the device.
- `timed` measures wall time of the command alone; cache drops and clean-up are never inside it.
"""

from __future__ import annotations

import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import time
from pathlib import Path

MiB = 1 << 20
GiB = 1 << 30


def drop_caches() -> bool:
    """Flush dirty pages and drop the page cache; False when not permitted (not root)."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def run_timed(*cmds: list[str], env: dict | None = None) -> tuple[float, float]:
    """Run the commands one after another (a non-zero exit fails loudly): (wall s, CPU s user+sys)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    for cmd in cmds:
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace")[-800:]
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {err}")
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def timed(*cmds: list[str], env: dict | None = None) -> float:
    """Total wall time of the commands run one after another."""
    return run_timed(*cmds, env=env)[0]


def load() -> str:
    """Load average and CPU/IO pressure now: how busy the box was (other work skews timings)."""
    avg = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    out = [f"load {avg}"]
    for kind in ("cpu", "io"):
        p = Path(f"/proc/pressure/{kind}")
        if p.exists():
            some = p.read_text().splitlines()[0].split()
            out.append(f"{kind} pressure {some[3].split('=')[1]}% (avg300)")
    return ", ".join(out)


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def write_random_file(path: Path, size: int, block: int = 16 * MiB) -> None:
    """A file of `size` incompressible bytes (no tool can take a shortcut on it)."""
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(block, left)
            f.write(os.urandom(n))
            left -= n


def small_files(src: Path, files: int, size: int = MiB) -> None:
    """`files` random files of `size` bytes in `src` (kept when a tree of that many is there)."""
    if src.is_dir() and len(os.listdir(src)) == files:
        return
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    for i in range(files):
        write_random_file(src / f"f{i:05d}.bin", size)


def tree_size(path: Path) -> tuple[int, int]:
    """(regular files, total bytes) under path, or of path itself when it is a file."""
    if path.is_file():
        return 1, path.stat().st_size
    files = size = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            files += 1
            size += os.lstat(os.path.join(root, name)).st_size
    return files, size


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def first_line(cmd: list[str]) -> str:
    """First non-empty output line of a command (for `--version`), or why there is none."""
    if shutil.which(cmd[0]) is None:
        return "not installed"
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True).stdout
    return next((line.strip() for line in out.splitlines() if line.strip()), "?")


def machine_info(path: Path) -> dict[str, str]:
    """CPU model, cores, RAM, kernel and the filesystem holding `path`."""
    model = "?"
    for line in subprocess.run(["lscpu"], stdout=subprocess.PIPE, text=True).stdout.splitlines():
        if line.startswith("Model name:"):
            model = line.split(":", 1)[1].strip()
    mem_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:"))
    df = subprocess.run(["df", "-hT", str(path)], stdout=subprocess.PIPE, text=True).stdout.splitlines()[-1].split()
    return {"cpu": model, "cores": str(os.cpu_count()), "ram": f"{mem_kib / (1 << 20):.1f} GiB",
            "kernel": platform.release(), "python": platform.python_version(),
            "disk": f"{df[0]} ({df[1]}), size {df[2]}, {df[4]} free when the run started"}
