"""The controller's SQLite state: persisted facts rebuild the same scheduler after a restart."""

from __future__ import annotations

import random
import zlib

from domas.controller import events as ev
from domas.controller.scheduler import Scheduler
from domas.controller.state import StateStore

CS = 4096


def _data(src: str, size: int) -> bytes:
    return random.Random(src).randbytes(size)


def _ok(lease: ev.LeaseInfo, rid: str) -> ev.ChunkReport:
    part = _data(lease.src_url, lease.file_size)[lease.offset:lease.offset + lease.length]
    return ev.ChunkReport(rid, lease.lease_id, lease.transfer_id, lease.file_id, lease.index, lease.offset,
                          lease.length, zlib.adler32(part), 2**64 - 5, lease.length, 0.01)


def _grants(actions: list) -> list[ev.LeaseInfo]:
    return [x for a in actions if isinstance(a, ev.GrantLeases) for x in a.leases]


def test_restart_rebuilds_the_queue_from_the_store(tmp_path):
    store = StateStore(tmp_path / "state.sqlite")
    assert store.epoch == 1
    s = Scheduler(rng=random.Random(1), epoch=store.epoch)
    files = tuple(ev.FileSpec(f"/src/{i}", f"/dst/{i}", size, 123) for i, size in enumerate([3 * CS, CS, 0]))
    store.note_submission("t1", ["/src"], "/dst", "req-1", 10.0)
    out = s.on_event(ev.TransferSubmitted(ev.TransferSpec("t1", "b1", 2, CS), files), 10.0)
    store.apply(out, 10.0)
    s.on_event(ev.AgentRegistered("a"), 10.0)
    leases = _grants(s.on_event(ev.LeaseRequested("a", 5), 10.0))
    assert len(leases) == 5
    store.apply(s.on_event(ev.ChunkReported("a", _ok(leases[0], "r0")), 11.0), 11.0)
    fin = s.on_event(ev.ChunkReported("a", _ok(leases[3], "r3")), 11.0)
    store.apply(fin, 11.0)
    (f2,) = [a for a in fin if isinstance(a, ev.FinalizeFile)]
    store.apply(s.on_event(ev.DestinationVerified("t1", f2.file_id, f2.expected_adler32), 11.0), 11.0)
    store.close()

    store = StateStore(tmp_path / "state.sqlite")
    assert store.epoch == 2 and store.transfer_by_request("req-1") == "t1"
    specs, recs, chunks = store.load()
    assert specs == [ev.TransferSpec("t1", "b1", 2, CS, "default", 0)]
    assert [(r.file_id, r.state, r.mtime_ns) for r in recs] == [(1, "queued", 123), (2, "done", 123),
                                                                (3, "queued", 123)]
    assert chunks == [ev.ChunkRecord(1, 0, _ok(leases[0], "x").adler32)]
    r = Scheduler.restore(specs, recs, chunks, rng=random.Random(1), epoch=store.epoch)
    r.on_event(ev.AgentRegistered("a"), 20.0)
    again = _grants(r.on_event(ev.LeaseRequested("a", 10), 20.0))
    assert [(g.file_id, g.index) for g in again] == [(1, 1), (1, 2), (3, 0)]

    status = store.transfer("t1")
    assert (status["state"], status["files_total"], status["files_done"], status["bytes_total"]) == (
        "active", 3, 1, 4 * CS)
    assert status["bytes_done"] == 2 * CS and status["sources"] == ["/src"] and status["submitted_at"] == 10.0
    rows = store.files("t1")
    assert [(f["id"], f["state"], f["bytes_done"]) for f in rows] == [(1, "active", CS), (2, "done", CS),
                                                                      (3, "queued", 0)]
    assert rows[1]["adler32"] == f"{f2.expected_adler32:08x}"
    assert [t["id"] for t in store.transfers(beamline="b1")] == ["t1"]
    assert store.transfers(beamline="other") == [] and store.transfers(states=("done",)) == []


def test_cancel_and_failure_are_stored_and_a_finished_transfer_is_not_restored(tmp_path):
    store = StateStore(tmp_path / "s.sqlite")
    s = Scheduler(rng=random.Random(1), epoch=store.epoch)
    files = tuple(ev.FileSpec(f"/src/{i}", f"/dst/{i}", CS) for i in range(3))
    store.apply(s.on_event(ev.TransferSubmitted(ev.TransferSpec("t", chunk_size=CS), files), 1.0), 1.0)
    s.on_event(ev.AgentRegistered("a"), 1.0)
    (lease,) = _grants(s.on_event(ev.LeaseRequested("a", 1), 1.0))
    bad = ev.ChunkReport("r", lease.lease_id, "t", lease.file_id, 0, 0, CS, error_kind="not_found",
                         error_message="gone")
    store.apply(s.on_event(ev.ChunkReported("a", bad), 2.0), 2.0)
    store.apply(s.on_event(ev.CancelTransfer("t"), 3.0), 3.0)
    assert [(f["state"], f["error_kind"]) for f in store.files("t")] == [
        ("failed", "not_found"), ("cancelled", ""), ("cancelled", "")]
    t = store.transfer("t")
    assert (t["state"], t["finished_at"], t["errors"]) == ("cancelled", 3.0, {"not_found": 1})
    assert store.load() == ([], [], [])


