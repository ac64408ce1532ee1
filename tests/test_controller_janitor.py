"""The controller's part-file janitor at scale: which part files it keeps, and what a due sweep
costs the event loop.

The old `_sweep_parts` asked the scheduler for every unfinished destination on the event loop: a
walk over every queued file (10^6 after a large submission), at every tick a directory was due.
Now the loop takes a view of the unfinished transfers (O(transfers)); the walk runs in the
worker thread, and only for a directory that holds a part file old enough to be an orphan.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import time
from pathlib import Path

from domas.controller import events as ev
from domas.controller.scheduler import Scheduler, SchedulerConfig, unfinished_in
from domas.controller.service import ControllerService
from domas.controller.state import StateStore
from domas.transfer.parts import part_path
from domas.transfer.paths import parse_roots
from tests.fixtures.common import wait_until
from tests.fixtures.facility import Facility
from tests.test_scheduler import ask, of, ok, report, sched, whole_adler

CS = 4096


def _transfer(s: Scheduler, tid: str, dsts: list[str], size: int = CS) -> None:
    files = tuple(ev.FileSpec(f"/src/{tid}/{i}", d, size) for i, d in enumerate(dsts))
    assert of(s.on_event(ev.TransferSubmitted(ev.TransferSpec(tid, "b", 0, CS), files), 0.0), ev.TransferAccepted)


def test_unfinished_in_keeps_queued_active_and_verifying_files_of_the_directories_asked():
    s = sched()
    _transfer(s, "t1", ["/d/a/0", "/d/a/1", "/d/a/2", "/d/b/3"])
    _transfer(s, "t2", ["/e/a/0"])
    got = ask(s, "ag", 2)                          # /d/a/0 and /d/a/1 active
    out = report(s, ok(got[0]), 1.0)                 # /d/a/0 verifying
    fin = of(out, ev.FinalizeFile)
    assert [f.final_url for f in fin] == ["/d/a/0"]
    view = s.unfinished_view()
    assert unfinished_in(view, {"/d/a"}) == {"/d/a/0", "/d/a/1", "/d/a/2"}
    assert unfinished_in(view, {"/d/b", "/e/a"}) == {"/d/b/3", "/e/a/0"}
    assert unfinished_in(view, {"/d", "/x"}) == set()
    s.on_event(ev.DestinationVerified("t1", fin[0].file_id, whole_adler(got[0])), 2.0)   # done
    assert unfinished_in(s.unfinished_view(), {"/d/a"}) == {"/d/a/1", "/d/a/2"}
    s.on_event(ev.CancelTransfer("t2", "gone"), 3.0)
    assert unfinished_in(s.unfinished_view(), {"/e/a"}) == set()


def _aged(path: Path, seconds: float = 3600) -> None:
    path.write_bytes(b"debris")
    os.utime(path, (time.time() - seconds, time.time() - seconds))


def _calls_on_this_thread(fn) -> int:
    """Python function calls `fn` makes on the calling thread (a worker thread's are not counted)."""
    calls = 0

    def prof(frame, event, arg):
        nonlocal calls
        if event == "call":
            calls += 1
    sys.setprofile(prof)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return calls


def test_a_due_sweep_costs_the_loop_the_same_at_any_queue_length_and_keeps_unfinished_parts(tmp_path):
    mixed, big = tmp_path / "dst" / "mixed", tmp_path / "dst" / "big"
    mixed.mkdir(parents=True)
    big.mkdir()
    calls = {}
    for queued in (100, 30_000):
        store = StateStore(tmp_path / f"state-{queued}.sqlite")
        s = Scheduler(SchedulerConfig(lease_seconds=30.0), random.Random(1), store.epoch)
        svc = ControllerService(s, store, roots=parse_roots([("root", str(tmp_path))]))
        try:
            # a large queued transfer, and in `mixed` a queued file whose part file holds old chunks
            # (agents may still replay their reports) beside an orphan no transfer names
            _transfer(s, f"big{queued}", [f"{big}/{i}" for i in range(queued)])
            _transfer(s, f"small{queued}", [f"{mixed}/kept"])
            kept, orphan = Path(part_path(f"{mixed}/kept")), Path(part_path(f"{mixed}/orphan"))
            _aged(kept)
            _aged(orphan)
            svc._janitor.finalized(str(mixed), time.time())      # as a finalize into `mixed` does
            svc._janitor.finalized(str(big), time.time())
            calls[queued] = _calls_on_this_thread(svc._sweep_parts)
            wait_until(lambda: not orphan.exists(), 10, "the janitor to remove the orphan")
            assert kept.exists()
        finally:
            svc._pool.shutdown(wait=True)
            store.close()
    # the loop's share does not grow with the queue (the old code: one call per queued file, and more)
    assert calls[30_000] == calls[100] and calls[100] < 100, calls


def test_a_started_file_that_fails_or_is_cancelled_sends_the_janitor_to_its_directory():
    s = sched()
    _transfer(s, "t1", ["/d/a/0", "/d/a/1"], size=3 * CS)
    _transfer(s, "t2", ["/d/b/0"], size=3 * CS)
    ask(s, "ag", 4)                                  # /d/a/0 and /d/a/1 started, /d/b/0 queued
    out = s.on_event(ev.CancelTransfer("t1", "operator"), 1.0)
    assert sorted(a.part_url for a in of(out, ev.PartLeft)) == [part_path("/d/a/0"), part_path("/d/a/1")]
    got = ask(s, "ag", 3, 2.0)
    assert {x.file_id for x in got} == {3}
    out = report(s, ok(got[0], error_kind="permission_denied", error_message="no", retriable=False, nbytes=0), 3.0)
    assert of(out, ev.FileFailed) and [a.part_url for a in of(out, ev.PartLeft)] == [part_path("/d/b/0")]
    _transfer(s, "t3", ["/d/c/0"])
    assert not of(s.on_event(ev.CancelTransfer("t3", "operator"), 4.0), ev.PartLeft)   # never started


def test_the_part_file_of_a_cancelled_transfer_is_removed_after_a_lease_time(tmp_path):
    """An agent killed mid-file, then the transfer cancelled: nothing was finalized into that
    directory, and the old controller never swept it; the partial copy stayed for good."""
    fac = Facility(tmp_path, lease=2.0)
    src = tmp_path / "beamline" / "scan"
    src.mkdir(parents=True)
    (src / "big.h5").write_bytes(os.urandom(64 << 20))
    part = Path(part_path(str(tmp_path / "central" / "scan" / "big.h5")))
    try:
        fac.start_controller()
        sub = fac.cli("submit", str(src), f"{tmp_path}/central/", "--chunk-size", "256KiB")
        assert sub.returncode == 0, sub.stderr
        tid = sub.stdout.split()[0]
        fac.start_agents(n=1, streams=1)
        wait_until(lambda: part.exists() and part.stat().st_size > 0, 30, "the part file being written")
        os.kill(fac.agents[0].pid, signal.SIGKILL)       # dies mid-file
        fac.agents[0].wait(10)
        cancelled = fac.cli("cancel", tid)
        assert cancelled.returncode == 0, cancelled.stderr
        assert part.exists()
        wait_until(lambda: not part.exists(), 30, "the janitor to remove the cancelled file's part file")
        assert not (tmp_path / "central" / "scan" / "big.h5").exists()
    finally:
        fac.stop()
    assert fac.tracebacks() == {}


def test_a_restarted_controller_still_sweeps_where_it_finished_files_before(tmp_path):
    """The janitor's schedule lives in memory: after a kill -9 the old controller never visited
    again the directories it had just finished files in, so a part file written there late (a hung
    agent's chunk) stayed for good. A restart now picks up the destination directories of
    transfers that ended within the janitor's window (and of failed files) from the store."""
    fac = Facility(tmp_path, lease=2.0)
    src = tmp_path / "beamline" / "scan"
    src.mkdir(parents=True)
    for i in range(3):
        (src / f"f{i}.h5").write_bytes(os.urandom(5000 + i))
    late = tmp_path / "central" / "scan" / ".f1.h5.domas-part"
    try:
        fac.start_controller()
        fac.start_agents(n=1, streams=2)
        done = fac.cli("submit", str(src), f"{tmp_path}/central/", "--wait")
        assert done.returncode == 0, done.stdout + done.stderr
        fac.kill_controller()
        _aged(late)                                  # written by a chunk that came too late
        fac.start_controller()
        wait_until(lambda: not late.exists(), 20, "the restarted controller's janitor to remove the late part file")
        assert sorted(p.name for p in (tmp_path / "central" / "scan").iterdir()) == ["f0.h5", "f1.h5", "f2.h5"]
    finally:
        fac.stop()
    assert fac.tracebacks() == {}
