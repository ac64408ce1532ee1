"""Integrity at rest through a real `domas up`: rewrites after archiving, bit rot, repair, odd names.

Each test starts `domas up` as a process with short retentions and a one-second stability window,
acts on the files as a detector or a failing disk would, and observes the tiers on disk, the
catalogue file, the data service and /metrics from outside.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
import zlib
from pathlib import Path

import pytest

from domas.catalogue.sqlite import SQLiteCatalogue
from tests.fixtures.common import stop_process, wait_until

PROC = "B1/202611/Data/BT0001/processed"
RAW = "B1/202611/Data/BT0001/raw"


def adler(data: bytes) -> str:
    return f"{zlib.adler32(data):08x}"


class Up:
    """`domas up` with [policy] overrides; the catalogue is read from its SQLite file."""

    def __init__(self, tmp: Path, **policy) -> None:
        self.tmp, self.data = tmp, tmp / "domas-data"
        pol = {"stability_seconds": "1", "rescan_seconds": "1", "beamline_retention": '"1h"',
               "central_retention": '"90d"', **policy}
        self.config = tmp / "domas.toml"
        self.config.write_text(f'state_dir = "{self.data}/state"\n[storage]\nbeamline = "{self.data}/beamline"\n'
                               f'central = "{self.data}/central"\ntape = "{self.data}/tape"\n[policy]\n'
                               + "".join(f"{k} = {v}\n" for k, v in pol.items())
                               + '[controller]\nlisten = "127.0.0.1:0"\nmetrics_listen = "127.0.0.1:0"\n'
                               'http_listen = "127.0.0.1:0"\n[agent]\nmetrics_listen = "127.0.0.1:0"\n')
        self.log_path = tmp / "up.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "domas.cli", "--config", str(self.config), "up",
                                      "--data-dir", str(self.data)], stdout=self.log, stderr=subprocess.STDOUT,
                                     cwd=tmp)
        wait_until(lambda: (self.data / "domas.toml").exists(), timeout=60, what="domas up", proc=self.proc)
        self.cat = SQLiteCatalogue(self.data / "state" / "catalogue.sqlite")
        self.written = (self.data / "domas.toml").read_text()

    def url(self) -> str:
        return "http://" + re.search(r'http_listen = "([^"]+)"', self.written).group(1)

    def metrics_url(self) -> str:
        return re.search(r"metrics (http://\S+/metrics)", self.log_path.read_text()).group(1)

    def drop(self, rel: str, data: bytes) -> Path:
        p = self.data / "beamline" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        return p

    def record(self, rel: str):
        ds_path, _, name = ("/" + rel).rpartition("/")
        dataset_path = "/".join(ds_path.split("/")[:6])
        ds = self.cat.dataset_by_path(dataset_path)
        inner = rel[len(dataset_path):]
        return ds and self.cat.get_file(ds.pid, inner)

    def state(self, rel: str, tier: str) -> str | None:
        f = self.record(rel)
        return f and f.replicas.get(tier) and f.replicas[tier].state

    def stop(self) -> None:
        self.cat.close()
        stop_process(self.proc, timeout=30)
        self.log.close()


@pytest.fixture
def up(tmp_path):
    started = []

    def start(**policy) -> Up:
        u = Up(tmp_path, **policy)
        started.append(u)
        return u

    yield start
    for u in started:
        u.stop()


def test_rewrite_after_archiving_ends_with_the_new_content_on_every_tier(up):
    """Finding 1: an archived file is rewritten (same name, same size, new bytes) just before its
    beamline retention ends, inside the stability window. Old main deleted the beamline copy (the
    only copy of the new content: central and tape hold the old bytes) and never archived it."""
    u = up(beamline_retention='"4s"', stability_seconds="2.5")
    rel = f"{PROC}/d.bin"
    old, new = os.urandom(300_000), os.urandom(300_000)
    p = u.drop(rel, old)
    wait_until(lambda: u.state(rel, "tape") == "verified", timeout=60, what="first tape copy")
    since = u.record(rel).replicas["beamline"].verified_at
    wait_until(lambda: time.time() >= since + 3.0, timeout=30, what="retention nearly over")
    p.write_bytes(new)                                   # the detector rewrites it
    started = time.monotonic()

    def new_content_somewhere() -> bool:
        for tier in ("beamline", "central", "tape"):
            try:
                if (u.data / tier / rel).read_bytes() == new:
                    return True
            except OSError:
                pass
        return False

    def settled() -> bool:
        assert new_content_somewhere(), "the only copy of the new content was deleted"
        f = u.record(rel)
        return (f is not None and f.adler32 == adler(new) and f.replicas.get("tape") is not None
                and f.replicas["tape"].state == "verified" and f.replicas["central"].state == "verified"
                and u.state(rel, "beamline") == "deleted")

    wait_until(settled, timeout=90, what="new content archived and the beamline copy expired")
    for tier in ("central", "tape"):
        assert (u.data / tier / rel).read_bytes() == new
    print(f"rewrite to new content on central+tape and beamline expired: {time.monotonic() - started:.1f} s")


def test_rewrite_that_restores_the_old_mtime_is_archived_too(up):
    """A file rewritten in place with its old size and mtime put back (os.utime): discovery cannot
    see it, but the ctime moved; the expiry reads the beamline copy back, finds new content,
    catalogues it and archives it before the beamline copy may go."""
    u = up(beamline_retention='"4s"')
    rel = f"{PROC}/same-mtime.bin"
    old, new = os.urandom(200_000), os.urandom(200_000)
    p = u.drop(rel, old)
    wait_until(lambda: u.state(rel, "tape") == "verified", timeout=60, what="first tape copy")
    st = p.stat()
    p.write_bytes(new)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))

    def settled() -> bool:
        f = u.record(rel)
        if u.state(rel, "beamline") == "deleted":
            assert (u.data / "central" / rel).read_bytes() == new, "the only copy of the new content was deleted"
            return f.adler32 == adler(new) and f.replicas["tape"].state == "verified"
        return False

    wait_until(settled, timeout=90, what="new content archived and the beamline copy expired")
    assert (u.data / "tape" / rel).read_bytes() == new
    assert "rewritten with its old mtime" in u.log_path.read_text()


def flip_byte(path: Path, offset: int) -> None:
    """One bit flipped at rest: the modification time is put back, as a failing disk leaves it."""
    st = path.stat()
    os.chmod(path, 0o644)
    with open(path, "r+b") as fh:
        fh.seek(offset)
        b = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([b[0] ^ 0x10]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.chmod(path, st.st_mode & 0o7777)


def metric(text: str, name: str, labels: str) -> float:
    m = re.search(rf"^{name}\{{{labels}\}} (\S+)$", text, re.M)
    return float(m.group(1)) if m else -1.0


def download(u: Up, rel: str):
    f = u.record(rel)
    ds = u.cat.get_dataset(f.dataset)
    from urllib.parse import quote
    url = f"{u.url()}/api/v1/datasets/{ds.pid}/files/{quote(f.path, safe='/')}/content"
    with urllib.request.urlopen(url, timeout=30) as resp:
        return resp.read(), resp.headers


def test_data_service_never_sends_bytes_that_do_not_match_its_digest(data_world, serve_app):
    """Finding 2: a copy that rotted after it was verified. Old main served it under the catalogued
    Digest (a browser cannot tell). Now the copy is read back first: a bad one is marked "bad" in the
    catalogue and the next verified tier serves; with no good copy left the answer is an error."""
    import httpx

    from domas.dataservice.app import create_app

    base = serve_app(create_app(data_world.catalogue, data_world.tiers, now=data_world.now))
    pid = data_world.pids["open"]

    def url(rel):
        from urllib.parse import quote
        return f"{base}/api/v1/datasets/{pid}/files/{quote(rel)}/content"

    rel = "sub/scan ü 1.h5"                                  # beamline + central
    assert httpx.get(url(rel)).headers["x-domas-tier"] == "beamline"
    flip_byte(data_world.on_tier("beamline", rel), 777)
    r = httpx.get(url(rel))
    assert r.status_code == 200 and r.headers["x-domas-tier"] == "central"
    assert r.content == data_world.data[rel] and r.headers["digest"] == f"adler32={adler(r.content)}"
    r = httpx.get(url(rel), headers={"Range": "bytes=0-99"})
    assert r.status_code == 206 and r.content == data_world.data[rel][:100] and r.headers["x-domas-tier"] == "central"
    # a beamline copy may have been rewritten by its detector: not served, but left for the archiver to judge
    assert data_world.catalogue.get_file(pid, rel).replicas["beamline"].state == "verified"

    flip_byte(data_world.on_tier("central", "big.bin"), 3 << 20)   # its only copy
    for headers in ({}, {"Range": "bytes=0-1023"}):
        r = httpx.get(url("big.bin"), headers=headers)
        assert r.status_code in (404, 503) and "no verified copy" in r.json()["error"], (r.status_code, r.text[:200])
    assert data_world.catalogue.get_file(pid, "big.bin").replicas["central"].state == "bad"


def test_rot_on_central_is_found_by_the_scrubber_counted_repaired_and_never_served(up):
    """Finding 2: a byte flipped in a verified central copy. Old main noticed nothing and served the
    corrupt bytes under the old Digest; the intact tape copy was never used."""
    u = up(beamline_retention='"1s"', scrub_interval='"2s"', scrub_rate='"64MiB"')
    rel = f"{PROC}/rot.bin"
    data = os.urandom(2_000_000)
    u.drop(rel, data)
    wait_until(lambda: u.state(rel, "tape") == "verified" and u.state(rel, "beamline") == "deleted", timeout=60,
               what="archived, beamline copy expired")
    central = u.data / "central" / rel
    flip_byte(central, 1_234_567)
    flipped = time.monotonic()
    body, headers = download(u, rel)               # never the corrupt bytes under the catalogued Digest
    assert headers.get("Digest") == f"adler32={adler(data)}" and body == data, headers.get("X-Domas-Tier")
    wait_until(lambda: u.state(rel, "central") == "verified" and central.read_bytes() == data, timeout=60,
               what="central copy repaired from tape")
    served_repair = time.monotonic() - flipped
    flip_byte(central, 99)                          # again, and nobody downloads it: the scrubber finds it
    flipped = time.monotonic()
    wait_until(lambda: "domas.scrub ERROR" in u.log_path.read_text(), timeout=30, what="the scrubber to find the rot")
    found = time.monotonic() - flipped
    wait_until(lambda: u.state(rel, "central") == "verified" and central.read_bytes() == data, timeout=60,
               what="central copy repaired from tape again")
    repaired = time.monotonic() - flipped
    text = urllib.request.urlopen(u.metrics_url(), timeout=10).read().decode()
    assert metric(text, "domas_scrub_bytes_total", 'tier="central"') >= len(data)
    assert metric(text, "domas_scrub_mismatches_total", 'tier="central"') >= 1
    assert metric(text, "domas_scrub_repairs_total", 'tier="central"') >= 2
    assert "marked bad" in u.log_path.read_text()
    print(f"bit flip -> repaired: {served_repair:.1f} s when downloaded; scrubber found it in {found:.1f} s, "
          f"repaired in {repaired:.1f} s (scrub interval 2 s)")


def test_expiry_reads_back_the_downstream_copy_before_it_deletes(up):
    """Finding 2: rot in the central copy before the beamline copy expires. Old main deleted the
    beamline copy on the strength of the corrupt central one. Now the expiry reads central back,
    marks it bad, recopies it from the beamline, and only then lets the beamline copy go."""
    u = up(beamline_retention='"3s"')              # default scrub interval (30 days): only expiry reads
    rel = f"{PROC}/guard.bin"
    data = os.urandom(1_000_000)
    u.drop(rel, data)
    wait_until(lambda: u.state(rel, "tape") == "verified", timeout=60, what="archived")
    central = u.data / "central" / rel
    flip_byte(central, 4321)
    assert u.state(rel, "beamline") != "deleted", "too slow: the beamline copy expired before the flip"

    def safe() -> bool:
        if u.state(rel, "beamline") == "deleted":
            assert central.read_bytes() == data, "the beamline copy expired while central was corrupt"
            return True
        return False

    wait_until(safe, timeout=60, what="beamline expiry after the central repair")
    assert "marked bad" in u.log_path.read_text()


def test_reconcile_checks_the_tiers_of_a_domas_up_deployment(up):
    """Finding 2: `domas catalogue reconcile` could not check a `domas up` deployment (it took the
    tier-relative catalogue paths for absolute ones). Now --tier (or a directory inside a tier root)
    compares the tier and reports missing, extra, size and adler32 drift."""
    import json

    u = up()
    rels = [f"{PROC}/a.bin", f"{PROC}/sub/b.bin"]
    for rel in rels:
        u.drop(rel, os.urandom(50_000))
    wait_until(lambda: all(u.state(r, "tape") == "verified" for r in rels), timeout=60, what="archived")

    def reconcile(*args):
        r = subprocess.run([sys.executable, "-m", "domas.cli", "--config", str(u.config), "catalogue", "reconcile",
                            *args, "--json"], capture_output=True, text=True, timeout=60)
        assert r.returncode in (0, 1), r.stderr
        doc = json.loads(r.stdout)
        drift = {k: [] for k in ("missing_in_catalogue", "missing_on_disk", "size_drift", "checksum_drift")}
        for ds in doc["datasets"]:
            for k in drift:
                drift[k] += [x if isinstance(x, str) else x["path"] for x in ds[k]]
        return r.returncode, drift

    for tier in ("central", "tape"):
        code, drift = reconcile("--tier", tier, "--checksum")
        assert code == 0 and not any(drift.values()), (tier, drift)
    flip_byte(u.data / "central" / rels[0], 10)
    (u.data / "central" / PROC / "stray.bin").write_bytes(b"not catalogued")
    with open(u.data / "central" / rels[1], "ab") as fh:
        fh.write(b"grown")
    (u.data / "tape" / rels[1]).unlink()
    code, drift = reconcile("--tier", "central", "--checksum")
    assert code == 1 and drift == {"missing_in_catalogue": ["stray.bin"], "missing_on_disk": [],
                                   "size_drift": ["sub/b.bin"], "checksum_drift": ["a.bin"]}, drift
    code, drift = reconcile(str(u.data / "tape" / "B1"))               # a directory inside a tier root
    assert code == 1 and drift["missing_on_disk"] == ["sub/b.bin"] and not drift["checksum_drift"]


ODD_NAMES = ["new\nline.bin", "two  spaces ü.bin", "100%.bin", "hash#1.bin", "what?.bin", "tab\tand 'quote'.bin"]


def test_odd_file_names_go_through_archive_catalogue_api_portal_and_get(up, tmp_path):
    """Finding 7: a file name with a newline was archived but could not be downloaded, and split log
    lines. Every name the filesystem allows goes through; logs quote names, one line per event."""
    import json
    from html import unescape
    from urllib.parse import quote, unquote

    u = up(beamline_retention='"2s"')
    data = {name: os.urandom(20_000 + i) for i, name in enumerate(ODD_NAMES)}
    u.drop(f"{RAW}/{ODD_NAMES[0]}", data[ODD_NAMES[0]])             # alone: its name is logged
    wait_until(lambda: u.state(f"{RAW}/{ODD_NAMES[0]}", "central") == "verified", timeout=60, what="first")
    for name, content in list(data.items())[1:]:
        u.drop(f"{RAW}/{name}", content)
    wait_until(lambda: all(u.state(f"{RAW}/{n}", "tape") == "verified" and u.state(f"{RAW}/{n}", "beamline")
                           == "deleted" for n in ODD_NAMES), timeout=90, what="every odd name archived and expired")
    for name, content in data.items():
        assert (u.data / "tape" / RAW / name).read_bytes() == content
        assert u.record(f"{RAW}/{name}").adler32 == adler(content)
    pid = u.cat.dataset_by_path("/" + RAW).pid
    listed = json.loads(urllib.request.urlopen(f"{u.url()}/api/v1/datasets/{quote(pid)}", timeout=30).read())
    assert sorted(f["path"] for f in listed["files"]) == sorted(ODD_NAMES)
    for f in listed["files"]:                                         # the API's own links
        with urllib.request.urlopen(u.url() + f["content_url"], timeout=30) as resp:
            assert resp.read() == data[f["path"]] and resp.headers["Digest"] == f"adler32={f['adler32']}"
        rec = json.loads(urllib.request.urlopen(u.url() + f["content_url"][:-len("/content")], timeout=30).read())
        assert rec["path"] == f["path"]
    page = urllib.request.urlopen(f"{u.url()}/datasets/{quote(pid)}", timeout=30).read().decode()
    links = {unquote(unescape(h)) for h in re.findall(r'href="([^"]*/files/[^"]*/content)"', page)}
    assert {link.rsplit("/files/", 1)[1][:-len("/content")] for link in links} == set(ODD_NAMES)
    r = subprocess.run([sys.executable, "-m", "domas.cli", "get", "--server", u.url(), pid, str(tmp_path / "dl")],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "DOMAS_STATE_DIR": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert not [line for line in r.stderr.splitlines() if line.startswith(("line.bin", "and 'quote'"))], r.stderr
    assert "new\\nline.bin" in r.stderr
    for name, content in data.items():
        assert (tmp_path / "dl" / name).read_bytes() == content
    log = u.log_path.read_text()
    assert "new\\nline.bin" in log and "expired" in log
    stray = [line for line in log.splitlines() if line.startswith(("line.bin", "and 'quote'"))]
    assert not stray, f"a name split a log line: {stray}"


def test_log_lines_escape_what_a_name_could_split_or_forge():
    import logging

    from domas.logsafe import FORMAT, OneLineFormatter, one_line

    assert one_line("plain ü name.h5") == "plain ü name.h5"
    assert one_line("a\nb\r\x1b[31m\tc") == "a\\nb\\r\\x1b[31m\\tc"
    record = logging.LogRecord("domas.archiver", logging.INFO, __file__, 1, "expired %s (ok)",
                               ("/x/new\n2026-01-01 00:00:00 domas FORGED",), None)
    line = OneLineFormatter(FORMAT).format(record)
    assert "\n" not in line and line.endswith("/x/new\\n2026-01-01 00:00:00 domas FORGED (ok)")


def test_a_copy_finished_after_a_rewrite_never_counts_for_the_new_content(tmp_path):
    """Finding 1, the copy in flight: a copy submitted for one content that ends after the file was
    rewritten is recorded "stale" (its version names the old content), and the policy asks for a
    copy of the current content; a copy of the current content is recorded verified."""
    from domas.config import Config, PolicyConfig, StorageConfig
    from domas.archive.archiver import Archiver, Pending
    from domas.catalogue.base import Dataset, FileRecord, Replica, content_version
    from domas.archive.lifecycle import decide

    cat = SQLiteCatalogue(tmp_path / "cat.sqlite")
    cfg = Config(storage=StorageConfig(beamline=str(tmp_path / "b"), central=str(tmp_path / "c"),
                                       tape=str(tmp_path / "t")), policy=PolicyConfig(scrub_interval=0))
    arch = Archiver(cfg, cat, "127.0.0.1:1", clock=lambda: 1000.0)
    ds = cat.upsert_dataset(Dataset(beamtime="BT1", path="/" + PROC))
    cat.upsert_file(FileRecord(ds.pid, "d.bin", 10, mtime=1.0, replicas={"beamline": Replica("pending", "b", 5.0)}))
    old_copy = Pending("t1", ds.pid, "d.bin", "central", "b", "c", 10, 1.0, discovered_at=5.0)
    cat.upsert_file(FileRecord(ds.pid, "d.bin", 10, mtime=2.0, replicas={"beamline": Replica(
        "pending", "b", 6.0, content_version(10, 2.0))}))             # the detector rewrote it meanwhile
    arch.finished = [(old_copy, "0001000a")]
    arch.record_finished()
    f = cat.get_file(ds.pid, "d.bin")
    assert f.adler32 == "" and f.replicas["central"].state == "stale"
    assert f.replicas["central"].version == content_version(10, 1.0)
    assert [a.kind + ":" + a.tier for a in decide(arch.view(f), arch.retention, 1000.0)] == ["copy:central"]
    arch.finished = [(Pending("t2", ds.pid, "d.bin", "central", "b", "c", 10, 2.0, discovered_at=6.0), "0002000b")]
    arch.record_finished()
    f = cat.get_file(ds.pid, "d.bin")
    assert f.adler32 == "0002000b" and f.replicas["central"].state == "verified"
    assert f.replicas["central"].version == content_version(10, 2.0)
    cat.close()
