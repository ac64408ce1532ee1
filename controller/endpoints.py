"""Per storage endpoint admission: which endpoint a URL is, and how many chunks it may carry.

Invariants: an endpoint is "host:port" of a URL with a network location (root:// without a port
gets 1094) and "file" for local paths. `AimdLimit.limit` stays within [minimum, maximum]: it
grows by one per `limit` successes at good throughput (additive increase, i.e. about +1 per
window), and halves on a congestion error or on a chunk much slower than the recent average
(multiplicative decrease), at most once per `decrease_gap` seconds so one burst of failures
from chunks started together counts once. Time is passed in; no I/O, no clock.
"""

from __future__ import annotations

from urllib.parse import urlsplit

DEFAULT_PORTS = {"root": 1094, "roots": 1094, "xroot": 1094, "http": 80, "https": 443, "davs": 443}

# Error kinds that say "the endpoint is overloaded or unwell" (as opposed to "this file is bad").
CONGESTION_KINDS = frozenset({"timeout", "connection_lost", "server_refused", "transient", "lease_expired"})


def endpoint_of(url: str) -> str:
    """'root://eos.example//a' -> 'eos.example:1094'; '/data/x' or 'file:///x' -> 'file'."""
    if "://" not in url:
        return "file"
    parts = urlsplit(url)
    if parts.scheme == "file" or not parts.hostname:
        return "file"
    port = parts.port or DEFAULT_PORTS.get(parts.scheme, 0)
    return f"{parts.hostname}:{port}"


class AimdLimit:
    """Adaptive limit of concurrent chunks for one endpoint."""

    __slots__ = ("limit", "minimum", "maximum", "decrease_gap", "slow_fraction", "_credit",
                 "_last_decrease", "rate")

    def __init__(self, initial: float = 16, minimum: float = 1, maximum: float = 256,
                 decrease_gap: float = 2.0, slow_fraction: float = 0.3) -> None:
        if not 1 <= minimum <= initial <= maximum:
            raise ValueError(f"need 1 <= minimum <= initial <= maximum, got {minimum}, {initial}, {maximum}")
        self.limit = float(initial)
        self.minimum = float(minimum)
        self.maximum = float(maximum)
        self.decrease_gap = decrease_gap
        self.slow_fraction = slow_fraction
        self._credit = 0.0
        self._last_decrease = float("-inf")
        self.rate = 0.0   # moving average of per-chunk throughput, bytes/s

    @property
    def slots(self) -> int:
        return int(self.limit)

    def on_success(self, nbytes: int, seconds: float, now: float) -> None:
        """A chunk finished: a slow one (per-chunk rate far below the average) counts as congestion."""
        if seconds > 0 and nbytes > 0:
            sample = nbytes / seconds
            slow = self.rate > 0 and sample < self.slow_fraction * self.rate
            self.rate = sample if self.rate == 0 else 0.8 * self.rate + 0.2 * sample
            if slow:
                self.decrease(now)
                return
        self._credit += 1.0 / self.limit
        if self._credit >= 1.0:
            self._credit -= 1.0
            self.limit = min(self.maximum, self.limit + 1.0)

    def on_error(self, err_kind: str, now: float) -> None:
        if err_kind in CONGESTION_KINDS:
            self.decrease(now)

    def decrease(self, now: float) -> None:
        if now - self._last_decrease < self.decrease_gap:
            return
        self._last_decrease = now
        self._credit = 0.0
        self.limit = max(self.minimum, self.limit / 2.0)
