"""An NFS tier that is not mounted: its mount point is an empty directory on the local disk.

A stat of the root finds a directory there, so the old probe called the tier up and agents wrote
the copies into the empty mount point (on the wrong file system, gone once the mount came back).
Now each configured tier gets a marker file with an id the controller records; a root without it
is down, no lease writes under it, and when the mount comes back the queued work is copied once.

Real processes: `domas controller` and an agent from a config file in an empty directory; the
"unmount" renames the tier away and leaves an empty directory in its place, the "mount" puts it back.
"""

from __future__ import annotations

import json
import os
import time

from domas.controller.tiers import MARKER, TierHealth, probe_root
from tests.fixtures.common import wait_until
from tests.fixtures.controller import _scrape
from tests.fixtures.facility import Facility


def _up(fac: Facility, tier: str) -> float | None:
    return _scrape(fac.metrics, "domas_storage_tier_up", f'tier="{tier}"')


def test_probe_marks_a_tier_once_then_wants_its_marker(tmp_path):
    root = tmp_path / "central"
    root.mkdir()
    ok, why, marker = probe_root(str(root), mark=True)           # first probe: writes the marker
    assert ok and len(marker) == 32 and (root / MARKER).read_text().split()[-1] == marker
    assert probe_root(str(root), mark=True) == (True, "", marker)   # found, not written again
    assert probe_root(str(root), marker) == (True, "", marker)
    (root / MARKER).rename(tmp_path / "kept")                      # an empty mount point
    ok, why, _ = probe_root(str(root), marker)
    assert not ok and "is missing" in why and "not mounted" in why and marker in why
    (root / MARKER).write_text("domas storage tier 0123\n")         # another tier's disk mounted here
    ok, why, _ = probe_root(str(root), marker)
    assert not ok and "0123" in why
    assert probe_root(str(root)) == (True, "", "")                  # a --root: a stat as before
    assert not list(tmp_path.glob("central/*.tmp"))


def test_a_root_that_cannot_be_written_is_probed_by_stat(tmp_path):
    root = tmp_path / "beamline"
    root.mkdir()
    root.chmod(0o555)
    try:
        if os.access(root, os.W_OK):        # root ignores the mode
            return
        assert probe_root(str(root), mark=True) == (True, "", "")
    finally:
        root.chmod(0o755)


def test_tier_health_marker_fields_default_to_stat_only():
    h = TierHealth("x", "/x")
    assert (h.marker, h.marks) == ("", False)


def test_unmounted_tier_gets_no_write_and_the_work_is_done_once_it_is_back(tmp_path):
    fac = Facility(tmp_path)
    central, away = tmp_path / "central", tmp_path / "central.mounted"
    src = tmp_path / "beamline" / "scan"
    src.mkdir(parents=True)
    data = {f"f{i}.h5": os.urandom(50_000 + i) for i in range(4)}
    for name, b in data.items():
        (src / name).write_bytes(b)
    try:
        fac.start_controller()
        wait_until(lambda: _up(fac, "central") == 1, 20, "central up")
        marker = (central / MARKER).read_text().split()[-1]
        assert fac.rows("SELECT marker FROM tier_markers WHERE url=?", str(central)) == [(marker,)]
        central.rename(away)                 # the file system is unmounted: its mount point stays, empty
        central.mkdir()
        wait_until(lambda: _up(fac, "central") == 0, 20, "central reported down")
        fac.start_agents(n=1, streams=2)
        sub = fac.cli("submit", str(src), f"{central}/", "--json")
        assert sub.returncode == 0, sub.stderr
        tid = json.loads(sub.stdout)["transfer_id"]
        time.sleep(3.0)                      # agents would have copied 200 kB many times over by now
        assert list(central.rglob("*")) == [], "something was written into the empty mount point"
        st = json.loads(fac.cli("status", tid, "--json").stdout)
        assert (st["state"], st["files_done"], st["files_failed"]) == ("queued", 0, 0), st
        central.rmdir()                      # mounted again
        away.rename(central)
        wait_until(lambda: _up(fac, "central") == 1, 20, "central up again")
        done = fac.cli("status", tid, "--wait", "--json")
        st = json.loads(done.stdout)
        assert (done.returncode, st["files_done"], st["files_failed"]) == (0, 4, 0), done.stdout + done.stderr
        assert _scrape(fac.metrics, "domas_storage_tier_outages_total", 'tier="central"') == 1
        # then new work, with the controller restarted on the same state: the marker is still wanted
        fac.stop()
        fac.start_controller()
        fac.start_agents(n=1, streams=2)
        again = fac.cli("submit", str(src), f"{central}/later/", "--wait", "--json")
        assert again.returncode == 0 and json.loads(again.stdout)["files_done"] == 4, again.stdout + again.stderr
        (central / MARKER).unlink()         # a marker gone after a restart: still down
        wait_until(lambda: _up(fac, "central") == 0, 20, "central down without its marker")
    finally:
        fac.stop()
    copied = sorted(p.relative_to(central).as_posix() for p in central.rglob("*") if p.is_file())
    assert copied == sorted([*(f"scan/{n}" for n in data), *(f"later/scan/{n}" for n in data)]), copied
    for name, b in data.items():
        assert (central / "scan" / name).read_bytes() == b == (central / "later" / "scan" / name).read_bytes()
    log = (tmp_path / "controller.log").read_text()
    assert "is missing: the file system is probably not mounted" in log and " is back after " in log
    assert fac.tracebacks() == {}


