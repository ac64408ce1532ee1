"""Metadata acquisition over a real RabbitMQ broker: Bluesky documents from a real RunEngine with
ophyd.sim devices, and detector "file closed" messages, consumed by `domas up` as a user runs it.

The broker is one per test session (tests/fixtures/rabbitmq.py); each test gets its own exchange
and queues, so tests never see each other's messages. The catalogue is read from its SQLite file.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
import zlib
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import pytest

from domas.catalogue import Dataset, open_catalogue
from domas.catalogue.base import with_scans
from domas.config import CatalogueConfig
from tests.fixtures.common import free_port, stop_process, up_config, wait_until
from tests.fixtures.controller import _scrape

YM = datetime.now(timezone.utc).strftime("%Y%m")
RAW = f"B1/{YM}/Data/BT0001/raw"


class BusUp:
    """`domas up` with [source.amqp] on, its own exchange and queue on the shared broker."""

    def __init__(self, tmp: Path, broker, stability: float = 600, files_grace: float = 600) -> None:
        self.tmp, self.broker = tmp, broker
        self.data = tmp / "domas-data"
        self.exchange = f"domas-{uuid.uuid4().hex[:8]}"
        self.queue = f"{self.exchange}.archiver"
        self.metrics = free_port()
        self.config = tmp / "domas.toml"
        self.config.write_text(up_config(self.data, metrics=self.metrics, stability=stability, extra=f"""[source.amqp]
url = "{broker.url}"
exchange = "{self.exchange}"
queue = "{self.queue}"
files_grace = {files_grace}
"""))
        self.beamline = self.data / "beamline"
        self.start()

    def start(self) -> None:
        self.log = open(self.tmp / "up.log", "a")
        self.proc = subprocess.Popen([sys.executable, "-m", "domas.cli", "--config", str(self.config), "up",
                                      "--data-dir", str(self.data)], stdout=self.log, stderr=subprocess.STDOUT,
                                     cwd=self.tmp, env={**os.environ, "DOMAS_DEBUG": "1"})
        wait_until(lambda: (self.data / "domas.toml").exists(), 60, "domas up", self.proc)
        wait_until(lambda: self.metric("domas_archiver_bus_connected") == 1.0, 30, "bus consumer", self.proc)

    def stop(self) -> None:
        stop_process(self.proc, timeout=30)
        self.log.close()

    def metric(self, name: str, labels: str = "") -> float | None:
        return _scrape(self.metrics, name, labels)

    def catalogue(self):
        return open_catalogue(CatalogueConfig(), self.data / "state")

    def dataset(self, path: str) -> Dataset | None:
        """The dataset as its page shows it: its runs' scan records under metadata "scans"."""
        with self.catalogue() as cat:
            ds = cat.dataset_by_path("/" + path)
            return ds and replace(ds, metadata=with_scans(ds.metadata, cat.scans_of(ds.pid)))

    def file(self, rel: str):
        dpath, _, name = rel.rpartition("/raw/")
        ds = self.dataset(dpath + "/raw")
        if ds is None:
            return None
        with self.catalogue() as cat:
            return cat.get_file(ds.pid, name)

    def drop(self, rel: str, data: bytes) -> Path:
        p = self.beamline / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        return p


@pytest.fixture
def bus_up(tmp_path, rabbitmq):
    started = []

    def start(**kw) -> BusUp:
        u = BusUp(tmp_path, rabbitmq, **kw)
        started.append(u)
        return u

    yield start
    for u in started:
        u.stop()


def run_scan(publisher, n: int = 5, **md):
    """A real RunEngine scanning a simulated motor with a simulated detector; returns the run uid."""
    from bluesky import RunEngine
    from bluesky.plans import scan
    from ophyd.sim import det, motor

    RE = RunEngine({})
    RE.subscribe(publisher)
    (uid,) = RE(scan([det], motor, -1, 1, n, md=md))
    return uid


async def dead_letters(url: str, queue: str) -> list[tuple[bytes, dict]]:
    import aio_pika

    conn = await aio_pika.connect(url)
    async with conn:
        ch = await conn.channel()
        q = await ch.declare_queue(queue, durable=True)
        out = []
        while (m := await q.get(fail=False, timeout=5)) is not None:
            out.append((m.body, dict(m.headers)))
            await m.ack()
        return out


