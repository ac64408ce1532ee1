"""`domas up` as a user runs it: a real process; files dropped into the beamline tree.

Everything is observed from outside, through the files on disk and `domas catalogue`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from tests.fixtures.common import stop_process, wait_until

RAW = "B1/202611/Data/BT0001/raw"


def write_config(path: Path, data: Path, *, tape: str | None = None, catalogue: str = "",
                 beamline_retention: str = "1h", central_retention: str = "90d") -> Path:
    path.write_text(f"""
state_dir = "{data}/state"
[storage]
beamline = "{data}/beamline"
central = "{data}/central"
tape = "{tape or f'{data}/tape'}"
[policy]
stability_seconds = 1
rescan_seconds = 2
beamline_retention = "{beamline_retention}"
central_retention = "{central_retention}"
[catalogue]
url = "{catalogue}"
[controller]
listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
[agent]
metrics_listen = "127.0.0.1:0"
""")
    return path


class Up:
    def __init__(self, tmp: Path, **cfg) -> None:
        self.data = tmp / "domas-data"
        self.config = write_config(tmp / "domas.toml", self.data, **cfg)
        self.log = open(tmp / "up.log", "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "domas.cli", "--config", str(self.config), "up",
                                      "--data-dir", str(self.data)], stdout=self.log, stderr=subprocess.STDOUT,
                                     cwd=tmp)
        wait_until(lambda: (self.data / "domas.toml").exists(), timeout=60, what="domas up", proc=self.proc)
        self.beamline = self.data / "beamline"

    def drop(self, rel: str, data: bytes) -> Path:
        p = self.beamline / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        return p

    def catalogue(self, *args) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "domas.cli", "--config", str(self.config), "catalogue", *args],
                              capture_output=True, text=True, timeout=60)

    def files(self) -> dict[str, dict]:
        """{relative path under the dataset: file record} for every catalogued file."""
        out = {}
        for ds in json.loads(self.catalogue("find", "--json").stdout or "[]"):
            shown = json.loads(self.catalogue("show", ds["pid"], "--json").stdout)
            for f in shown["files"]:
                out[f"{ds['path'].strip('/')}/{f['path']}"] = f
        return out

    def replica(self, rel: str, tier: str) -> str | None:
        f = self.files().get(rel)
        return f and (f.get("replicas") or {}).get(tier, {}).get("state")

    def stop(self) -> None:
        stop_process(self.proc, timeout=30)
        self.log.close()


@pytest.fixture
def up(tmp_path):
    started = []

    def start(**cfg) -> Up:
        u = Up(tmp_path, **cfg)
        started.append(u)
        return u

    yield start
    for u in started:
        u.stop()


def test_dropped_file_is_catalogued_and_reaches_central_and_tape(up):
    u = up()
    data = b"\x00\x00" + os.urandom(3 * 1024 * 1024)
    u.drop(f"{RAW}/scan_0001.h5", data)
    rel = f"{RAW}/scan_0001.h5"
    wait_until(lambda: u.replica(rel, "tape") == "verified", timeout=90, what="tape copy")
    f = u.files()[rel]
    assert f["adler32"] == f"{zlib.adler32(data):08x}" and f["size"] == len(data)
    assert f["replicas"]["central"]["state"] == "verified"
    for tier in ("central", "tape"):
        assert (u.data / tier / rel).read_bytes() == data
    assert not os.access(u.beamline / rel, os.W_OK) or os.geteuid() == 0
    assert (os.stat(u.beamline / rel).st_mode & 0o222) == 0, "raw is made read-only once archived"
    r = u.catalogue("find", "--beamtime", "BT0001", "--json")
    assert json.loads(r.stdout)[0]["file_count"] == 1


def test_growing_file_waits_until_it_settles_and_has_one_record(up):
    u = up()
    rel = f"{RAW}/growing.h5"
    p = u.drop(rel, b"")
    content = b""
    for _ in range(6):                      # keeps growing for a few stability windows
        piece = os.urandom(200_000)
        with open(p, "ab") as fh:
            fh.write(piece)
        content += piece
        wait_until(lambda: p.stat().st_size == len(content), timeout=5, what="append")
        assert not (u.data / "central" / rel).exists()
        threshold = p.stat().st_mtime + 0.5
        wait_until(lambda: __import__("time").time() > threshold, timeout=5, what="half a window")
    wait_until(lambda: u.replica(rel, "central") == "verified", timeout=90, what="central copy")
    assert (u.data / "central" / rel).read_bytes() == content
    files = u.files()
    assert [k for k in files if k.endswith("growing.h5")] == [rel]
    assert files[rel]["adler32"] == f"{zlib.adler32(content):08x}"


def test_broken_tape_never_costs_the_central_copy(up, tmp_path):
    tape = tmp_path / "tape_ro"
    tape.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(tape)]).returncode != 0:
        pytest.skip("cannot mount a read-only tmpfs (needs root)")
    try:
        u = up(tape=str(tape), beamline_retention="1s", central_retention="1s")
        rel = f"{RAW}/precious.h5"
        data = os.urandom(100_000)
        u.drop(rel, data)
        wait_until(lambda: u.replica(rel, "tape") == "failed", timeout=90, what="tape copy to fail")
        # long past both retentions: the beamline copy may go (central is verified) but central stays
        wait_until(lambda: u.replica(rel, "beamline") == "deleted", timeout=60, what="beamline expiry")
        assert (u.data / "central" / rel).read_bytes() == data
        assert u.replica(rel, "central") == "verified"
    finally:
        subprocess.run(["umount", "-l", str(tape)])


def test_symlink_escaping_the_beamline_root_is_refused(up, tmp_path):
    u = up()
    secret = tmp_path / "etc-shadow"
    secret.write_bytes(b"secret")
    (u.beamline / RAW).mkdir(parents=True)
    os.symlink(secret, u.beamline / RAW / "escape.h5")
    u.drop(f"{RAW}/ok.h5", b"fine")
    wait_until(lambda: u.replica(f"{RAW}/ok.h5", "central") == "verified", timeout=90, what="ok.h5 archived")
    assert f"{RAW}/escape.h5" not in u.files()
    assert not (u.data / "central" / RAW / "escape.h5").exists()
    assert "outside the beamline root" in (tmp_path / "up.log").read_text()


def test_catalogue_outage_loses_nothing(up, secantus_factory):
    server = secantus_factory()
    url = server.url.replace("/?", "/domas_up?")
    u = up(catalogue=url)
    u.drop(f"{RAW}/before.h5", b"before")
    wait_until(lambda: u.replica(f"{RAW}/before.h5", "central") == "verified", timeout=90, what="first file")
    server.stop()
    during = u.drop(f"{RAW}/during.h5", os.urandom(50_000))
    wait_until(lambda: (u.data / "central" / RAW / "during.h5").exists(), timeout=90,
               what="copy while the catalogue is down")
    server.start()
    wait_until(lambda: u.replica(f"{RAW}/during.h5", "tape") == "verified", timeout=120,
               what="spooled records replayed")
    files = u.files()
    assert set(files) == {f"{RAW}/before.h5", f"{RAW}/during.h5"}
    assert files[f"{RAW}/during.h5"]["adler32"] == f"{zlib.adler32(during.read_bytes()):08x}"