def test_scheduler_holds_back_and_revokes_under_a_root_that_is_down():
    from tests.test_scheduler import ask, leases_in, of, sched, submit
    from domas.controller import events as ev

    s = sched()
    submit(s, "t1", [3 * 4096], dst="/central")
    held = ask(s, "a", 1)
    assert [lease.transfer_id for lease in held] == ["t1"]
    out = s.on_event(ev.TiersDown(("/central",)), 1.0)
    assert [lid for r in of(out, ev.RevokeLeases) for lid in r.lease_ids] == [held[0].lease_id]
    submit(s, "t2", [4096], dst="/tape", now=1.5)
    got = ask(s, "a", 8, now=2.0)                             # nothing under /central; /tape is up
    assert [lease.transfer_id for lease in got] == ["t2"]
    assert s.snapshot(2.0)["errors_total"].get("lease_expired", 0) == 0     # not counted as a failure
    again = leases_in(s.on_event(ev.TiersDown(()), 3.0))     # back: its three chunks go out
    assert sorted((lease.transfer_id, lease.index) for lease in again) == [("t1", 0), ("t1", 1), ("t1", 2)]


def test_the_scrubber_leaves_an_unmounted_tier_alone(tmp_path):
    """Was: every copy on a tier that is not mounted read back as missing, was marked bad (one ERROR
    line each) and was copied again from another tier once the mount was back."""
    import zlib

    from domas.archive.scrub import Scrubber, tier_marked
    from domas.catalogue.base import Dataset, FileRecord, Replica
    from domas.catalogue.sqlite import SQLiteCatalogue

    root, away = tmp_path / "central", tmp_path / "central.mounted"
    cat = SQLiteCatalogue(str(tmp_path / "cat.db"))
    ds = cat.upsert_dataset(Dataset(beamtime="bt1", path="/B1/202611/Data/BT1/raw"))
    data = os.urandom(4096)
    (root / ds.path.strip("/")).mkdir(parents=True)
    (root / ds.path.strip("/") / "a.h5").write_bytes(data)
    assert probe_root(str(root), mark=True)[0]                      # the controller's marker
    cat.upsert_file(FileRecord(ds.pid, "a.h5", len(data), adler32=f"{zlib.adler32(data):08x}", mtime=1.0,
                               replicas={"central": Replica("verified", "x", 100.0)}))
    now = [1000.0]
    scrub = Scrubber(cat, lambda tier, pid, path: str(root / ds.path.strip("/") / path), interval=500.0,
                     rate=8 << 20, tiers=("central",), clock=lambda: now[0],
                     present=lambda tier: tier_marked(str(root)))
    root.rename(away)                                               # not mounted: an empty mount point
    root.mkdir()
    assert scrub.run_once() == [] and scrub.absent == {"central"}
    assert cat.get_file(ds.pid, "a.h5").replicas["central"].state == "verified"
    root.rmdir()
    away.rename(root)                                               # mounted again: checked, and good
    now[0] = 1001.0
    assert [r for _, r in scrub.run_once()] == ["ok"] and scrub.absent == set()
    assert tier_marked(str(root)) and not tier_marked(str(tmp_path / "nowhere"))
    cat.close()


