"""Weighted fair share of leases between beamlines (virtual time), strict priority inside one.

Invariants: a beamline's virtual time grows by (chunk bytes + overhead) / weight for every chunk
granted to it; the next chunk goes to the active beamline with the lowest virtual time (ties:
the one that became active first), so over any busy period each beamline's share of bytes is
proportional to its weight, however many files it queued. A beamline that becomes active again
starts at no less than the lowest virtual time of the active ones: idle time earns no credit.
Inside a beamline, transfers are served by higher priority first, then by submission order.
No I/O, no clock.
"""

from __future__ import annotations

import bisect
from typing import Iterable, Mapping, Protocol


class Queued(Protocol):
    beamline: str
    priority: int
    seq: int
    listed: bool


class Beamline:
    __slots__ = ("name", "weight", "vtime", "queue", "since")

    def __init__(self, name: str, weight: float) -> None:
        self.name = name
        self.weight = weight
        self.vtime = 0.0
        self.queue: list = []     # transfers with work, sorted by (-priority, seq)
        self.since = 0            # activation order, for ties


def _key(t: Queued) -> tuple[int, int]:
    return (-t.priority, t.seq)


class FairShare:
    def __init__(self, weights: Mapping[str, float] | None = None, overhead: int = 1 << 20) -> None:
        self.weights = dict(weights or {})
        for name, w in self.weights.items():
            if w <= 0:
                raise ValueError(f"weight of beamline {name!r} must be positive, got {w}")
        self.overhead = overhead
        self.beamlines: dict[str, Beamline] = {}
        self._activations = 0

    def beamline(self, name: str) -> Beamline:
        b = self.beamlines.get(name)
        if b is None:
            b = self.beamlines[name] = Beamline(name, self.weights.get(name, 1.0))
        return b

    def add(self, t: Queued) -> None:
        """List a transfer that has work to hand out (no-op if it is listed)."""
        if t.listed:
            return
        b = self.beamline(t.beamline)
        if not b.queue:
            active = [o.vtime for o in self.beamlines.values() if o.queue]
            if active:
                b.vtime = max(b.vtime, min(active))
            self._activations += 1
            b.since = self._activations
        bisect.insort(b.queue, t, key=_key)
        t.listed = True

    def remove(self, t: Queued) -> None:
        if not t.listed:
            return
        b = self.beamlines[t.beamline]
        i = bisect.bisect_left(b.queue, _key(t), key=_key)
        if i < len(b.queue) and b.queue[i] is t:
            del b.queue[i]
        else:
            b.queue.remove(t)
        t.listed = False

    def pick(self, skip: Iterable[Beamline] = ()) -> Beamline | None:
        """The active beamline whose turn it is, ignoring those in `skip`."""
        best = None
        for b in self.beamlines.values():
            if b.queue and b not in skip and (best is None or (b.vtime, b.since) < (best.vtime, best.since)):
                best = b
        return best

    def charge(self, b: Beamline, nbytes: int) -> None:
        b.vtime += (nbytes + self.overhead) / b.weight