def publish_raw(url: str, exchange: str, routing_key: str, body: bytes) -> None:
    async def go():
        import aio_pika

        conn = await aio_pika.connect(url)
        async with conn:
            ch = await conn.channel()
            ex = await ch.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
            await ex.publish(aio_pika.Message(body), routing_key)
    asyncio.run(go())


def test_bluesky_scan_metadata_reaches_the_dataset(bus_up, tmp_path):
    from domas.bluesky import Publisher

    u = bus_up()
    with u.catalogue() as cat:          # an operator described the sample before the beamtime
        cat.upsert_dataset(Dataset(beamtime="BT0001", path="/" + RAW, metadata={"sample": "set by operator"}))
    pub = Publisher(u.broker.url, exchange=u.exchange, spool=tmp_path / "spool.sqlite")
    try:
        uid = run_scan(pub, beamline="B1", beamtime_id="BT0001", proposal_id="P2026-0042", sample="Ni foil",
                       scan_title="Ni K-edge")
        assert pub.flush(30)
    finally:
        pub.close()

    def done():
        ds = u.dataset(RAW)
        return ds is not None and ds.metadata.get("scans", {}).get(uid, {}).get("exit_status") == "success"
    wait_until(done, 20, "scan metadata in the catalogue")
    ds = u.dataset(RAW)
    scan_md = ds.metadata["scans"][uid]
    assert scan_md["plan_name"] == "scan" and scan_md["detectors"] == ["det"] and scan_md["motors"] == ["motor"]
    assert scan_md["num_events"] == {"primary": 5}
    assert scan_md["streams"]["primary"] == ["det", "motor", "motor_setpoint"]
    assert scan_md["start_time"] < scan_md["stop_time"] and isinstance(scan_md["scan_id"], int)
    assert ds.metadata["proposal"] == "P2026-0042"
    assert ds.metadata["sample"] == "set by operator", "operator-set metadata is never overwritten"
    with u.catalogue() as cat:
        assert cat.get_beamtime("BT0001").proposal == "P2026-0042"
        assert "scans" not in cat.dataset_by_path("/" + RAW).metadata, "runs are records of their own"
        assert cat.get_scan(uid).sample == "Ni foil"
    # a file of the scan arriving later keeps the dataset's metadata (no blank re-upsert)
    p = u.drop(f"{RAW}/scan_{uid[:8]}.h5", os.urandom(1000))
    subprocess.run([sys.executable, "-m", "domas.cli", "publish", "closed", str(p), "--url", u.broker.url,
                    "--exchange", u.exchange, "--spool", str(tmp_path / "cli-spool.sqlite")], check=True,
                   capture_output=True)
    wait_until(lambda: u.file(f"{RAW}/{p.name}") is not None, 20, "file catalogued")
    assert u.dataset(RAW).metadata["scans"][uid]["exit_status"] == "success"
    # acknowledged right after the commit the test just saw
    wait_until(lambda: (u.metric("domas_archiver_bus_messages_total", 'result="committed"') or 0) >= 9, 10,
               "file.closed acknowledged")


