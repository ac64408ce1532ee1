"""reconcile(): pure comparison of a disk listing with catalogue records."""

from __future__ import annotations

from domas.catalogue.base import FileRecord
from domas.catalogue.reconcile import DiskEntry, Drift, reconcile


def rec(path, size, adler=""):
    return FileRecord("CSTR:x", path, size, adler)


def test_every_path_lands_in_exactly_one_bucket():
    disk = [DiskEntry("same", 5, "0000abcd"), DiskEntry("new", 1), DiskEntry("grown", 9, "00000001"),
            DiskEntry("flipped", 5, "0000FFFF"), DiskEntry("nosum", 5)]
    cat = [rec("same", 5, "0000abcd"), rec("gone", 3), rec("grown", 7, "00000001"),
           rec("flipped", 5, "0000abcd"), rec("nosum", 5, "0000abcd")]
    report = reconcile(disk, cat)
    assert report.matched == 2                                    # same, nosum (no checksum on disk)
    assert report.missing_in_catalogue == [DiskEntry("new", 1)]
    assert report.missing_on_disk == ["gone"]
    assert report.size_drift == [Drift("grown", 7, 9)]            # size drift only, not also checksum
    assert report.checksum_drift == [Drift("flipped", "0000abcd", "0000ffff")]
    assert not report.clean


def test_catalogue_without_checksum_is_not_drift():
    report = reconcile([DiskEntry("a", 1, "00000001")], [rec("a", 1, "")])
    assert report.clean and report.matched == 1


def test_empty_sides_and_sorted_output():
    assert reconcile([], []).clean
    report = reconcile([DiskEntry(p, 1) for p in "cab"], [rec(p, 1) for p in "zyx"])
    assert [e.path for e in report.missing_in_catalogue] == ["a", "b", "c"]
    assert report.missing_on_disk == ["x", "y", "z"]
    assert report.to_dict()["clean"] is False and report.to_dict()["missing_on_disk"] == ["x", "y", "z"]


def test_a_tier_is_expected_to_hold_what_its_replicas_say():
    from domas.catalogue.base import Replica
    from domas.catalogue.reconcile import reconcile_tier

    def f(path, state):
        return FileRecord("p", path, 5, "0005000a", replicas={"central": Replica(state)} if state else {})

    records = [f("ok", "verified"), f("rot", "bad"), f("old", "stale"), f("going", "deleting"), f("lost", "verified"),
               f("gone", "deleted"), f("flight", "copying"), f("never", None), f("failed", "failed")]
    disk = [DiskEntry(p, 5, "0005000a") for p in ("ok", "rot", "old", "going", "gone", "flight", "never")]
    r = reconcile_tier(disk, records, "central")
    assert r.matched == 4 and r.missing_on_disk == ["lost"]
    assert [e.path for e in r.missing_in_catalogue] == ["gone", "never"]      # there, but not catalogued there
    assert reconcile_tier([], [f("x", "copying"), f("y", "failed")], "central").clean
