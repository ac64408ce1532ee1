"""The scrubber: how fast it re-reads stored copies, whether its rate limit holds, and how long a
bit flipped at rest takes to be found.

    python benchmarks/bench_scrub.py                    # 2 GiB in 64 files (about a minute)
    python benchmarks/bench_scrub.py --files 16 --file-mib 16

Invariants:
- The copies are real files on the benchmark's disk (benchmarks/work/scrub), catalogued in a fresh
  SQLite catalogue with their adler32, as the archiver leaves them; every figure is measured through
  the public Scrubber (catalogue query, reads through the Storage interface, catalogue writes).
- Each timed pass starts with a cold page cache when the script may drop it (root), so the disk,
  not memory, is read; the report says which.
- A run counts only if every copy came back "ok" on the clean passes and exactly the rotted copy
  came back "bad" on the last one.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MiB, drop_caches, load, machine_info  # noqa: E402

from domas.catalogue.base import Dataset, FileRecord, Replica, content_version  # noqa: E402
from domas.catalogue.sqlite import SQLiteCatalogue  # noqa: E402
from domas.archive.metrics import ScrubStats  # noqa: E402
from domas.archive.scrub import Scrubber  # noqa: E402

WORK = Path(__file__).resolve().parent / "work" / "scrub"
DATASET = "/B1/202611/Data/BT-bench/raw"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=64)
    p.add_argument("--file-mib", type=int, default=32)
    p.add_argument("--limit-mib", type=int, default=100, help="the rate limit to check (MiB/s)")
    return p.parse_args(argv)


def build(files: int, size: int) -> tuple[SQLiteCatalogue, str]:
    shutil.rmtree(WORK, ignore_errors=True)
    root = WORK / "central"
    cat = SQLiteCatalogue(WORK / "catalogue.sqlite")
    ds = cat.upsert_dataset(Dataset(beamtime="BT-bench", path=DATASET))
    block = os.urandom(size)
    records = []
    for i in range(files):
        data = block[i:] + block[:i]                     # distinct contents, one random draw
        p = root / DATASET.strip("/") / f"f{i:04d}.bin"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        records.append(FileRecord(ds.pid, p.name, size, adler32=f"{zlib.adler32(data):08x}", mtime=1.0,
                                  replicas={"central": Replica("verified", str(p), 100.0 + i,
                                                               content_version(size, 1.0))}))
    cat.upsert_files(records)
    return cat, str(root)


def one_pass(cat, root: str, expected: int, rate: float) -> tuple[float, dict, bool]:
    """Scrub until `expected` copies were checked, at `rate` bytes/s, passes 0.1 s apart as the
    archiver's loop runs them: (seconds, results by verdict, cold cache)."""
    cold = drop_caches()
    stats = ScrubStats()
    scrub = Scrubber(cat, lambda tier, pid, path: f"{root}{DATASET}/{path}", interval=1.0, rate=rate,
                     stats=stats, tiers=("central",), clock=time.time)
    counts: dict[str, int] = {}
    start = time.perf_counter()
    while sum(counts.values()) < expected:
        for _, verdict in scrub.run_once():
            counts[verdict] = counts.get(verdict, 0) + 1
        if sum(counts.values()) < expected:
            time.sleep(0.1)
    return time.perf_counter() - start, counts, cold


def main(argv=None) -> int:
    args = parse_args(argv)
    size, total = args.file_mib * MiB, args.files * args.file_mib * MiB
    print(machine_info(str(WORK.parent)))
    cat, root = build(args.files, size)
    print(f"{args.files} copies x {args.file_mib} MiB = {total / MiB:.0f} MiB; {load()}")
    secs, counts, cold = one_pass(cat, root, args.files, rate=1e12)
    assert set(counts) == {"ok"} and counts["ok"] >= args.files, counts
    print(f"unlimited: {counts['ok'] * size / MiB / secs:.0f} MiB/s ({secs:.2f} s, {'cold' if cold else 'warm'} cache)")
    cat.close()
    limit = args.limit_mib * MiB
    part = max(1, min(args.files, int(5 * limit // size)))   # about five seconds' worth at the limit
    cat, root = build(part, size)
    secs, counts, cold = one_pass(cat, root, part, rate=limit)
    got = counts.get("ok", 0) * size / MiB / secs
    print(f"limit {args.limit_mib} MiB/s: {got:.0f} MiB/s over {counts.get('ok', 0)} copies ({secs:.2f} s)")
    assert set(counts) == {"ok"} and counts["ok"] >= part and got <= args.limit_mib * 1.05, (counts, got)
    total = part * size
    victim = Path(f"{root}{DATASET}/f0000.bin")
    with open(victim, "r+b") as fh:
        fh.seek(size // 2)
        b = fh.read(1)
        fh.seek(size // 2)
        fh.write(bytes([b[0] ^ 1]))
    time.sleep(1.1)                                      # every copy due again (interval 1 s)
    secs, counts, cold = one_pass(cat, root, part, rate=1e12)
    assert counts.get("bad") == 1 and cat.get_file(cat.dataset_by_path(DATASET).pid, "f0000.bin").replicas[
        "central"].state == "bad", counts
    print(f"one flipped bit among {total / MiB:.0f} MiB found and marked bad by an unlimited pass of {secs:.2f} s "
          f"({'cold' if cold else 'warm'} cache)")
    cat.close()
    shutil.rmtree(WORK, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
