"""A storage tier too small for one file (a real 8 MiB tmpfs), and a source whose size says nothing.

- `domas up`: a file larger than the tape tier's free space used to be submitted again and again; its
  part file filled the tier, after which every other file to tape, even 5 bytes, failed "no space",
  with a warning every few seconds. Now it waits (doubling) with one line naming the file, its size
  and the free space, and the other files reach tape; no part file is left filling the tier.
- `domas copy` to a full disk keeps its part file (README "Resume": the same command resumes it), and
  its sentence now says the file's size, the space there and which part file holds how much of it.
- `domas copy /proc/cpuinfo out` copied 0 bytes and reported success (the stat size of a /proc file
  is 0): now it is refused with one sentence, and nothing is written.
Needs root (mount); skipped otherwise.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

import pytest

from domas.archive.archiver import NO_ROOM_FIRST, Archiver, Pending
from domas.catalogue.sqlite import SQLiteCatalogue
from domas.config import Config, PolicyConfig, StorageConfig
from tests.fixtures.common import wait_until
from tests.test_up import RAW, Up

PLAIN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("DOMAS_")}
BIG = 10_000_000              # bytes: more than the 8 MiB tier holds


@pytest.fixture
def small_tier(tmp_path):
    point = tmp_path / "domas-data" / "tape"
    point.mkdir(parents=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(point)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs (needs root)")
    yield point
    subprocess.run(["umount", "-l", str(point)], capture_output=True)


def _domas(cwd, *args) -> subprocess.CompletedProcess:
    env = {**PLAIN_ENV, "DOMAS_STATE_DIR": str(cwd / "state")}
    return subprocess.run([sys.executable, "-m", "domas.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=60, cwd=cwd, env=env)


def test_a_file_too_big_for_tape_waits_and_the_others_reach_tape(tmp_path, small_tier):
    u = Up(tmp_path)
    try:
        u.drop(f"{RAW}/big.h5", os.urandom(BIG))
        wait_until(lambda: u.replica(f"{RAW}/big.h5", "central") == "verified", 60, "big.h5 on central")
        small = {f"s{i}.h5": os.urandom(5 + 1000 * i) for i in range(3)}
        for name, data in small.items():
            u.drop(f"{RAW}/{name}", data)
        for name in small:
            wait_until(lambda n=name: u.replica(f"{RAW}/{n}", "tape") == "verified", 60, f"{name} on tape")
        time.sleep(6)                    # more than one retry period of a failed copy (5 s here)
        for name, data in small.items():
            assert (small_tier / RAW / name).read_bytes() == data
        assert not list(small_tier.rglob("*.domas-part")), list(small_tier.rglob("*"))
        assert u.replica(f"{RAW}/big.h5", "tape") != "verified"
    finally:
        u.stop()
    log = (tmp_path / "up.log").read_text()
    said = [line for line in log.splitlines() if "big.h5" in line and "does not fit" in line]
    assert len(said) == 1, log[-3000:]
    assert f"({BIG} bytes)" in said[0] and "bytes free" in said[0] and "tape" in said[0], said
    assert "Traceback" not in log


def test_two_files_that_fit_one_at_a_time_do_not_both_fail(tmp_path, small_tier):
    """Two 5 MB files for a tier with 8 MiB free: each fits alone, not both. Was: submitted together,
    both written at once until the tier was full, both failed 'no space' and left their part files."""
    u = Up(tmp_path)
    try:
        files = {f"{n}.h5": os.urandom(5_000_000) for n in ("a", "b")}
        files["s.h5"] = os.urandom(5)
        for name, data in files.items():
            u.drop(f"{RAW}/{name}", data)
        wait_until(lambda: u.replica(f"{RAW}/s.h5", "tape") == "verified", 60, "s.h5 on tape")
        wait_until(lambda: "does not fit" in (tmp_path / "up.log").read_text(), 60, "the second big file held")
        on_tape = [n for n in ("a.h5", "b.h5") if u.replica(f"{RAW}/{n}", "tape") == "verified"]
        assert len(on_tape) == 1, u.files()
        assert (small_tier / RAW / on_tape[0]).read_bytes() == files[on_tape[0]]
        assert not list(small_tier.rglob("*.domas-part")), list(small_tier.rglob("*"))
    finally:
        u.stop()
    log = (tmp_path / "up.log").read_text()
    assert "No space" not in log and "no space" not in log and "Traceback" not in log, log[-3000:]


def test_a_copy_that_failed_no_space_gives_its_part_file_back_and_waits(tmp_path, small_tier, caplog):
    """The archiver's side of a copy the controller reports failed `no_space` (space taken by someone
    else between the check and the copy): its part file is removed at once and the file waits,
    doubling, with one line each time."""
    roots = {"beamline": tmp_path / "beamline", "central": tmp_path / "central", "tape": small_tier}
    cfg = Config(storage=StorageConfig(**{t: str(p) for t, p in roots.items()}), policy=PolicyConfig(scrub_interval=0))
    arch = Archiver(cfg, SQLiteCatalogue(tmp_path / "cat.sqlite"), "127.0.0.1:1", clock=lambda: 1000.0)
    (small_tier / "d").mkdir()
    part = small_tier / "d" / ".f.h5.domas-part"
    part.write_bytes(os.urandom(6_000_000))
    p = Pending("t1", "DS", "f.h5", "tape", str(roots["central"] / "d" / "f.h5"), str(small_tier / "d" / "f.h5"),
                BIG, 1.0)
    with caplog.at_level(logging.WARNING, logger="domas.archiver"):
        arch._give_back_space(p)
        assert not part.exists()
        assert arch.no_room[("DS", "f.h5", "tape")] == (1000.0 + NO_ROOM_FIRST, NO_ROOM_FIRST)
        arch._give_back_space(p)                      # the part is gone already: nothing to say about it
        assert arch.no_room[("DS", "f.h5", "tape")] == (1000.0 + 2 * NO_ROOM_FIRST, 2 * NO_ROOM_FIRST)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and all(f"'f.h5' ({BIG} bytes) does not fit on tape" in m for m in lines), lines
    assert "which has 83" in lines[0] and "bytes free" in lines[0], lines      # 8 MiB free again (8388608)


def test_copy_to_a_full_disk_says_the_size_the_space_and_the_part_file(tmp_path, small_tier):
    (tmp_path / "big.dat").write_bytes(os.urandom(BIG))
    r = _domas(tmp_path, "copy", "big.dat", f"{small_tier}/")
    assert r.returncode == 5, r.stderr
    part = small_tier / ".big.dat.domas-part"
    assert part.exists()                  # kept: the same command resumes it (README "Resume")
    assert f"for this file's {BIG} bytes (" in r.stderr and f"{8 * 1024 * 1024} in all" in r.stderr, r.stderr
    assert f"its partial copy {part} holds" in r.stderr and "remove it to give the space back" in r.stderr
    part.unlink()
    (tmp_path / "small.txt").write_bytes(b"hello")
    assert _domas(tmp_path, "copy", "small.txt", f"{small_tier}/").returncode == 0


def test_a_proc_file_is_refused_not_copied_empty(tmp_path):
    with open("/proc/cpuinfo", "rb") as f:
        assert os.stat("/proc/cpuinfo").st_size == 0 and f.read(1)
    r = _domas(tmp_path, "copy", "/proc/cpuinfo", "out")
    assert r.returncode == 3, r.stderr
    assert "/proc/cpuinfo says it holds 0 bytes but has content" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 2, r.stderr
    assert not (tmp_path / "out").exists()
    (tmp_path / "empty").write_bytes(b"")             # a real empty file is still copied
    assert _domas(tmp_path, "copy", "empty", "out").returncode == 0 and (tmp_path / "out").read_bytes() == b""
