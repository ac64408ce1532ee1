"""Discovery and the data policy: pure cores, table-driven; plus the tree scan on a real directory."""

from __future__ import annotations

import os

import pytest

from domas.archive.discovery import StabilityTracker, parse_location, scan_tree
from domas.archive.lifecycle import Action, FileView, ReplicaState, Retention, decide, may_delete
from domas.errors import UnsafePath
from domas.transfer.storage import PosixStorage

DAY = 86400.0


@pytest.mark.parametrize("rel,expected", [
    ("B1/202611/Data/BT0001/raw/scan/f.h5", ("B1", "202611", "BT0001", "raw", "scan/f.h5")),
    ("ID21/202612/Data/P42/processed/x", ("ID21", "202612", "P42", "processed", "x")),
    ("B1/202611/Data/BT0001/other/f.h5", None),
    ("B1/2026-11/Data/BT0001/raw/f.h5", None),
    ("B1/202611/Data/BT0001/raw", None),
    ("notes.txt", None),
])
def test_parse_location(rel, expected):
    loc = parse_location(rel)
    assert (loc and (loc.beamline, loc.yearmonth, loc.beamtime, loc.area, loc.relpath)) == expected


@pytest.mark.parametrize("rel", ["B1/../../etc/passwd", "/abs/path", "B1//x", "B1/./x", "a\\b"])
def test_unsafe_paths_refused(rel):
    with pytest.raises(UnsafePath):
        parse_location(rel)


def test_growing_file_is_taken_only_after_it_settles():
    t = StabilityTracker(stability_seconds=30)
    assert t.observe({"a": (10, 100.0)}, now=1000) == []
    assert t.observe({"a": (20, 110.0)}, now=1020) == []          # still growing
    assert t.observe({"a": (20, 110.0)}, now=1040) == []          # 20 s stable: not yet
    ready = t.observe({"a": (20, 110.0)}, now=1050)
    assert [(r.relpath, r.size, r.changed) for r in ready] == [("a", 20, False)]
    assert t.observe({"a": (20, 110.0)}, now=2000) == []          # emitted once
    t.observe({"a": (25, 3000.0)}, now=3000)
    again = t.observe({"a": (25, 3000.0)}, now=3031)
    assert [(r.size, r.changed) for r in again] == [(25, True)]


def test_known_files_are_not_emitted_again_after_restart():
    t = StabilityTracker(5)
    t.mark_known("a", 1, 1.0)
    t.observe({"a": (1, 1.0)}, now=0)
    assert t.observe({"a": (1, 1.0)}, now=10) == []


def R(state, since):
    return ReplicaState(state, since)


RET = Retention(beamline=7 * DAY, central=90 * DAY)


@pytest.mark.parametrize("replicas,area,now,expected", [
    ({}, "raw", 10, [Action("copy", "k", "central", "beamline")]),
    ({"central": R("copying", 5)}, "raw", 10, []),
    ({"central": R("failed", 5)}, "raw", 10, []),                                    # backs off
    ({"central": R("failed", 5)}, "raw", 10 + 400, [Action("copy", "k", "central", "beamline")]),
    ({"central": R("verified", 5)}, "processed", 10, [Action("copy", "k", "tape", "central")]),
    ({"central": R("verified", 5)}, "raw", 10,
     [Action("copy", "k", "tape", "central"), Action("make_read_only", "k", "beamline")]),
    # beamline expires after 7 days once central is verified
    ({"central": R("verified", 5), "tape": R("copying", 6)}, "processed", 8 * DAY, [Action("delete", "k", "beamline")]),
    # central never expires while tape is not verified, however old
    ({"beamline": R("deleted", 1), "central": R("verified", 5), "tape": R("failed", 6)}, "processed", 1000 * DAY,
     [Action("copy", "k", "tape", "central")]),
    ({"beamline": R("deleted", 1), "central": R("verified", 5), "tape": R("verified", 6)}, "processed", 91 * DAY,
     [Action("delete", "k", "central")]),
    ({"beamline": R("deleted", 1), "central": R("verified", 5), "tape": R("verified", 6)}, "processed", 30 * DAY, []),
])
def test_policy_table(replicas, area, now, expected):
    view = FileView("k", area, discovered_at=0.0, replicas=replicas, read_only=area != "raw")
    assert decide(view, RET, now) == expected


def test_nothing_deleted_without_verified_downstream():
    for state in ("copying", "failed", "missing", "deleted"):
        view = FileView("k", "raw", 0.0, {"central": R(state, 1), "tape": R(state, 1)})
        assert not any(a.kind == "delete" for a in decide(view, RET, 10_000 * DAY))
        assert not may_delete(view, "beamline") and not may_delete(view, "central")
    assert not may_delete(FileView("k", "raw", 0.0, {"tape": R("verified", 1)}), "tape")


def test_scan_refuses_symlinks_escaping_root(tmp_path):
    root = tmp_path / "beamline"
    (root / "B1/202611/Data/BT1/raw").mkdir(parents=True)
    (root / "B1/202611/Data/BT1/raw/a.h5").write_bytes(b"123")
    (tmp_path / "secret").write_bytes(b"x")
    os.symlink(tmp_path / "secret", root / "B1/202611/Data/BT1/raw/escape")
    os.symlink(root / "B1/202611/Data/BT1/raw/a.h5", root / "B1/202611/Data/BT1/raw/inside")
    files, problems = scan_tree(PosixStorage(), str(root))
    assert set(files) == {"B1/202611/Data/BT1/raw/a.h5", "B1/202611/Data/BT1/raw/inside"}
    assert len(problems) == 1 and "outside the beamline root" in str(problems[0])
