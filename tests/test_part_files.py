"""Part files: one hidden name, a janitor for orphans, and no debris from an agent frozen past its
lease (issue 8, finding 5); controller transfers keep the source's mode (finding 9).

The janitor's decisions are table-tested without fixtures; its shell runs on a real directory; the
controller cases run a real `domas controller` and `domas agent`s (leases of 3 s).
"""

from __future__ import annotations

import os
import signal
import stat
import time
from pathlib import Path

import pytest

from domas.transfer.janitor import SweepSchedule, orphans, sweep
from domas.transfer.journal import journal_path
from domas.transfer.parts import final_name, is_part_name, part_path
from domas.transfer.storage import PosixStorage
from domas.transfer.storage.base import Stat
from tests.fixtures.common import wait_until
from tests.fixtures.controller import _sample, _status
from tests.test_controller_faults import Cluster, _chunks_ok, _finished, _metrics, _submit, _write

MiB = 1 << 20


# -- the name -------------------------------------------------------------------------------

@pytest.mark.parametrize("dst, part", [
    ("/d/f10.bin", "/d/.f10.bin.domas-part"),
    ("root://h:1094//d/f10.bin", "root://h:1094//d/.f10.bin.domas-part"),
    ("f", ".f.domas-part"),
    ("/d/" + "x" * 250, "/d/." + __import__("hashlib").sha1(b"x" * 250).hexdigest() + ".domas-part"),
])
def test_every_part_name_is_hidden_and_recognised(dst, part):
    assert part_path(dst) == part
    name = part.rsplit("/", 1)[-1]
    assert name.startswith(".") and is_part_name(name) and len(name.encode()) <= 255
    if len(dst) < 200:
        assert final_name(name) == dst.rsplit("/", 1)[-1]


def test_the_controller_and_the_engine_spell_it_the_same():
    from domas.agent import engine
    from domas.controller import events as ev

    assert ev.part_url("/d/a.h5") == engine.part_path("/d/a.h5") == "/d/.a.h5.domas-part"
    assert ev.PART_SUFFIX == engine.PART_SUFFIX


def test_the_suffix_is_spelled_in_one_module_only():
    root = Path(__file__).resolve().parent.parent
    spelled = sorted(str(p.relative_to(root)) for d in ("src", "agent", "transfer", "controller", "archive", "catalogue", "dataservice") for p in (root / d).rglob("*.py")
                     if ".domas-part" in p.read_text(errors="replace"))
    assert spelled == ["transfer/parts.py"]


# -- the janitor's decisions (pure) ---------------------------------------------------------

def st(path: str, mtime: float, is_dir: bool = False) -> Stat:
    return Stat(path, 10, mtime, is_dir=is_dir)


@pytest.mark.parametrize("entry, gone", [
    (st("/d/.a.domas-part", 0.0), True),                 # old, not kept: an orphan
    (st("/d/.a.domas-part", 95.0), False),               # written 5 s ago: a writer may be alive
    (st("/d/.k.domas-part", 0.0), False),                # a file still in progress
    (st("/d/a.domas-part", 0.0), False),                 # not hidden: not a part name, never touched
    (st("/d/a.bin", 0.0), False),
    (st("/d/.x.domas-part", 0.0, is_dir=True), False),
])
def test_orphans_are_old_unkept_part_files_only(entry, gone):
    assert (orphans([entry], now=100.0, max_age=60.0, keep={"/d/.k.domas-part"}) == [entry.path]) is gone


def test_sweep_schedule_visits_a_finalized_directory_once_per_period_within_the_window():
    s = SweepSchedule(every=60.0, window=600.0)
    s.finalized("/d", 0.0)
    assert s.due(1.0) == ["/d"] and s.due(30.0) == [] and s.due(61.0) == ["/d"]
    s.finalized("/e", 100.0)
    assert sorted(s.due(200.0)) == ["/d", "/e"]
    assert s.due(900.0) == [] and s.due(2000.0) == []      # nothing finalized for longer than the window


# -- the janitor on a real directory -------------------------------------------------------------

