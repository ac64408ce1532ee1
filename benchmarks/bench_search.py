"""Dataset search at scale: the embedded SQLite catalogue filled through the bulk path, then every
query type of GET /api/v1/datasets (with its total and facets) timed through the public interface.

    python benchmarks/bench_search.py                         # 10^6 datasets (several minutes)
    python benchmarks/bench_search.py --datasets 100000       # a smoke run
    python benchmarks/bench_search.py --dir benchmarks/work/search1m            # fill once, keep the file
    python benchmarks/bench_search.py --dir benchmarks/work/search1m --reuse    # time again on it
    python benchmarks/bench_search.py --dir benchmarks/work/search1m --reuse --busy 2   # ... beside 2 busy loops

Invariants:
- Datasets go in through `upsert_datasets` in batches (one transaction each, search index included);
  beamtimes, proposals and PIs are few, as at a facility; ~5 % of datasets are under embargo.
- One timing is one `search_datasets` call (page of 100 + total + facets), as the API makes it;
  figures are p50 and p95 over `--reps` runs with varied keys, each cold: the catalogue's
  remembered counts are forgotten first (as after any write); every query type runs for an
  anonymous caller and for a team member of one beamtime (who also sees its embargoed datasets).
- `--busy N` starts N CPU-bound processes before the timings and stops them after: the share of a
  CPU a query gets on a machine shared with other work (load ~N+1), reproducibly.
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load, machine_info  # noqa: E402

from domas.catalogue.base import Beamtime, Dataset, Proposal  # noqa: E402
from domas.catalogue.search import SearchQuery  # noqa: E402
from domas.catalogue.sqlite import SQLiteCatalogue  # noqa: E402

SAMPLES = ["lysozyme", "insulin", "ferritin", "graphene", "perovskite", "zeolite", "cathode", "anode",
           "catalyst", "basalt", "bone", "cellulose", "silicon", "quartz", "myoglobin", "hemoglobin"]
TECHNIQUES = ["diffraction", "tomography", "spectroscopy", "scattering", "imaging", "ptychography"]
LINES = [f"B{i}" for i in range(1, 15)]
YEAR0 = 1_577_836_800.0          # 2020-01-01


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", type=int, default=1_000_000)
    p.add_argument("--beamtimes", type=int, default=2000)
    p.add_argument("--batch", type=int, default=10_000)
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--dir", default=None, help="where the catalogue goes (default: a temporary directory)")
    p.add_argument("--reuse", action="store_true", help="time the queries on the catalogue a previous run left "
                                                         "in --dir (same --datasets and --beamtimes)")
    p.add_argument("--busy", type=int, default=0, help="CPU-bound processes to run beside the timings")
    return p.parse_args(argv)


def fill(cat: SQLiteCatalogue, n: int, beamtimes: int, batch: int, rng: random.Random) -> float:
    pis = [f"PI Person{i}" for i in range(200)]
    for i in range(beamtimes // 4):
        cat.upsert_proposal(Proposal(f"P{i:05d}", f"{rng.choice(SAMPLES).title()} {rng.choice(TECHNIQUES)} study",
                                     rng.choice(pis)))
    span = 6 * 365 * 86400
    for i in range(beamtimes):
        start = YEAR0 + i * span / beamtimes
        cat.upsert_beamtime(Beamtime(f"BT{i:05d}", rng.choice(LINES), f"P{i // 4:05d}", rng.choice(pis),
                                     team=(f"Member{i}a", f"Member{i}b"), start=start, end=start + 3 * 86400))
    t0 = time.perf_counter()
    for first in range(0, n, batch):
        rows = []
        for k in range(first, min(n, first + batch)):
            bt = k * beamtimes // n
            created = YEAR0 + k * span / n
            embargo = created + 3 * 365 * 86400 if rng.random() < 0.05 else None
            rows.append(Dataset(f"BT{bt:05d}", f"/data/BT{bt:05d}/scan{k:07d}", rng.choice(("raw", "processed")),
                                embargo_end=embargo, created_at=created,
                                metadata={"title": f"{rng.choice(SAMPLES)} {rng.choice(TECHNIQUES)} scan {k}",
                                          "sample": {"name": rng.choice(SAMPLES)}}))
        cat.upsert_datasets(rows)
    return time.perf_counter() - t0


def queries(rng: random.Random, beamtimes: int, n: int, now: float) -> dict:
    """Each query type of GET /api/v1/datasets, as a function of the caller's scope (anonymous:
    no embargoed datasets; a team member: also the embargoed ones of their beamtime)."""
    def bt() -> str:
        return f"bt{rng.randrange(beamtimes):05d}"                     # lower case: ids ignore case

    def month() -> dict:
        start = YEAR0 + rng.random() * 5 * 365 * 86400
        return {"start": start, "end": start + 30 * 86400}

    span = 6 * 365 * 86400
    return {
        "no filter (front page)": lambda: {},
        "q common word": lambda: {"q": rng.choice(SAMPLES)},
        "q two common words": lambda: {"q": f"{rng.choice(SAMPLES)} {rng.choice(TECHNIQUES)}"},
        "q prefix": lambda: {"q": rng.choice(SAMPLES)[:4]},
        # every title has "scan", every path a scan0000001 word: a prefix that begins ~10^6 words
        "q prefix of 10^6 words (scan)": lambda: {"q": "scan"},
        "q short prefix (s, sc, sca, scan0)": lambda: {"q": rng.choice(("s", "sc", "sca", "scan0"))},
        "q rare word (a scan number)": lambda: {"q": str(rng.randrange(n))},
        "beamtime": lambda: {"beamtime": bt()},
        "proposal": lambda: {"proposal": f"p{rng.randrange(beamtimes // 4):05d}"},
        "pi": lambda: {"pi": f"pi person{rng.randrange(200)}"},
        "from/to (one month)": month,
        "facet click: beamline": lambda: {"beamline": rng.choice(LINES)},
        "facet click: data type": lambda: {"data_type": rng.choice(("raw", "processed"))},
        "facet click: year": lambda: {"year": str(2020 + rng.randrange(6))},
        "facet click: access embargoed": lambda: {"access": "embargoed"},
        "facet clicks: year + data type": lambda: {"year": str(2020 + rng.randrange(6)),
                                                   "data_type": rng.choice(("raw", "processed"))},
        "q common word + facet click: beamline": lambda: {"q": rng.choice(SAMPLES), "beamline": rng.choice(LINES)},
        "sort by title": lambda: {"sort": "title"},
        "paging: deep cursor": lambda: {"after": (YEAR0 + rng.random() * span, "")},
    }


def scopes(rng: random.Random, beamtimes: int) -> dict:
    return {"anonymous": lambda: {},
            # a beamtime of the last three years: its embargoed datasets are still under embargo
            "team member": lambda: {"member_of": (f"BT{rng.randrange(beamtimes // 2, beamtimes):05d}",)}}


def main(argv=None) -> int:
    args = parse_args(argv)
    rng = random.Random(7)
    where = Path(args.dir or tempfile.mkdtemp(prefix="domas-bench-search-"))
    cat = SQLiteCatalogue(where / "catalogue.sqlite")
    print(", ".join(f"{k} {v}" for k, v in machine_info(where).items()), "|", load())
    held = cat._db.execute("SELECT count(*) FROM datasets").fetchone()[0]
    if args.reuse:
        print(f"\nreusing the {held} datasets in {where}\n")
    elif held:
        sys.exit(f"{where} already holds {held} datasets: add --reuse to time them, or give an empty --dir")
    else:
        secs = fill(cat, args.datasets, args.beamtimes, args.batch, rng)
        print(f"\nfilled {args.datasets} datasets through upsert_datasets in {secs:.1f} s "
              f"({args.datasets / secs:,.0f} datasets/s, batches of {args.batch})\n")
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        time_queries(cat, args, rng)
    finally:
        for p in busy:
            p.kill()
            p.wait()
    cat.close()
    return 0


def time_queries(cat: SQLiteCatalogue, args: argparse.Namespace, rng: random.Random) -> None:
    now = YEAR0 + 6 * 365 * 86400
    kinds = queries(rng, args.beamtimes, args.datasets, now)
    for make in kinds.values():                           # warm-up: the file's pages into memory, untimed
        cat.search_datasets(SearchQuery(now=now, **make()))
    print("| query (page of 100 + total + facets) | scope | p50 ms | p95 ms | matches (last run) |")
    print("|---|---|---|---|---|")
    for name, make in kinds.items():
        for scope, who in scopes(rng, args.beamtimes).items():
            times, total = [], 0
            for _ in range(args.reps):
                q = SearchQuery(now=now, **make(), **who())
                cat._counts.clear()                       # cold: as the first query after a write
                t0 = time.perf_counter()
                res = cat.search_datasets(q)
                times.append((time.perf_counter() - t0) * 1000)
                total = res.total
            times.sort()
            p95 = times[min(len(times) - 1, int(0.95 * len(times)))]
            print(f"| {name} | {scope} | {statistics.median(times):.1f} | {p95:.1f} | {total:,} |", flush=True)
    res = cat.search_datasets(SearchQuery(now=now, limit=100))
    cat._counts.clear()
    t0 = time.perf_counter()
    cat.search_datasets(SearchQuery(now=now, limit=100, after=res.next))
    print(f"\nsecond page by cursor (cold): {(time.perf_counter() - t0) * 1000:.1f} ms")
    t0 = time.perf_counter()
    cat.search_datasets(SearchQuery(now=now, limit=100, after=res.next))
    print(f"the same again (counts remembered): {(time.perf_counter() - t0) * 1000:.1f} ms")
    print("|", load())


if __name__ == "__main__":
    sys.exit(main())
