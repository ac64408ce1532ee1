"""Backoff with full jitter and the per-error-class retry decision (pure, no fixtures)."""

from __future__ import annotations

import random

import pytest

from domas.retry import RetryPolicy, backoff_delay, is_retriable


@pytest.mark.parametrize("attempt, base, cap, ceiling", [
    (1, 0.2, 30.0, 0.2),
    (2, 0.2, 30.0, 0.4),
    (5, 0.2, 30.0, 3.2),
    (9, 0.2, 30.0, 30.0),        # 0.2 * 256 = 51.2, capped
    (10_000, 0.2, 30.0, 30.0),   # no overflow for absurd attempt numbers
    (3, 1.0, 2.5, 2.5),
])
def test_delay_is_uniform_over_zero_to_the_capped_exponential(attempt, base, cap, ceiling):
    rng = random.Random(attempt)
    draws = [backoff_delay(attempt, base, cap, rng) for _ in range(2000)]
    assert all(0.0 <= d <= ceiling for d in draws)
    assert min(draws) < 0.05 * ceiling and max(draws) > 0.95 * ceiling   # full jitter, not "equal" jitter
    assert 0.45 * ceiling < sum(draws) / len(draws) < 0.55 * ceiling


def test_the_injected_random_source_alone_decides_the_delays():
    a = [backoff_delay(k, 0.5, 60.0, r) for r in [random.Random(42)] for k in range(1, 8)]
    random.seed(1)   # the global generator must not matter
    b = [backoff_delay(k, 0.5, 60.0, r) for r in [random.Random(42)] for k in range(1, 8)]
    assert a == b
    assert a != [backoff_delay(k, 0.5, 60.0, r) for r in [random.Random(43)] for k in range(1, 8)]


def test_attempt_numbers_start_at_one():
    with pytest.raises(ValueError, match="attempt must be at least 1"):
        backoff_delay(0, 0.2, 30.0, random.Random(0))


@pytest.mark.parametrize("kind, retriable, expected", [
    ("timeout", True, True),
    ("connection_lost", True, True),
    ("checksum_mismatch", True, True),
    ("not_found", True, False),          # a known permanent kind wins over the reporter's flag
    ("permission_denied", False, False),
    ("no_space", True, False),
    ("timeout", False, False),           # the reporter said no
    ("something_new", True, True),       # unknown kinds: the reporter decides
    ("something_new", False, False),
    ("storage", True, True),             # generic classes: the reporter decides
])
def test_retriable_by_kind_and_flag(kind, retriable, expected):
    assert is_retriable(kind, retriable) is expected


@pytest.mark.parametrize("attempt, kind, retriable, gives_delay", [
    (1, "timeout", True, True),
    (4, "timeout", True, True),
    (5, "timeout", True, False),          # max_attempts=5 tries in all
    (1, "not_found", False, False),
    (1, "checksum_mismatch", True, True),
    (2, "checksum_mismatch", True, False),  # per_kind limit 2
])
def test_policy_gives_a_delay_or_gives_up(attempt, kind, retriable, gives_delay):
    policy = RetryPolicy(max_attempts=5, base=0.1, cap=5.0, per_kind={"checksum_mismatch": 2})
    delay = policy.next_delay(attempt, kind, retriable, random.Random(0))
    if gives_delay:
        assert delay is not None and 0.0 <= delay <= min(5.0, 0.1 * 2 ** (attempt - 1))
    else:
        assert delay is None


def test_policy_delay_matches_backoff_delay_for_the_same_seed():
    policy = RetryPolicy(max_attempts=9, base=0.3, cap=10.0)
    assert policy.next_delay(3, "timeout", True, random.Random(9)) == backoff_delay(3, 0.3, 10.0, random.Random(9))


@pytest.mark.parametrize("kwargs, message", [
    ({"max_attempts": 0}, "max_attempts must be at least 1"),
    ({"base": -1.0}, "must not be negative"),
    ({"cap": -1.0}, "must not be negative"),
])
def test_policy_rejects_nonsense(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**kwargs)


def test_a_budget_outlasts_the_attempts_for_storage_that_is_away():
    """Issue 8 finding 6: a server restart takes longer than max_attempts quick retries."""
    p = RetryPolicy(max_attempts=3, base=0.1, cap=1.0, budget=60.0, per_kind={"checksum_mismatch": 3})
    rng = random.Random(1)
    assert p.next_delay(3, "connection_lost", True, rng, elapsed=10.0) is not None
    assert p.next_delay(50, "server_refused", True, rng, elapsed=59.5) <= 0.5     # never past the budget
    assert p.next_delay(3, "timeout", True, rng, elapsed=60.0) is None
    assert p.next_delay(3, "checksum_mismatch", True, rng, elapsed=1.0) is None    # not a storage outage
    assert p.next_delay(1, "not_found", False, rng, elapsed=1.0) is None
    assert RetryPolicy(max_attempts=3).next_delay(3, "connection_lost", True, rng, elapsed=1.0) is None