def test_file_closed_is_copied_at_once_and_checked_against_the_writer(bus_up, tmp_path):
    from domas.publish import Spool, drain, file_closed_body

    u = bus_up()                        # stability window 600 s: only the message can take these files
    good, bad = os.urandom(2_000_000), os.urandom(300_000)
    pg, pb = u.drop(f"{RAW}/frames_0001.h5", good), u.drop(f"{RAW}/frames_0002.h5", bad)
    spool = Spool(tmp_path / "spool.sqlite")
    spool.put(u.exchange, "file.closed", file_closed_body(str(pg), len(good), f"{zlib.adler32(good):08x}"))
    spool.put(u.exchange, "file.closed", file_closed_body(str(pb), len(bad), "00000001"))   # writer is wrong
    t0 = time.monotonic()
    asyncio.run(drain(spool, u.broker.url))

    def copying():
        f = u.file(f"{RAW}/frames_0001.h5")
        return f is not None and "central" in f.replicas
    wait_until(copying, 10, "copy submitted")
    latency = time.monotonic() - t0
    assert latency < 1.0, f"file closed -> copy submitted took {latency:.2f} s"
    wait_until(lambda: u.file(f"{RAW}/frames_0001.h5").replicas["central"].state == "verified", 30, "central copy")
    assert (u.data / "central" / RAW / "frames_0001.h5").read_bytes() == good
    assert u.file(f"{RAW}/frames_0001.h5").adler32 == f"{zlib.adler32(good):08x}"
    wait_until(lambda: u.file(f"{RAW}/frames_0002.h5") is not None
               and u.file(f"{RAW}/frames_0002.h5").replicas.get("central", None) is not None
               and u.file(f"{RAW}/frames_0002.h5").replicas["central"].state == "failed", 30,
               "the copy that disagrees with the writer's adler32 is not counted")
    spool.close()


def test_a_run_whose_files_never_arrive_is_reported(bus_up, tmp_path):
    from domas.bluesky import Publisher

    u = bus_up(files_grace=1)
    pub = Publisher(u.broker.url, exchange=u.exchange, spool=tmp_path / "spool.sqlite")
    try:
        lost = run_scan(pub, n=2, data_path=str(u.beamline / RAW / "scan_lost"))
        kept = run_scan(pub, n=2, data_path=str(u.beamline / RAW / "scan_kept"))
        p = u.drop(f"{RAW}/scan_kept/frames.h5", b"f" * 4096)
        pub.spool.put(u.exchange, "file.closed", json.dumps({"path": str(p), "size": 4096}).encode())
        assert pub.flush(30)
    finally:
        pub.close()

    def files_of(uid):
        ds = u.dataset(RAW)
        return ((ds.metadata.get("scans") or {}).get(uid) or {}).get("files") if ds else None
    wait_until(lambda: files_of(lost) is not None and files_of(kept) is not None, 20, "runs checked for files")
    assert files_of(lost) == 0 and files_of(kept) == 1
    assert u.dataset(RAW).metadata["scans"][kept]["data_path"] == "scan_kept"
    assert u.metric("domas_archiver_runs_without_files_total") == 1
    assert "no file of it arrived" in (tmp_path / "up.log").read_text()


def test_poison_messages_go_to_the_dead_letter_queue(bus_up):
    u = bus_up()
    publish_raw(u.broker.url, u.exchange, "file.closed", b"\x00not json")
    publish_raw(u.broker.url, u.exchange, "bluesky.stop",
                json.dumps({"name": "stop", "doc": {"uid": "s1", "run_start": "never-started"}}).encode())
    publish_raw(u.broker.url, u.exchange, "file.closed",
                json.dumps({"path": "/etc/passwd", "size": 1}).encode())
    publish_raw(u.broker.url, u.exchange, "bluesky.start",      # valid JSON, a time no calendar holds
                json.dumps({"name": "start", "doc": {"uid": "r-bad", "time": 1e20, "beamline": "B1",
                                                     "beamtime_id": "BT0001"}}).encode())
    p = u.drop(f"{RAW}/after_poison.h5", b"x" * 100)
    publish_raw(u.broker.url, u.exchange, "file.closed", json.dumps({"path": str(p), "size": 100}).encode())
    wait_until(lambda: u.file(f"{RAW}/after_poison.h5") is not None, 20, "the consumer goes on after poison")
    wait_until(lambda: u.metric("domas_archiver_bus_messages_total", 'result="dead_letter"') == 4, 10, "metric")
    dead = asyncio.run(dead_letters(u.broker.url, f"{u.queue}.dead"))
    reasons = sorted(h["x-domas-reason"] for _, h in dead)
    assert len(dead) == 4, reasons
    assert any("not JSON" in r for r in reasons)
    assert any("start document never arrived" in r for r in reasons)
    assert any("not under the beamline root" in r for r in reasons)
    assert any("could not be read" in r for r in reasons)
    assert dead[0][0] == b"\x00not json" and dead[0][1]["x-domas-routing-key"] == "file.closed"


