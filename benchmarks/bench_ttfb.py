"""Data service: time to the first byte (and to the last) of a large file, full GET and one range.

    python benchmarks/bench_ttfb.py                     # one 1 GiB file, 3 runs each
    python benchmarks/bench_ttfb.py --mib 256 --runs 5

Invariants:
- The file is a real file on the benchmark's disk (benchmarks/work/ttfb) on the central tier,
  catalogued with its adler32 in a fresh SQLite catalogue; the data service is the real app served
  by uvicorn on a loopback port; the client is httpx reading the body in 1 MiB pieces.
- "cold" runs evict the file's pages first (posix_fadvise DONTNEED on that file only, so other
  work on the host keeps its cache); "warm" runs read it once more first so it is in memory.
- Each run starts a new service, so no earlier read-back is remembered between runs.
- A run counts only if the body received equals the file (its adler32 is checked).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from domas.catalogue.base import Dataset, FileRecord, Replica  # noqa: E402
from domas.catalogue.sqlite import SQLiteCatalogue  # noqa: E402
from domas.dataservice.app import create_app  # noqa: E402
from tests.fixtures.dataservice import ServiceThread  # noqa: E402

MiB = 1 << 20
WORK = Path(__file__).resolve().parent / "work" / "ttfb"
DATASET = "/B1/202611/Data/BT-ttfb/raw"


def make(mib: int) -> tuple[SQLiteCatalogue, dict, str, str]:
    shutil.rmtree(WORK, ignore_errors=True)
    central = WORK / "central"
    path = central / DATASET.lstrip("/") / "big.bin"
    path.parent.mkdir(parents=True)
    value = 1
    block = os.urandom(MiB)
    with open(path, "wb") as fh:
        for i in range(mib):
            piece = block[:8] + i.to_bytes(8, "little") + block[16:]
            value = zlib.adler32(piece, value)
            fh.write(piece)
    st = path.stat()
    cat = SQLiteCatalogue(WORK / "catalogue.sqlite", synchronous="OFF")
    ds = cat.upsert_dataset(Dataset(beamtime="BT-ttfb", path=DATASET, metadata={"title": "ttfb"}, created_at=1.0))
    cat.upsert_files([FileRecord(ds.pid, "big.bin", st.st_size, f"{value:08x}", mtime=st.st_mtime,
                                 replicas={"central": Replica("verified", verified_at=1.0)})])
    return cat, {"central": str(central)}, ds.pid, f"{value:08x}"


def evict(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def warm(path: Path) -> None:
    with open(path, "rb") as fh:
        while fh.read(16 * MiB):
            pass


def one(cat, tiers, pid: str, want: str, headers: dict) -> tuple[float, float, int]:
    svc = ServiceThread(create_app(cat, tiers))
    try:
        url = f"{svc.url}/api/v1/datasets/{pid}/files/big.bin/content"
        started = time.perf_counter()
        with httpx.stream("GET", url, headers=headers, timeout=600) as r:
            r.raise_for_status()
            first = None
            value, n = 1, 0
            for piece in r.iter_bytes(MiB):
                if first is None:
                    first = time.perf_counter() - started
                value = zlib.adler32(piece, value)
                n += len(piece)
        total = time.perf_counter() - started
        if "Range" not in headers and f"{value:08x}" != want:
            raise SystemExit("the body received does not match the file")
        return first or total, total, n
    finally:
        svc.stop()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mib", type=int, default=1024)
    p.add_argument("--runs", type=int, default=3)
    a = p.parse_args(argv)
    cat, tiers, pid, want = make(a.mib)
    path = Path(tiers["central"]) / DATASET.lstrip("/") / "big.bin"
    print(f"file: {a.mib} MiB on {WORK}")
    for cache in ("cold", "warm"):
        for label, headers in (("full GET", {}), ("range 1 MiB", {"Range": "bytes=0-1048575"})):
            firsts, totals = [], []
            for _ in range(a.runs):
                evict(path) if cache == "cold" else warm(path)
                first, total, n = one(cat, tiers, pid, want, headers)
                firsts.append(first)
                totals.append(total)
            print(f"{cache:4} {label:11}: first byte median {statistics.median(firsts) * 1000:8.1f} ms "
                  f"(min {min(firsts) * 1000:.1f}, max {max(firsts) * 1000:.1f}); last byte median "
                  f"{statistics.median(totals):6.2f} s; {n} bytes")
    cat.close()
    shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