def test_sweep_removes_stale_orphans_and_their_journals_and_nothing_else(tmp_path):
    d = tmp_path / "dst"
    d.mkdir()
    old = time.time() - 3600
    names = {".stale.bin.domas-part": old, ".fresh.bin.domas-part": time.time(), ".locked.bin.domas-part": old,
             ".kept.bin.domas-part": old, "data.bin": old, "visible.domas-part": old}
    for name, mtime in names.items():
        (d / name).write_bytes(b"x")
        os.utime(d / name, (mtime, mtime))
    state = tmp_path / "state"
    journal = journal_path(state, str(d / "stale.bin"))
    journal.parent.mkdir(parents=True)
    journal.write_text("{}\n")
    store = PosixStorage()
    lock = store.lock(str(d / ".locked.bin.domas-part"), create=False)    # a running `domas copy`
    try:
        removed = sweep(store, str(d), now=time.time(), max_age=60, keep={str(d / ".kept.bin.domas-part")},
                        state_dir=state)
    finally:
        lock.release()
    assert removed == [str(d / ".stale.bin.domas-part")]
    assert sorted(p.name for p in d.iterdir()) == sorted(set(names) - {".stale.bin.domas-part"})
    assert not journal.exists()
    assert sweep(store, str(tmp_path / "missing"), now=time.time(), max_age=60) == []


# -- the controller: janitor after finalize, modes kept ----------------------------------------------

def test_controller_removes_orphan_part_files_where_it_finalizes_and_keeps_modes(tmp_path):
    src, dst = tmp_path / "scan", tmp_path / "out"
    modes = {"secret.h5": 0o600, "group.h5": 0o640, "open.h5": 0o644, "raw.h5": 0o444}
    data = _write(src, {"secret.h5": 3 * MiB, "group.h5": MiB, "open.h5": 1000, "raw.h5": MiB})
    for name, mode in modes.items():
        os.chmod(src / name, mode)
    (dst / "scan").mkdir(parents=True)
    stale = dst / "scan" / ".f10.bin.domas-part"         # left by an agent that died an hour ago
    stale.write_bytes(b"debris")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    c = Cluster(tmp_path)
    try:
        tid = _submit(tmp_path, c.port, src, dst, "256KiB")
        wait_until(lambda: _finished(c.port, tid), 60, "the transfer")
        assert _status(tmp_path, c.port, tid)["state"] == "done"
        wait_until(lambda: not stale.exists(), 10, "the janitor to remove the orphan part file")
        for name, mode in modes.items():
            out = dst / "scan" / name
            assert out.read_bytes() == data[name] and stat.S_IMODE(out.stat().st_mode) == mode, name
        assert sorted(p.name for p in (dst / "scan").iterdir()) == sorted(data)
    finally:
        c.stop()


def test_an_agent_frozen_past_its_lease_writes_nothing_when_it_resumes(tmp_path):
    """The hunt's case: an agent stopped (SIGSTOP) with leases in hand, resumed after the file was
    finished by another agent. Its leases arrive late but expired: nothing is written."""
    src, dst = tmp_path / "scan", tmp_path / "out"
    data = _write(src, {"f10.bin": 16 * MiB})
    c = Cluster(tmp_path)
    victim, m = c.agents[0], c.metrics[0]
    try:
        os.kill(victim.pid, signal.SIGSTOP)          # frozen with credit: it is granted leases it cannot start
        try:
            tid = _submit(tmp_path, c.port, src, dst, "256KiB")
            wait_until(lambda: _finished(c.port, tid), 90, "the other agent finishing the file")
        finally:
            os.kill(victim.pid, signal.SIGCONT)
        assert _status(tmp_path, c.port, tid)["state"] == "done"
        wait_until(lambda: _sample(_metrics(m), "domas_agent_chunks_total", 'result="error"') >= 1,
                   30, "the resumed agent to give its stale leases up")
        wait_until(lambda: _sample(_metrics(m), "domas_agent_inflight_chunks") == 0
                   and _sample(_metrics(m), "domas_agent_spooled_reports") == 0, 30, "the resumed agent to settle")
        assert _sample(_metrics(m), "domas_agent_chunks_total", 'result="ok"') == 0
        assert _sample(_metrics(m), "domas_agent_errors_total", 'class="lease_expired"') >= 1
        assert sorted(p.name for p in (dst / "scan").iterdir()) == ["f10.bin"]
        assert (dst / "scan" / "f10.bin").read_bytes() == data["f10.bin"]
    finally:
        c.stop()