def test_publish_cli_spools_while_the_bus_is_unreachable(tmp_path, rabbitmq):
    spool = tmp_path / "spool.sqlite"
    exchange = f"domas-{uuid.uuid4().hex[:8]}"
    queue = f"{exchange}.probe"

    async def bind():
        import aio_pika

        conn = await aio_pika.connect(rabbitmq.url)
        async with conn:
            ch = await conn.channel()
            ex = await ch.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
            q = await ch.declare_queue(queue, durable=True)
            await q.bind(ex, "#")
    asyncio.run(bind())
    dead_url = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    args = ["--exchange", exchange, "--spool", str(spool), "--timeout", "1"]
    for i in range(3):
        r = subprocess.run([sys.executable, "-m", "domas.cli", "publish", "closed", f"/data/f{i}.h5", "--size", str(i),
                            "--url", dead_url, *args], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert f"{i + 1} message(s) kept in the spool" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "domas.cli", "publish", "replay", "--url", rabbitmq.url, *args],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "3 message(s) sent" in r.stdout, r.stderr
    got = asyncio.run(dead_letters(rabbitmq.url, queue))
    assert [json.loads(b)["path"] for b, _ in got] == ["/data/f0.h5", "/data/f1.h5", "/data/f2.h5"]


def test_broker_restart_mid_stream_loses_and_doubles_nothing(bus_up, tmp_path):
    """Runs 1-2 before, 3-4 while the broker is down (the publisher spools), 5 after it returns."""
    from domas.bluesky import Publisher

    u = bus_up()
    pub = Publisher(u.broker.url, exchange=u.exchange, spool=tmp_path / "spool.sqlite", retry_seconds=0.2)
    uids, files = [], []

    def scan_and_file(i: int) -> None:
        uids.append(run_scan(pub, n=3, beamline="B1", beamtime_id="BT0001", sample=f"s{i}"))
        p = u.drop(f"{RAW}/run{i}.h5", os.urandom(50_000 + i))
        pub.spool.put(u.exchange, "file.closed",
                      json.dumps({"path": str(p), "size": p.stat().st_size}).encode())
        files.append(p.name)

    try:
        for i in (1, 2):
            scan_and_file(i)
        assert pub.flush(30)
        u.broker.stop()
        for i in (3, 4):
            scan_and_file(i)
        assert not pub.flush(1.0) and len(pub.spool) > 0, "documents wait in the spool while the broker is down"
        u.broker.start()
        scan_and_file(5)
        assert pub.flush(60)
    finally:
        pub.close()

    def all_in():
        ds = u.dataset(RAW)
        scans = (ds.metadata.get("scans") or {}) if ds else {}
        return all(scans.get(x, {}).get("exit_status") == "success" for x in uids) and all(
            u.file(f"{RAW}/{name}") is not None for name in files)
    wait_until(all_in, 60, "every run and file after the restart")
    ds = u.dataset(RAW)
    assert set(ds.metadata["scans"]) == set(uids) and ds.file_count == len(files) == 5
    assert all(ds.metadata["scans"][x]["num_events"] == {"primary": 3} for x in uids)
    wait_until(lambda: all(u.file(f"{RAW}/{n}").replicas.get("central") is not None
                           and u.file(f"{RAW}/{n}").replicas["central"].state == "verified" for n in files),
               60, "every file copied")
    assert u.metric("domas_archiver_bus_messages_total", 'result="dead_letter"') == 0
    assert asyncio.run(dead_letters(u.broker.url, f"{u.queue}.dead")) == []


