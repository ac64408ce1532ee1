"""Per-endpoint admission (circuit breaker, AIMD limit, endpoint names) and fair share, pure."""

from __future__ import annotations

import pytest

from domas.controller.breaker import BreakerState, CircuitBreaker
from domas.controller.endpoints import AimdLimit, endpoint_of
from domas.controller.fairshare import FairShare


@pytest.mark.parametrize("url, endpoint", [
    ("root://eos.example//heps/a.h5", "eos.example:1094"),
    ("root://eos.example:2094//heps/a.h5", "eos.example:2094"),
    ("roots://eos.example//a", "eos.example:1094"),
    ("/data/b1/a.h5", "file"),
    ("file:///data/b1/a.h5", "file"),
    ("relative/path", "file"),
    ("https://dav.example/x", "dav.example:443"),
])
def test_endpoint_names(url, endpoint):
    assert endpoint_of(url) == endpoint


# (step, time, expected state after the step, allow after the step)
BREAKER_SCRIPT = [
    ("fail", 0.0, BreakerState.CLOSED, True),
    ("fail", 1.0, BreakerState.CLOSED, True),
    ("ok", 1.5, BreakerState.CLOSED, True),          # a success resets the count
    ("fail", 2.0, BreakerState.CLOSED, True),
    ("fail", 2.1, BreakerState.CLOSED, True),
    ("fail", 2.2, BreakerState.OPEN, False),         # third consecutive failure opens
    ("wait", 11.0, BreakerState.OPEN, False),        # cool-down 10 s not over
    ("wait", 12.2, BreakerState.HALF_OPEN, True),
    ("start", 12.2, BreakerState.HALF_OPEN, False),  # one probe only
    ("fail", 13.0, BreakerState.OPEN, False),        # probe failed: open again, cool-down doubled
    ("wait", 23.5, BreakerState.OPEN, False),
    ("wait", 33.0, BreakerState.HALF_OPEN, True),
    ("start", 33.0, BreakerState.HALF_OPEN, False),
    ("abandon", 34.0, BreakerState.HALF_OPEN, True),  # probe vanished (lease expired): may probe again
    ("start", 34.0, BreakerState.HALF_OPEN, False),
    ("ok", 35.0, BreakerState.CLOSED, True),         # probe succeeded
]


def test_breaker_script():
    b = CircuitBreaker(threshold=3, cooldown=10.0)
    for step, now, state, allowed in BREAKER_SCRIPT:
        {"fail": b.on_failure, "ok": b.on_success, "start": b.on_start, "abandon": b.on_abandon,
         "wait": lambda now: None}[step](now)
        assert (b.state(now), b.allow(now)) == (state, allowed), (step, now)
    assert b.cooldown == 10.0   # reset after closing


def test_aimd_grows_one_per_window_and_halves_once_per_burst():
    lim = AimdLimit(initial=4, minimum=1, maximum=6, decrease_gap=2.0)
    for _ in range(4):
        lim.on_success(1 << 20, 0.1, 0.0)
    assert lim.slots == 5
    for _ in range(5 + 6 + 7):
        lim.on_success(1 << 20, 0.1, 0.0)
    assert lim.slots == 6                       # capped at maximum
    lim.on_error("timeout", 10.0)
    lim.on_error("timeout", 10.5)               # same burst: counted once
    assert lim.slots == 3
    lim.on_error("not_found", 13.0)             # not congestion
    assert lim.slots == 3
    lim.on_error("server_refused", 13.0)
    lim.on_error("timeout", 16.0)
    assert lim.slots == 1                       # 1.5 -> floor 1 and never below minimum


def test_aimd_treats_a_much_slower_chunk_as_congestion():
    lim = AimdLimit(initial=8, minimum=1, maximum=64)
    for _ in range(5):
        lim.on_success(8 << 20, 0.1, 0.0)        # ~80 MiB/s per chunk
    assert lim.slots == 8
    lim.on_success(8 << 20, 10.0, 1.0)           # 0.8 MiB/s: far below the average
    assert lim.slots == 4


def test_aimd_rejects_inconsistent_bounds():
    with pytest.raises(ValueError):
        AimdLimit(initial=0, minimum=1, maximum=4)


class _T:
    def __init__(self, beamline, priority, seq):
        self.beamline, self.priority, self.seq, self.listed = beamline, priority, seq, False


@pytest.mark.parametrize("weights, expected_b_share", [
    ({}, 0.5),
    ({"B": 3.0}, 0.75),
    ({"A": 4.0}, 0.2),
])
def test_fair_share_splits_bytes_by_weight(weights, expected_b_share):
    fs = FairShare(weights, overhead=0)
    fs.add(_T("A", 0, 1))
    fs.add(_T("B", 0, 2))
    served = {"A": 0, "B": 0}
    for _ in range(1000):
        b = fs.pick()
        served[b.name] += 1
        fs.charge(b, 100)
    assert abs(served["B"] / 1000 - expected_b_share) < 0.01


def test_a_returning_beamline_gets_no_credit_for_idle_time():
    fs = FairShare(overhead=0)
    a = _T("A", 0, 1)
    fs.add(a)
    for _ in range(100):
        fs.charge(fs.pick(), 1000)
    fs.add(_T("B", 0, 2))
    picks = []
    for _ in range(10):
        b = fs.pick()
        picks.append(b.name)
        fs.charge(b, 1000)
    assert picks.count("B") == 5   # alternates from now on, not 10 in a row


def test_priority_then_submission_order_inside_a_beamline():
    fs = FairShare()
    low, high, high_later = _T("A", 0, 1), _T("A", 5, 2), _T("A", 5, 3)
    for t in (low, high_later, high):
        fs.add(t)
    assert fs.beamline("A").queue == [high, high_later, low]
    fs.remove(high)
    assert fs.beamline("A").queue == [high_later, low] and not high.listed


def test_nonpositive_weight_is_refused():
    with pytest.raises(ValueError, match="must be positive"):
        FairShare({"A": 0})