def test_new_file_ids_after_a_restart_start_above_finished_transfers(tmp_path):
    """A finished transfer is not restored, but its file ids are taken: a new submission after a
    restart must get fresh ids (the old code restarted at 1: UNIQUE constraint failed: files.id)."""
    store = StateStore(tmp_path / "s.sqlite")
    s = Scheduler(rng=random.Random(1), epoch=store.epoch)
    files = tuple(ev.FileSpec(f"/src/{i}", f"/dst/{i}", 0) for i in range(3))
    store.apply(s.on_event(ev.TransferSubmitted(ev.TransferSpec("old", chunk_size=CS), files), 1.0), 1.0)
    store.apply(s.on_event(ev.CancelTransfer("old"), 1.5), 1.5)
    assert store.transfer("old")["state"] == "cancelled" and store.load() == ([], [], [])
    store.close()
    for run in range(2):
        store = StateStore(tmp_path / "s.sqlite")
        r = Scheduler.restore(*store.load(), rng=random.Random(1), epoch=store.epoch,
                              next_file_id=store.next_file_id())
        out = r.on_event(ev.TransferSubmitted(ev.TransferSpec(f"new{run}", chunk_size=CS), files[:2]), 2.0)
        store.apply(out, 2.0)
        (acc,) = [a for a in out if isinstance(a, ev.TransferAccepted)]
        assert acc.first_file_id == 4 + 2 * run
        assert [f["id"] for f in store.files(f"new{run}")] == [4 + 2 * run, 5 + 2 * run]
        store.close()


def test_a_prepared_submission_is_invisible_until_accepted_and_a_cut_short_one_is_removed(tmp_path):
    """A large submission is prepared off the event loop: ids reserved, file records built and the
    file rows written in short transactions before the O(1) TransferAccepted. Until that fact is
    stored the rows are nobody's (restore, status); a controller killed in between (the store is
    reopened without the acceptance) leaves no row behind, and a later submission reuses nothing."""
    files = tuple(ev.FileSpec(f"/src/d/{i}", f"/dst/d/{i}", CS + i, 7, f"v{i}") for i in range(12))
    store = StateStore(tmp_path / "state.sqlite")
    s = Scheduler(rng=random.Random(1), epoch=store.epoch)
    first = s.reserve_file_ids(len(files))
    spec = ev.TransferSpec("big", "b1", 0, CS)
    reason, prepared = Scheduler.prepare(spec, files, first)
    assert reason == "" and [f.id for f in prepared.files] == list(range(first, first + 12))
    store.stage_files("big", first, files, rows_per_commit=5)
    assert store.transfer("big") is None and store.load()[1] == []
    store.close()                                       # killed before the acceptance was stored

    store = StateStore(tmp_path / "state.sqlite")
    assert store._db.execute("SELECT COUNT(*) FROM files").fetchone()[0] == 0
    assert store._db.execute("SELECT COUNT(*) FROM staged").fetchone()[0] == 0
    s = Scheduler(rng=random.Random(1), epoch=store.epoch)
    first = s.reserve_file_ids(len(files))
    store.stage_files("big", first, files, rows_per_commit=5)
    store.note_submission("big", ["/src/d"], "/dst", "", 5.0, sum(f.size for f in files))
    out = s.on_event(ev.TransferSubmitted(spec, files, first, Scheduler.prepare(spec, files, first)), 5.0)
    assert [type(a) for a in out] == [ev.TransferAccepted] and out[0].staged
    store.apply(out, 5.0)
    t = store.transfer("big")
    assert (t["files_total"], t["bytes_total"]) == (12, sum(f.size for f in files))
    assert [(f.file_id, f.src, f.size, f.version) for f in store.load()[1]] == \
        [(first + i, f.src, f.size, f.version) for i, f in enumerate(files)]
    assert store._db.execute("SELECT COUNT(*) FROM staged").fetchone()[0] == 0
    # the same queue as a submission accepted the plain way
    plain = Scheduler(rng=random.Random(1), epoch=store.epoch)
    plain.on_event(ev.TransferSubmitted(spec, files), 5.0)
    for sched in (s, plain):
        sched.on_event(ev.AgentRegistered("a"), 5.0)
    got = [_grants(x.on_event(ev.LeaseRequested("a", 20), 6.0)) for x in (s, plain)]
    assert [(g.file_id, g.index, g.src_url, g.dst_url) for g in got[0]] == \
        [(g.file_id, g.index, g.src_url, g.dst_url) for g in got[1]]


def test_a_prepared_submission_with_a_bad_file_is_rejected_and_unstaged(tmp_path):
    store = StateStore(tmp_path / "state.sqlite")
    s = Scheduler(rng=random.Random(1), epoch=store.epoch)
    files = (ev.FileSpec("/src/a", "/dst/a", 1), ev.FileSpec("/src/b", "", 1))
    first = s.reserve_file_ids(2)
    reason, prepared = Scheduler.prepare(ev.TransferSpec("t"), files, first)
    assert "no path" in reason and prepared is None
    out = s.on_event(ev.TransferSubmitted(ev.TransferSpec("t"), files, first, (reason, prepared)), 1.0)
    assert isinstance(out[0], ev.Rejected) and "no path" in out[0].reason
    store.stage_files("t", first, files)
    store.unstage("t")
    assert store._db.execute("SELECT COUNT(*) FROM files").fetchone()[0] == 0
    assert s.reserve_file_ids(1) == first + 2            # ids of a rejected submission are not handed out again