def test_archiver_killed_mid_stream_loses_and_doubles_nothing(bus_up, tmp_path):
    """domas up is killed (SIGKILL) while files are announced in a steady stream; after a restart every
    run and file is there once, including runs whose start was consumed before the kill."""
    import signal
    import threading

    from domas.bluesky import Publisher

    u = bus_up()
    pub = Publisher(u.broker.url, exchange=u.exchange, spool=tmp_path / "spool.sqlite")
    names = [f"frame_{i:03d}.h5" for i in range(150)]

    def announce():
        for name in names:
            p = u.drop(f"{RAW}/{name}", os.urandom(2000))
            pub.spool.put(u.exchange, "file.closed", json.dumps({"path": str(p), "size": 2000}).encode())
            pub.flush(0)
            time.sleep(0.02)
    try:
        uids = [run_scan(pub, n=4, beamline="B1", beamtime_id="BT0001") for _ in range(2)]
        stream = threading.Thread(target=announce)
        stream.start()
        wait_until(lambda: u.file(f"{RAW}/{names[0]}") is not None, 20, "consumption under way")
        os.kill(u.proc.pid, signal.SIGKILL)
        u.proc.wait(timeout=30)
        u.log.close()
        uids.append(run_scan(pub, n=4, beamline="B1", beamtime_id="BT0001"))     # while the archiver is down
        u.start()
        stream.join(timeout=60)
        uids.append(run_scan(pub, n=4, beamline="B1", beamtime_id="BT0001"))     # new work after the restart
        assert pub.flush(30)
    finally:
        pub.close()
    with u.catalogue() as cat:
        before_restart = sum(1 for n in names if cat.get_file(u.dataset(RAW).pid, n) is not None)

    def all_in():
        ds = u.dataset(RAW)
        scans = (ds.metadata.get("scans") or {}) if ds else {}
        return all(scans.get(x, {}).get("exit_status") == "success" for x in uids) and ds.file_count == len(names)
    wait_until(all_in, 30, "every run and file after the kill")
    ds = u.dataset(RAW)
    assert set(ds.metadata["scans"]) == set(uids) and ds.file_count == len(names), before_restart
    assert all(ds.metadata["scans"][x]["num_events"] == {"primary": 4} for x in uids)
    assert asyncio.run(dead_letters(u.broker.url, f"{u.queue}.dead")) == []


def test_publish_from_the_up_directory_finds_the_bus_and_nexus_fills_what_bluesky_left_empty(bus_up, tmp_path):
    """`domas up` writes [source.amqp] into domas-data/domas.toml, so `domas publish` run where
    `domas up` runs needs no --url; a NeXus file arriving after the Bluesky documents still adds
    its fields to the dataset (only the empty ones: the scan's sample stays)."""
    import h5py

    from domas.bluesky import Publisher

    u = bus_up()
    written = (u.data / "domas.toml").read_text()
    assert "[source.amqp]" in written and u.exchange in written
    assert (u.data / "domas.toml").stat().st_mode & 0o077 == 0 or "@" not in u.broker.url
    pub = Publisher(u.broker.url, exchange=u.exchange, spool=tmp_path / "spool.sqlite")
    try:
        uid = run_scan(pub, beamline="B1", beamtime_id="BT0001", sample="Ni foil")
        assert pub.flush(30)
    finally:
        pub.close()
    wait_until(lambda: uid in ((u.dataset(RAW) or Dataset(beamtime="", path="")).metadata.get("scans") or {}), 20,
               "scan metadata in the catalogue")
    p = u.beamline / RAW / "scan_0001.nxs"
    p.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(p, "w") as fh:
        entry = fh.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry["title"] = "Ni K-edge XAS"
        sample = entry.create_group("sample")
        sample.attrs["NX_class"] = "NXsample"
        sample["name"] = "Ni foil, 5 um"
    env = {k: v for k, v in os.environ.items() if k != "DOMAS_CONFIG"}
    r = subprocess.run([sys.executable, "-m", "domas.cli", "publish", "closed", str(p), "--spool",
                        str(tmp_path / "cli-spool.sqlite")], cwd=u.tmp, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    wait_until(lambda: u.file(f"{RAW}/{p.name}") is not None, 20, "file catalogued")
    wait_until(lambda: u.dataset(RAW).metadata.get("format") == "nexus", 20, "NeXus metadata extracted")
    md = u.dataset(RAW).metadata
    assert md["title"] == "Ni K-edge XAS" and md["source"] == p.name
    assert md["sample"] == "Ni foil", "what the Bluesky documents set is not overwritten"
    assert md["scans"][uid]["exit_status"] == "success"
