"""Metadata acquisition over RabbitMQ: documents per second from the bus into the catalogue, with
every message acknowledged only after its catalogue commit; and the latency from a "file closed"
message to the first chunk of its copy.

Starts a private rabbitmq-server (tests/fixtures/rabbitmq.py) unless --url is given.

1. documents/s: real Bluesky documents (event_model.compose_run, as a RunEngine emits them) are
   published through domas.publish (spool + publisher confirms) to a durable queue, then the
   archiver's discovery (Archiver.discover with the amqp source, embedded SQLite catalogue) drains
   it; timed from the first poll until the last message is acknowledged. Two mixes: scans with
   events (events are acknowledged, their counts come with the stop document) and start/stop-only
   runs (every document writes the catalogue).
2. file closed -> first chunk: a real `domas up` (stability window 600 s, so only the message can
   take a file); for each file, the time from publishing its file-closed message until the agent
   has written the first bytes of its central copy (the part file, or the file, appears).

    python benchmarks/bench_bus.py [--runs 200] [--events 100] [--files 50] [--reps 3]

Writes benchmarks/results/bus.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from common import load, machine_info  # noqa: E402

PREFETCH = int(os.environ.get("BENCH_PREFETCH", "10000"))   # [source.amqp] prefetch default


def documents(runs: int, events: int) -> list[tuple[str, dict]]:
    from event_model import compose_run

    out, keys = [], {"det": {"source": "SIM:det", "dtype": "number", "shape": []},
                     "motor": {"source": "SIM:motor", "dtype": "number", "shape": []}}
    for r in range(runs):
        run = compose_run(metadata={"beamline": "B1", "beamtime_id": "BT0001", "proposal_id": "P2026-0042",
                                    "sample": "Ni foil", "plan_name": "scan", "scan_id": r + 1,
                                    "detectors": ["det"], "motors": ["motor"]})
        out.append(("start", run.start_doc))
        if events:
            desc = run.compose_descriptor(name="primary", data_keys=keys)
            out.append(("descriptor", desc.descriptor_doc))
            for i in range(events):
                t = time.time()
                out.append(("event", desc.compose_event(data={"det": 1.0 + i, "motor": 0.01 * i},
                                                        timestamps={"det": t, "motor": t}, seq_num=i + 1)))
        out.append(("stop", run.compose_stop()))
    return out


async def declare(url: str, exchange: str, queue: str) -> None:
    import aio_pika

    conn = await aio_pika.connect(url)
    async with conn:
        ch = await conn.channel()
        ex = await ch.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        await ch.declare_queue(f"{queue}.dead", durable=True)
        q = await ch.declare_queue(queue, durable=True)
        for key in ("bluesky.#", "file.#"):
            await q.bind(ex, key)


async def docs_per_second(url: str, runs: int, events: int, tmp: Path, state: Path | None = None) -> dict:
    """One stream drained into the catalogue in `state` (a fresh one when None: its dataset
    gathers the stream's runs; an existing one: the runs join those it holds)."""
    from domas.config import AmqpSourceConfig, CatalogueConfig, Config, SourceConfig, StorageConfig
    from domas.archive.archiver import Archiver
    from domas.catalogue import open_catalogue
    from domas.archive.sources import running, wait_for_news
    from domas.publish import Spool, drain

    exchange = f"bench-{uuid.uuid4().hex[:8]}"
    queue = f"{exchange}.archiver"
    docs = documents(runs, events)
    await declare(url, exchange, queue)
    spool = Spool(tmp / f"{exchange}-spool.sqlite")
    t0 = time.perf_counter()
    for name, doc in docs:
        spool.put(exchange, f"bluesky.{name}", json.dumps({"name": name, "doc": doc}).encode())
    t_spool = time.perf_counter() - t0
    await drain(spool, url)
    t_publish = time.perf_counter() - t0
    state = state or tmp / exchange
    cfg = Config(state_dir=str(state), storage=StorageConfig(beamline=str(tmp / "beamline"),
                                                             central=str(tmp / "central"), tape=str(tmp / "tape")),
                 source=SourceConfig(scan=False, amqp=replace(AmqpSourceConfig(), url=url, exchange=exchange, prefetch=PREFETCH,
                                                               queue=queue)))
    (tmp / "beamline").mkdir(exist_ok=True)
    cat = open_catalogue(CatalogueConfig(), state)
    archiver = Archiver(cfg, cat, "127.0.0.1:1")
    source = archiver.sources[0]
    stop, passes = asyncio.Event(), 0
    async with running(archiver.sources):
        while not source.connected:
            await asyncio.sleep(0.01)
        t1 = time.perf_counter()
        while sum(source.counts.values()) < len(docs):
            await wait_for_news(stop, archiver.sources, 0.05)
            await asyncio.to_thread(archiver.discover)
            passes += 1
        t_consume = time.perf_counter() - t1
    ds = cat.dataset_by_path(f"/B1/{time.strftime('%Y%m', time.gmtime())}/Data/BT0001/raw")
    complete = sum(1 for s in cat.scans_of(ds.pid) if s.exit_status == "success"
                   and s.num_events.get("primary", 0) == events)
    cat.close()
    spool.close()
    return {"runs": runs, "events_per_run": events, "documents": len(docs), "spool_s": t_spool,
            "publish_s": t_publish, "publish_docs_per_s": len(docs) / t_publish, "consume_s": t_consume,
            "consume_docs_per_s": len(docs) / t_consume, "passes": passes, "runs_complete": complete,
            "dead_letters": source.counts["dead_letter"], "state": str(state)}


def file_closed_latency(url: str, files: int, tmp: Path) -> dict:
    from domas.publish import Spool, drain, file_closed_body
    from tests.fixtures.common import free_port, up_config

    data = tmp / "up"
    exchange = f"bench-{uuid.uuid4().hex[:8]}"
    metrics = free_port()
    config = tmp / "up.toml"
    config.write_text(up_config(data, metrics=metrics, stability=600, extra=f"""[source.amqp]
url = "{url}"
exchange = "{exchange}"
queue = "{exchange}.archiver"
"""))
    log = open(tmp / "up.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "domas.cli", "--config", str(config), "up", "--data-dir",
                             str(data)], stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
    try:
        import urllib.request

        def connected() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=1) as r:
                    return "domas_archiver_bus_connected 1.0" in r.read().decode()
            except OSError:
                return False
        deadline = time.monotonic() + 60
        while not connected():
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("domas up did not connect to the bus; see up.log")
            time.sleep(0.1)
        raw = f"B1/{time.strftime('%Y%m', time.gmtime())}/Data/BT0001/raw"
        src, dst = data / "beamline" / raw, data / "central" / raw
        src.mkdir(parents=True, exist_ok=True)
        spool = Spool(tmp / "latency-spool.sqlite")
        latencies = []

        async def publish(path: Path) -> None:
            spool.put(exchange, "file.closed", file_closed_body(str(path), path.stat().st_size))
            await drain(spool, url)

        for i in range(files):
            name = f"frames_{i:04d}.h5"
            (src / name).write_bytes(os.urandom(1 << 20))
            t0 = time.perf_counter()
            asyncio.run(publish(src / name))
            while not (dst.is_dir() and any(name in e for e in os.listdir(dst))):
                if time.perf_counter() - t0 > 30:
                    raise RuntimeError(f"{name}: no copy after 30 s; see up.log")
                time.sleep(0.002)
            latencies.append(time.perf_counter() - t0)
            time.sleep(0.1)
        spool.close()
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()
    latencies.sort()
    return {"files": files, "p50_s": statistics.median(latencies),
            "p95_s": latencies[max(0, int(round(0.95 * len(latencies))) - 1)], "max_s": latencies[-1]}


