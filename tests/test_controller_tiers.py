"""A storage tier taken away and brought back, as a storage admin's Grafana sees it.

The pure part (`TierHealth`) is table-tested; then a real `domas controller` from a config file
in an empty directory, with agents, has its central tier's root renamed away and back, and the
live /metrics scrape shows `domas_storage_tier_up{tier="central"}` go 0 and 1 again, one outage
counted, its seconds kept, the other tiers up throughout, and a copy into central working after.
"""

from __future__ import annotations

import json
import os

from domas.controller.tiers import TierHealth, probe_root
from tests.fixtures.common import wait_until
from tests.fixtures.controller import _scrape
from tests.fixtures.facility import Facility


def test_tier_health_counts_outages_and_their_seconds():
    h = TierHealth("central", "/x", every=2.0, timeout=10.0)
    assert h.due(0.0) and h.up is None
    h.started(0.0)
    assert not h.due(1.0)                               # one probe in flight at a time
    assert h.observe(True, 1.0) is False                # the first "up" is no news
    assert (h.up, h.outages, h.down_seconds(1.0)) == (True, 0, 0.0)
    assert not h.due(2.0) and h.due(3.0)
    h.started(3.0)
    assert h.observe(False, 4.0, "gone") is True
    assert (h.up, h.outages, h.reason) == (False, 1, "gone")
    assert h.down_seconds(7.0) == 3.0
    h.started(7.0)
    assert h.observe(False, 8.0) is False               # still down: not another outage
    h.started(9.0)
    assert h.observe(True, 10.0) is True
    assert (h.up, h.outages, h.down_seconds(20.0)) == (True, 1, 6.0)
    h.started(20.0)                                     # a probe that never answers
    assert h.check_hung(29.0) is False and h.check_hung(30.0) is True
    assert (h.up, h.outages) == (False, 2) and "no answer" in h.reason
    assert h.check_hung(31.0) is False                  # counted once
    assert h.observe(True, 32.0) is True and h.down_seconds(40.0) == 8.0


def test_a_first_probe_that_fails_is_an_outage():
    h = TierHealth("tape", "/x")
    h.started(0.0)
    assert h.observe(False, 0.1, "missing") is True and h.outages == 1


def test_probe_root_wants_a_directory(tmp_path):
    (tmp_path / "file").write_text("x")
    assert probe_root(str(tmp_path)) == (True, "", "")
    ok, why, _ = probe_root(str(tmp_path / "missing"))
    assert not ok and "missing" in why
    ok, why, _ = probe_root(str(tmp_path / "file"))
    assert not ok and "not a directory" in why


def _tier(fac: Facility, name: str, what: str = "up") -> float | None:
    return _scrape(fac.metrics, f"domas_storage_tier_{what}", f'tier="{name}"')


def test_a_tier_renamed_away_and_back_shows_on_metrics_and_copies_resume(tmp_path):
    fac = Facility(tmp_path, extra="")
    central, away = tmp_path / "central", tmp_path / "central.away"
    src = tmp_path / "beamline" / "scan"
    src.mkdir(parents=True)
    for i in range(3):
        (src / f"f{i}.h5").write_bytes(os.urandom(10_000 + i))
    try:
        fac.start_controller()
        fac.start_agents(n=1, streams=2)
        wait_until(lambda: _tier(fac, "central") == 1 and _tier(fac, "beamline") == 1, 20, "both tiers up")
        assert _tier(fac, "central", "outages_total") == 0
        central.rename(away)                                # the tier is taken away
        wait_until(lambda: _tier(fac, "central") == 0, 20, "central reported down")
        assert _tier(fac, "central", "outages_total") == 1
        assert _tier(fac, "beamline") == 1                  # the other tier is not affected
        wait_until(lambda: (_tier(fac, "central", "down_seconds_total") or 0) >= 1.0, 20, "the outage's seconds")
        away.rename(central)                                # and brought back
        wait_until(lambda: _tier(fac, "central") == 1, 20, "central reported up again")
        down = _tier(fac, "central", "down_seconds_total")
        assert down >= 1.0 and _tier(fac, "central", "outages_total") == 1
        assert _tier(fac, "central", "last_probe_timestamp_seconds") > 0
        done = fac.cli("submit", str(src), f"{central}/", "--wait", "--json")
        assert done.returncode == 0 and json.loads(done.stdout)["files_done"] == 3, done.stdout + done.stderr
        assert _tier(fac, "central", "down_seconds_total") == down     # no longer growing
    finally:
        fac.stop()
    log = (tmp_path / "controller.log").read_text()
    assert "storage tier central" in log and " is down: " in log and " is back after " in log
    assert fac.tracebacks() == {}
