"""One destination, one writer: two unfinished transfers that name the same destination (a
resubmission after a controller crash, a source submitted again) never write its part file at
the same time.

The old scheduler leased both files' chunks at once. Both wrote `.NAME.domas-part`; the first
file's rename took the part file away, the second's later chunks went into a new part file with
holes where its earlier chunks had been, and the second file was verified by its chunk sums and
renamed over the good copy (seen end to end: a 1 MiB file with 14 of 16 chunks zero). The pure
test shows the rule at the scheduler; the end-to-end one copies real files with real processes.
"""

from __future__ import annotations

import os

from domas.controller import events as ev
from tests.fixtures.facility import Facility
from tests.test_scheduler import CS, ask, leases_in, of, ok, report, sched, whole_adler


def _submit_same(s, tid: str, beamline: str, n: int = 2) -> None:
    files = tuple(ev.FileSpec(f"/src/{i}", f"/dst/{i}", 3 * CS) for i in range(n))
    out = s.on_event(ev.TransferSubmitted(ev.TransferSpec(tid, beamline, 0, CS), files), 0.0)
    assert of(out, ev.TransferAccepted), out


def _writers(active: dict) -> dict[str, set[str]]:
    by_dst: dict[str, set[str]] = {}
    for lease in active.values():
        by_dst.setdefault(lease.dst_url, set()).add(lease.transfer_id)
    return by_dst


def test_a_destination_is_written_by_one_transfer_at_a_time():
    s = sched()
    _submit_same(s, "first", "b1")
    _submit_same(s, "again", "b2")          # another beamline: the fair share alternates between them
    active = {lease.lease_id: lease for lease in ask(s, "a", 100)}
    assert active
    done_by: dict[str, list[str]] = {}
    now = 1.0
    while active:
        assert all(len(tids) == 1 for tids in _writers(active).values()), _writers(active)
        lease = active.pop(next(iter(active)))
        out = report(s, ok(lease), now)
        for fin in of(out, ev.FinalizeFile):
            out += s.on_event(ev.DestinationVerified(fin.transfer_id, fin.file_id, whole_adler(lease)), now)
        for d in of(out, ev.FileDone):
            done_by.setdefault(d.final_url, []).append(d.transfer_id)
        active.update({x.lease_id: x for x in leases_in(out)})
        active.update({x.lease_id: x for x in ask(s, "a", 100, now)})
        now += 0.01
    # both transfers finished every file, one after the other per destination
    assert {d: sorted(t) for d, t in done_by.items()} == {"/dst/0": ["again", "first"], "/dst/1": ["again", "first"]}
    assert s.snapshot(now)["transfers_active"] == 0


def test_a_waiting_file_starts_when_the_writer_is_cancelled_and_a_cancelled_waiter_is_skipped():
    s = sched()
    _submit_same(s, "first", "b1", n=1)
    _submit_same(s, "again", "b2", n=1)
    _submit_same(s, "third", "b1", n=1)
    got = ask(s, "a", 100)
    assert {x.transfer_id for x in got} == {"first"}       # the other two wait for /dst/0
    out = s.on_event(ev.CancelTransfer("again", "operator"), 1.0)    # a waiter goes
    assert of(out, ev.TransferEnded) and not leases_in(out)
    out = s.on_event(ev.CancelTransfer("first", "operator"), 2.0)    # the writer goes
    after = leases_in(out) + ask(s, "a", 100, 2.0)
    assert {x.transfer_id for x in after} == {"third"} and len(after) == 3


def test_two_transfers_of_one_tree_leave_every_copy_whole(tmp_path):
    """Two submissions of the same 24 x 1 MiB files (64 KiB chunks) from two beamlines, queued before
    the agents come: every destination ends with its source's bytes and both transfers are done
    (the old code failed files, or left some with zeroed chunks, marked done)."""
    fac = Facility(tmp_path)
    src = tmp_path / "beamline" / "scan"
    src.mkdir(parents=True)
    for i in range(24):
        (src / f"f{i:02d}.h5").write_bytes(os.urandom(1 << 20))
    try:
        fac.start_controller()
        tids = []
        for beamline in ("b1", "b2"):
            sub = fac.cli("submit", str(src), f"{tmp_path}/central/", "--chunk-size", "64KiB", "--beamline", beamline)
            assert sub.returncode == 0, sub.stderr
            tids.append(sub.stdout.split()[0])
        fac.start_agents(streams=4)
        for tid in tids:
            st = fac.cli("status", tid, "--wait")
            assert st.returncode == 0 and " done " in st.stdout, st.stdout + st.stderr
    finally:
        fac.stop()
    bad = [p.name for p in sorted(src.iterdir()) if (tmp_path / "central" / "scan" / p.name).read_bytes() != p.read_bytes()]
    assert bad == []
    assert fac.tracebacks() == {}


def _finish_all(s, tids: set[str]) -> tuple[dict[str, int], list]:
    """Lease, report and verify until nothing is left; (leases per transfer, FileDone actions)."""
    leased: dict[str, int] = {}
    done: list = []
    active = {x.lease_id: x for x in ask(s, "a", 100)}
    now = 1.0
    while active:
        lease = active.pop(next(iter(active)))
        leased[lease.transfer_id] = leased.get(lease.transfer_id, 0) + 1
        out = report(s, ok(lease), now)
        for fin in of(out, ev.FinalizeFile):
            out += s.on_event(ev.DestinationVerified(fin.transfer_id, fin.file_id, whole_adler(lease)), now)
        done += of(out, ev.FileDone)
        active.update({x.lease_id: x for x in leases_in(out) + ask(s, "a", 100, now)})
        now += 0.01
    return leased, done


def test_a_resubmission_of_what_was_just_copied_is_done_without_a_second_copy():
    s = sched()
    _submit_same(s, "first", "b1")
    _submit_same(s, "again", "b2")
    leased, done = _finish_all(s, {"first", "again"})
    assert sum(leased.values()) == 6                # 2 destinations x 3 chunks: each copied once
    by = {(d.transfer_id, d.final_url): d.adler32 for d in done}
    assert len(by) == 4 and all(by[("again", d)] == by[("first", d)] for d in ("/dst/0", "/dst/1"))
    assert s.snapshot(9.0)["transfers_active"] == 0


def test_a_waiting_file_of_another_source_version_is_copied_again():
    s = sched()
    _submit_same(s, "first", "b1", n=1)
    files = (ev.FileSpec("/src/0", "/dst/0", 2 * CS),)           # the source shrank since
    assert of(s.on_event(ev.TransferSubmitted(ev.TransferSpec("again", "b2", 0, CS), files), 0.0), ev.TransferAccepted)
    leased, done = _finish_all(s, {"first", "again"})
    assert leased == {"first": 3, "again": 2} and len(done) == 2