def test_an_xrootd_tier_gets_its_marker_and_is_down_without_it(xrootd_server, xrootd_storage):
    """The marker over root:// (the tape tier on a real XRootD server): written once, found again,
    and an export that lost it (a server restarted over an empty directory) is down."""
    store, base = xrootd_storage
    url = f"{xrootd_server.url}/{base}"
    ok, why, marker = probe_root(url, mark=True)
    assert ok and len(marker) == 32, why
    assert probe_root(url, mark=True) == (True, "", marker)
    assert probe_root(url, marker) == (True, "", marker)
    store.remove(f"{base}/{MARKER}")
    ok, why, _ = probe_root(url, marker)
    assert not ok and "is missing" in why
    assert not [s for s in store.listdir(base) if s.path.endswith(".tmp")]


def test_expiry_never_takes_an_unmounted_tier_for_deleted_copies(tmp_path):
    """Was: with central not mounted, expiring the beamline copy read central back as missing and
    marked the good central copy bad (it was copied again; now tape's copy protects it); expiring the central copy found nothing
    to delete and recorded it "deleted" while it still sat on the real file system, never expired."""
    import zlib

    from domas.archive.archiver import Archiver
    from domas.catalogue.base import Dataset, FileRecord, Replica, content_version
    from domas.catalogue.sqlite import SQLiteCatalogue
    from domas.config import Config, PolicyConfig, StorageConfig

    roots = {t: tmp_path / t for t in ("beamline", "central", "tape")}
    cat = SQLiteCatalogue(tmp_path / "cat.sqlite")
    cfg = Config(storage=StorageConfig(**{t: str(p) for t, p in roots.items()}), policy=PolicyConfig(scrub_interval=0))
    arch = Archiver(cfg, cat, "127.0.0.1:1", clock=lambda: 1000.0)
    ds = cat.upsert_dataset(Dataset(beamtime="BT1", path="/B1/202611/Data/BT1/raw"))
    data = os.urandom(8192)
    for t, root in roots.items():
        (root / ds.path.strip("/")).mkdir(parents=True)
        (root / ds.path.strip("/") / "a.h5").write_bytes(data)
        os.utime(root / ds.path.strip("/") / "a.h5", (5.0, 5.0))
        assert probe_root(str(root), mark=True)[0]                  # the controller's markers
    v = content_version(len(data), 5.0)
    cat.upsert_file(FileRecord(ds.pid, "a.h5", len(data), adler32=f"{zlib.adler32(data):08x}", mtime=5.0, replicas={
        "beamline": Replica("pending", "b", 10.0, v), "central": Replica("verified", "c", 20.0, v),
        "tape": Replica("verified", "t", 30.0, v)}))
    central, away = roots["central"], tmp_path / "central.mounted"
    central.rename(away)                                            # not mounted
    central.mkdir()

    def state(tier: str) -> str:
        return cat.get_file(ds.pid, "a.h5").replicas[tier].state

    arch.expire(ds.pid, "a.h5", "beamline")        # central cannot be read back now; tape protects it
    assert (state("beamline"), state("central")) == ("deleted", "verified")
    assert not (roots["beamline"] / ds.path.strip("/") / "a.h5").exists()
    arch.expire(ds.pid, "a.h5", "central")                          # the copy is there, on the real disk
    assert state("central") == "verified"
    central.rmdir()
    away.rename(central)                                            # mounted again: expired for real
    arch.expire(ds.pid, "a.h5", "central")
    assert state("central") == "deleted" and not (central / ds.path.strip("/") / "a.h5").exists()
    cat.close()


def test_a_tier_never_seen_before_is_made_at_its_first_probe(tmp_path):
    """A configured tier whose root does not exist yet is made and marked (a first copy into it made
    it before the marker); once marked, a root that is gone is down and not made again."""
    root = tmp_path / "new" / "central"
    ok, why, marker = probe_root(str(root), mark=True)
    assert ok and (root / MARKER).exists(), why
    (root / MARKER).unlink()
    root.rmdir()
    ok, why, _ = probe_root(str(root), marker, mark=True)
    assert not ok and not root.exists()
