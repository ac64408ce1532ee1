"""Circuit breaker for one storage endpoint.

Invariants: CLOSED lets everything through and counts consecutive failures; the K-th one opens
it. OPEN refuses everything until `cooldown` seconds have passed, then it is HALF_OPEN: exactly
one probe may be in flight; the probe's success closes the breaker, its failure opens it again
with the cool-down doubled (up to `max_cooldown`). Any success resets the failure count. Time is
passed in; no I/O, no clock.
"""

from __future__ import annotations

from enum import Enum


class BreakerState(str, Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    __slots__ = ("threshold", "base_cooldown", "max_cooldown", "cooldown", "failures", "opened_at",
                 "probing", "_open")

    def __init__(self, threshold: int = 5, cooldown: float = 10.0, max_cooldown: float = 300.0) -> None:
        if threshold < 1 or cooldown <= 0:
            raise ValueError("breaker threshold must be >= 1 and cooldown > 0")
        self.threshold = threshold
        self.base_cooldown = cooldown
        self.max_cooldown = max(cooldown, max_cooldown)
        self.cooldown = cooldown
        self.failures = 0
        self.opened_at = 0.0
        self.probing = False
        self._open = False

    def state(self, now: float) -> BreakerState:
        if not self._open:
            return BreakerState.CLOSED
        if now - self.opened_at >= self.cooldown:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def allow(self, now: float) -> bool:
        """May one more operation start now? (Does not reserve the probe; see `on_start`.)"""
        if not self._open:
            return True
        return now - self.opened_at >= self.cooldown and not self.probing

    def on_start(self, now: float) -> None:
        """An operation allowed by `allow` started; in HALF_OPEN it is the probe."""
        if self._open:
            self.probing = True

    def on_success(self, now: float) -> None:
        self.failures = 0
        if self._open:
            self._open = False
            self.probing = False
            self.cooldown = self.base_cooldown

    def on_failure(self, now: float) -> None:
        self.failures += 1
        if self._open:
            if self.probing or now - self.opened_at >= self.cooldown:
                self.cooldown = min(self.max_cooldown, self.cooldown * 2)
                self.opened_at = now
            self.probing = False
        elif self.failures >= self.threshold:
            self._open = True
            self.opened_at = now
            self.probing = False

    def on_abandon(self, now: float) -> None:
        """An operation ended without a verdict (lease expired or revoked): free the probe slot."""
        self.probing = False
