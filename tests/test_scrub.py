"""The scrubber's pure core and the policy's repair of bad copies, table-driven; plus the catalogue
query the scrubber reads and one scrub pass over real files."""

from __future__ import annotations

import os
import zlib

import pytest

from domas.archive.lifecycle import Action, FileView, ReplicaState, Retention, decide, may_delete
from domas.archive.metrics import ScrubStats
from domas.archive.scrub import Due, Scrubber, period, pick, refill, verdict
from domas.catalogue.base import Dataset, FileRecord, Replica, content_version, holds_current
from domas.catalogue.sqlite import SQLiteCatalogue
from domas.transfer.filesum import pace

DAY = 86400.0
RET = Retention(beamline=7 * DAY, central=90 * DAY)


def R(state, since=1.0):
    return ReplicaState(state, since)


@pytest.mark.parametrize("replicas,expected", [
    # bad central, beamline still there: recopied from the beamline, at once (no back-off)
    ({"central": R("bad"), "tape": R("verified")}, [Action("copy", "k", "central", "beamline")]),
    # bad central, beamline gone: repaired from tape
    ({"beamline": R("deleted"), "central": R("bad"), "tape": R("verified")}, [Action("copy", "k", "central", "tape")]),
    # bad tape: recopied from central
    ({"beamline": R("deleted"), "central": R("verified"), "tape": R("bad")}, [Action("copy", "k", "tape", "central")]),
    # a bad beamline copy is no source: nothing to copy from, nothing deleted
    ({"beamline": R("bad")}, []),
])
def test_bad_copies_are_repaired_from_a_good_tier(replicas, expected):
    view = FileView("k", "processed", 0.0, replicas)
    assert decide(view, RET, 5.0) == expected


def test_a_bad_copy_never_protects_an_earlier_one():
    view = FileView("k", "processed", 0.0, {"central": R("bad"), "tape": R("bad")})
    assert not any(a.kind == "delete" for a in decide(view, RET, 10_000 * DAY))
    assert not may_delete(view, "beamline")
    view = FileView("k", "processed", 0.0, {"beamline": R("deleted"), "central": R("verified"), "tape": R("bad")})
    assert not any(a.kind == "delete" for a in decide(view, RET, 10_000 * DAY))
    assert not may_delete(view, "central")


def test_replica_versions_name_the_content_they_hold():
    f = FileRecord("p", "a", size=10, mtime=5.0)
    assert holds_current(f, Replica("verified", version=content_version(10, 5.0)))
    assert holds_current(f, Replica("verified"))                       # recorded before versions
    assert not holds_current(f, Replica("verified", version=content_version(10, 4.0)))


def test_pick_takes_the_longest_unchecked_first_within_the_budget():
    due = [Due(("p", "new"), "central", 100, 50.0), Due(("p", "old"), "tape", 100, 10.0),
           Due(("p", "mid"), "central", 100, 30.0)]
    chosen, left = pick(due, 150)
    assert [d.key[1] for d in chosen] == ["old", "mid"] and left == -50
    assert pick(due, 0) == ([], 0)
    big = [Due(("p", "huge"), "tape", 10**12, 0.0)]
    assert pick(big, 1)[0] == big                                      # never starved


def test_token_bucket_pacing_and_period():
    assert refill(-50, 100, 1.0) == 50
    assert refill(0, 100, 0.2) == 20 and refill(90, 100, 0.2) == 100   # at least a second's worth...
    assert refill(0, 100, 30.0) == 3000 and refill(5000, 100, 30.0) == 3000   # ...at most one gap's
    assert period(30 * 86400, 1.0) == 30.0 and period(2.0, 0.25) == 0.5 and period(0.1, 0.25) == 0.25
    assert pace(200, 1.0, 100) == 1.0 and pace(50, 1.0, 100) == 0.0 and pace(10, 0.0, 0) == 0.0


def test_verdicts():
    assert verdict("0001000a", "0001000a") == "ok"
    assert verdict("0001000a", "0001000b") == "bad"
    assert verdict("0001000a", None) == "missing"


def test_scrub_pass_finds_rot_and_missing_copies_and_stays_within_its_rate(tmp_path):
    cat = SQLiteCatalogue(tmp_path / "cat.sqlite")
    ds = cat.upsert_dataset(Dataset(beamtime="bt", path="/B1/202611/Data/bt/raw"))
    root = tmp_path / "central"
    files = {}
    for name in ("good", "rotten", "gone"):
        data = os.urandom(1 << 20)
        p = root / ds.path.strip("/") / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        files[name] = p
        cat.upsert_file(FileRecord(ds.pid, name, len(data), adler32=f"{zlib.adler32(data):08x}", mtime=1.0,
                                   replicas={"central": Replica("verified", str(p), 100.0)}))
    with open(files["rotten"], "r+b") as fh:                             # one flipped bit at rest
        fh.seek(1000)
        b = fh.read(1)
        fh.seek(1000)
        fh.write(bytes([b[0] ^ 1]))
    files["gone"].unlink()
    stats, now = ScrubStats(), [1000.0]
    scrub = Scrubber(cat, lambda tier, pid, path: str(root / ds.path.strip("/") / path), interval=500.0,
                     rate=8 << 20, stats=stats, tiers=("central",), clock=lambda: now[0])
    results = {d.key[1]: r for d, r in scrub.run_once()}
    assert results == {"good": "ok", "rotten": "bad", "gone": "missing"}
    states = {n: cat.get_file(ds.pid, n).replicas["central"] for n in files}
    assert states["good"].state == "verified" and states["good"].checked_at == 1000.0
    assert states["rotten"].state == "bad" and states["gone"].state == "bad"
    snap = stats.snapshot()
    assert snap["bytes"]["central"] == 2 << 20
    assert snap["files"][("central", "bad")] == 1 and snap["files"][("central", "missing")] == 1
    assert scrub.run_once() == []                   # nothing due again before the interval
    now[0] = 1600.0
    assert [d.key[1] for d, _ in scrub.run_once()] == ["good"]
    cat.close()


from tests.test_catalogue_contract import catalogue  # noqa: E402,F401  (the fixture: every backend)


def test_every_backend_keeps_replica_versions_checks_and_bad_state(catalogue):
    ds = catalogue.upsert_dataset(Dataset(beamtime="bt1", path="/data/b1/scan1"))
    v = content_version(10, 2.0)
    catalogue.upsert_files([FileRecord(ds.pid, n, 10, adler32="0001000a", mtime=2.0, replicas={
        "central": Replica("verified", f"u/{n}", t, v, c)}) for n, t, c in
        (("never", 50.0, None), ("old", 10.0, 40.0), ("fresh", 5.0, 500.0), ("recent", 300.0, None))])
    due = catalogue.replicas_due_for_check("central", 100.0, limit=10)
    assert [f.path for f in due] == ["old", "never"]                   # longest unchecked first
    assert due[0].replicas["central"] == Replica("verified", "u/old", 10.0, v, 40.0)
    catalogue.set_replica(ds.pid, "old", "central", "bad", "u/old", 10.0)
    assert catalogue.get_file(ds.pid, "old").replicas["central"].state == "bad"
    assert [f.path for f in catalogue.replicas_due_for_check("central", 100.0)] == ["never"]
    # a rewrite of the same size (new mtime) makes every other replica stale
    catalogue.upsert_file(FileRecord(ds.pid, "never", 10, mtime=3.0, replicas={"beamline": Replica("pending")}))
    got = catalogue.get_file(ds.pid, "never")
    assert got.replicas["central"].state == "stale" and got.adler32 == ""
