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

from domas.controller.catalogue.sqlite import SQLiteCatalogue
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
    u = up(beamline_retention='"6s"', stability_seconds="4")
    rel = f"{PROC}/d.bin"
    old, new = os.urandom(300_000), os.urandom(300_000)
    p = u.drop(rel, old)
    wait_until(lambda: u.state(rel, "tape") == "verified", timeout=60, what="first tape copy")
    since = u.record(rel).replicas["beamline"].verified_at
    wait_until(lambda: time.time() >= since + 5.0, timeout=30, what="retention nearly over")
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
