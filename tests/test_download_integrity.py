"""The data service checks a copy while it streams it: first byte at once, never a complete response
of bad bytes, a copy that fails is marked bad and the next verified tier serves the next request.

Real SQLite catalogue, real tier directories, the real app under uvicorn on a loopback port.
"""

from __future__ import annotations

import logging
import os
import time
import zlib

import httpx
import pytest

from domas.catalogue import FileRecord, Replica
from domas.dataservice import delivery
from domas.dataservice.app import create_app
from tests.fixtures.dataservice import DATASET_PATH, MiB

BIG = delivery.VERIFY_FIRST_BELOW * 3          # streamed, not read back first


def flip_last_byte(path) -> None:
    """Rot at rest, as a failing disk leaves it: one bit of the last byte, the mtime put back."""
    st = path.stat()
    with open(path, "r+b") as fh:
        fh.seek(st.st_size - 1)
        b = fh.read(1)
        fh.seek(st.st_size - 1)
        fh.write(bytes([b[0] ^ 0x01]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def put(world, rel: str, data: bytes, tiers: tuple[str, ...], checked_at: float | None = None) -> None:
    for tier in tiers:
        p = world.on_tier(tier, rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        os.utime(p, (1.7e9, 1.7e9))                 # copies keep their source's mtime
    world.catalogue.upsert_files([FileRecord(world.pids["open"], rel, len(data), f"{zlib.adler32(data):08x}",
                                             mtime=1.7e9, replicas={t: Replica("verified", verified_at=1.0,
                                                                               checked_at=checked_at)
                                                                    for t in tiers})])


def test_a_copy_that_rots_while_it_streams_is_cut_off_marked_bad_and_the_next_tier_serves(data_world, serve_app,
                                                                                           caplog):
    """Old main read the whole copy back before its first byte (minutes for a file of many GB), then
    sent whatever the disk held: a byte that rotted after the read-back went out in a clean, complete
    200 under the catalogued Digest. Now the bytes are summed as they go out and the last piece is
    held back when the sum does not match."""
    caplog.set_level(logging.INFO)
    base = serve_app(create_app(data_world.catalogue, data_world.tiers, now=data_world.now))
    rel = "scan/huge.h5"
    data = os.urandom(BIG)
    put(data_world, rel, data, ("beamline", "central", "tape"))
    url = f"{base}/api/v1/datasets/{data_world.pids['open']}/files/{rel}/content"

    for tier in ("beamline", "central"):
        got = bytearray()
        started = time.perf_counter()
        with pytest.raises(httpx.HTTPError):         # a broken transfer, never a complete response
            with httpx.stream("GET", url, timeout=30) as r:
                assert r.status_code == 200 and r.headers["x-domas-tier"] == tier
                assert r.headers["digest"] == f"adler32={zlib.adler32(data):08x}"
                pieces = r.iter_raw(64 * 1024)
                got += next(pieces)
                first_byte = time.perf_counter() - started
                flip_last_byte(data_world.on_tier(tier, rel))     # after its read-back, if there was one
                for piece in pieces:
                    got += piece
        assert len(got) < len(data) and bytes(got) == data[:len(got)]
        assert first_byte < 5, first_byte

    rec = data_world.catalogue.get_file(data_world.pids["open"], rel)
    assert rec.replicas["central"].state == "bad"            # replaced by the archiver from a good tier
    assert rec.replicas["beamline"].state == "verified"      # the detector's copy: the archiver judges it
    r = httpx.get(url, timeout=30)
    assert r.status_code == 200 and r.headers["x-domas-tier"] == "tape" and r.content == data
    r = httpx.get(url, headers={"Range": "bytes=5-9"}, timeout=30)
    assert r.status_code == 206 and r.content == data[5:10] and r.headers["x-domas-tier"] == "tape"

    text = caplog.text
    assert "the central copy of 'scan/huge.h5' does not match the catalogue" in text and "marked bad" in text
    assert "transfer was cut off" in text
    assert not [rec for rec in caplog.records if rec.exc_info], "no traceback in the log"


def test_ranges_are_served_at_once_only_from_a_copy_read_back_recently(data_world, serve_app):
    """A range cannot be checked from its own bytes: a copy not read back within CHECKED_TRUST_FOR is
    read back first (a rotten one falls back to the next tier); a recently checked one with its
    catalogued mtime is served at once."""
    base = serve_app(create_app(data_world.catalogue, data_world.tiers, now=data_world.now))
    pid, now = data_world.pids["open"], data_world.now()
    old, fresh = os.urandom(2 * MiB), os.urandom(2 * MiB)
    put(data_world, "old.bin", old, ("central", "tape"), checked_at=now - 2 * delivery.CHECKED_TRUST_FOR)
    put(data_world, "fresh.bin", fresh, ("central", "tape"), checked_at=now - 60)
    flip_last_byte(data_world.on_tier("central", "old.bin"))
    r = httpx.get(f"{base}/api/v1/datasets/{pid}/files/old.bin/content", headers={"Range": "bytes=0-99"})
    assert r.status_code == 206 and r.content == old[:100] and r.headers["x-domas-tier"] == "tape"
    assert data_world.catalogue.get_file(pid, "old.bin").replicas["central"].state == "bad"
    r = httpx.get(f"{base}/api/v1/datasets/{pid}/files/fresh.bin/content", headers={"Range": "bytes=0-99"})
    assert r.status_code == 206 and r.content == fresh[:100] and r.headers["x-domas-tier"] == "central"


@pytest.mark.parametrize("case, expected", [
    (dict(whole=True, size=BIG, suspect=False, last_checked=None), False),         # summed as it streams
    (dict(whole=True, size=MiB, suspect=False, last_checked=None), True),          # small: read first
    (dict(whole=True, size=BIG, suspect=True, last_checked=1000.0), True),         # failed before
    (dict(whole=False, size=BIG, suspect=False, last_checked=1000.0 - 60), False),  # checked a minute ago
    (dict(whole=False, size=BIG, suspect=False, last_checked=1000.0 - 7200), True),  # checked too long ago
    (dict(whole=False, size=BIG, suspect=False, last_checked=None), True),         # never checked
    (dict(whole=False, size=BIG, suspect=False, last_checked=2000.0), True),       # checked in the future
    (dict(whole=False, size=BIG, suspect=False, last_checked=990.0, copy_mtime=5.0), True),    # rewritten
    (dict(whole=False, size=BIG, suspect=False, last_checked=990.0, copy_mtime=1.4), False),   # XRootD second
])
def test_read_back_first_table(case, expected):
    args = {"copy_mtime": 1.0, "catalogued_mtime": 1.25, "now": 1000.0, **case}
    assert delivery.read_back_first(**args) is expected
