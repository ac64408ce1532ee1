"""Retry policy: exponential backoff with full jitter, decided per error class.

Invariants: a delay is drawn uniformly from [0, min(cap, base * 2**(attempt-1))] with the
random source the caller passes in (never the global one), so a seeded Random replays exactly.
A permanent error never gets a delay. After `max_attempts` failed attempts there is no delay
either: the caller gives up and keeps the last error as the reason -- unless the policy has a
`budget` and the error says the storage is away (PATIENT_KINDS): those are retried until
`budget` seconds have passed since the first failure, so a server restart is outlasted. The
caller passes the elapsed time in. Used by the controller's scheduler and by the agent's copy
engine alike. No I/O, no clock.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Mapping

from domas.errors import KINDS


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Full-jitter delay before retry number `attempt` (1 for the first retry)."""
    if attempt < 1:
        raise ValueError(f"attempt must be at least 1, got {attempt}")
    ceiling = min(cap, base * 2.0 ** min(attempt - 1, 62))
    return rng.uniform(0.0, ceiling)


def is_retriable(err_kind: str, retriable: bool) -> bool:
    """A reported error is retried when its reporter says so, unless its kind is known permanent."""
    cls = KINDS.get(err_kind)
    if cls is not None and not cls.retriable and err_kind not in ("error", "storage"):
        return False
    return retriable


# Error kinds that mean "the storage is not answering right now" rather than "this went wrong".
PATIENT_KINDS = frozenset({"timeout", "connection_lost", "server_refused", "transient"})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a failing operation is retried.

    `max_attempts` counts every try, the first included; `per_kind` lowers or raises it for one
    error kind (e.g. {"checksum_mismatch": 3}). `budget` (seconds, 0 for none) keeps retrying
    PATIENT_KINDS not named in `per_kind` after the attempts are used up, until that much time
    has passed since the first failure.
    """

    max_attempts: int = 5
    base: float = 0.2
    cap: float = 30.0
    per_kind: Mapping[str, int] = field(default_factory=dict)
    budget: float = 0.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.base < 0 or self.cap < 0 or self.budget < 0:
            raise ValueError("backoff base, cap and budget must not be negative")

    def attempts_for(self, err_kind: str) -> int:
        return self.per_kind.get(err_kind, self.max_attempts)

    def next_delay(self, attempt: int, err_kind: str, retriable: bool, rng: random.Random,
                   elapsed: float = 0.0) -> float | None:
        """Seconds to wait after failed attempt number `attempt` (1-based), or None to give up.
        `elapsed`: seconds since the first failure of this operation (for the budget)."""
        if not is_retriable(err_kind, retriable):
            return None
        if attempt < self.attempts_for(err_kind):
            return backoff_delay(attempt, self.base, self.cap, rng)
        left = self.budget - elapsed
        if left <= 0 or err_kind not in PATIENT_KINDS or err_kind in self.per_kind:
            return None
        return min(left, backoff_delay(attempt, self.base, self.cap, rng))