def median_run(runs: list[dict]) -> dict:
    """The run with the median consume rate, with every rep's rate attached."""
    ordered = sorted(runs, key=lambda r: r["consume_docs_per_s"])
    return {**ordered[len(ordered) // 2], "all_consume_docs_per_s": [round(r["consume_docs_per_s"]) for r in runs]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="an existing broker (default: start a private rabbitmq-server)")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--events", type=int, default=100)
    ap.add_argument("--files", type=int, default=50)
    ap.add_argument("--reps", type=int, default=3, help="repetitions of each mix (the median is reported)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="domas-bench-bus-"))
    broker = None
    if not args.url:
        from tests.fixtures.rabbitmq import Broker

        broker = Broker(Path(tempfile.mkdtemp(prefix="domas-rabbitmq-")))
        broker.start()
    url = args.url or broker.url
    try:
        reps = {"with_events": [], "start_stop": [], "start_stop_more": []}
        for _ in range(args.reps):          # alternate the mixes: load drifts on a shared machine
            reps["with_events"].append(asyncio.run(docs_per_second(url, args.runs, args.events, tmp)))
            reps["start_stop"].append(asyncio.run(docs_per_second(url, args.runs * 10, 0, tmp)))
            # sustained: the same number of runs again into the dataset that already holds them
            reps["start_stop_more"].append(asyncio.run(docs_per_second(url, args.runs * 10, 0, tmp,
                                                                       Path(reps["start_stop"][-1]["state"]))))
            print(reps["with_events"][-1], reps["start_stop"][-1], reps["start_stop_more"][-1], flush=True)
        with_events, start_stop, more = (median_run(reps[k]) for k in ("with_events", "start_stop", "start_stop_more"))
        latency = file_closed_latency(url, args.files, tmp)
        print(latency, flush=True)
    finally:
        if broker is not None:
            broker.stop(keep_epmd=False)
            shutil.rmtree(broker.dir, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)       # catalogues, spools, copies: ~200 MB a run
    out = HERE / "results" / "bus.md"
    rows = []
    for label, r in (("scans with events", with_events), ("start/stop only", start_stop),
                     (f"start/stop only, into the dataset already holding {start_stop['runs']} runs", more)):
        rows.append(f"| {label} | {r['runs']} runs x {r['events_per_run']} events = {r['documents']} | "
                    f"{r['publish_docs_per_s']:,.0f} | **{r['consume_docs_per_s']:,.0f}** ({', '.join(f'{x:,}' for x in r['all_consume_docs_per_s'])}) | {r['passes']} | "
                    f"{r['runs_complete']:,} | {r['dead_letters']} |")
    out.write_text(f"""# Bus to catalogue (`benchmarks/bench_bus.py`)

Machine: {"; ".join(f"{k} {v}" for k, v in machine_info(HERE).items())}; {load()} at the end of the run.

## Documents per second, acknowledged after the catalogue commit (embedded SQLite catalogue)

| mix | documents | publish docs/s (spool + confirms) | consume docs/s (ack after commit): median (each rep) | archiver passes | runs complete in the dataset | dead letters |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}

## "File closed" to the first chunk of the central copy (`domas up`, 1 MiB files, one at a time)

{latency['files']} files: p50 **{latency['p50_s'] * 1000:.0f} ms**, p95 **{latency['p95_s'] * 1000:.0f} ms**, max {latency['max_s'] * 1000:.0f} ms.

Raw: {json.dumps({"with_events": with_events, "start_stop": start_stop, "start_stop_more": more, "latency": latency})}
""")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
