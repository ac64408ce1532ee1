"""The scrubber: stored copies are read back on a schedule and compared with the catalogue.

Pure core (no I/O, no clock; `now` is passed in):
- `pick(due, tokens)` takes the longest-unchecked copies first while the byte budget lasts; a copy
  larger than what is left still goes when the budget is positive (the bucket goes negative and
  refills), so a huge file is never starved and the long-run rate holds.
- `refill(tokens, rate, elapsed)` is the token bucket; it saves up at most what one gap between
  passes earns (and at least one second's worth), so a pass never takes more than its share.
- `pace(done, elapsed, rate)` is how long to wait so the bytes read so far keep to `rate`.
- `verdict(catalogued, read)`: "ok" only when the adler32 read equals the catalogued one.
The shell (`Scrubber`, `read_adler32`) reads through the Storage interface, records "bad" copies
and each check time in the catalogue, and counts bytes and results for /metrics. A "bad" copy is
never served (delivery serves "verified" only) and the lifecycle replaces it from a good tier.
A tier whose root lacks the controller's marker file (`tier_marked`: an NFS tier that is not
mounted shows an empty mount point) is not scrubbed: its copies are not missing, the tier is. A root
this host cannot write (mounted read-only: the controller cannot mark it and probes it by stat) is
there when it is a directory, as the controller says.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, replace

from domas.catalogue.base import ReplicaUpdate
from domas.errors import DomasError
from domas.transfer.filesum import pace, read_adler32
from domas.transfer.parts import TIER_MARKER, tier_marker_url
from domas.transfer.storage import resolve

log = logging.getLogger("domas.scrub")

SCRUB_TIERS = ("central", "tape")


# -- pure core -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Due:
    """One stored copy waiting for its check."""

    key: tuple[str, str]             # (dataset PID, path)
    tier: str
    size: int
    last_checked: float              # checked_at, or verified_at when never checked


def refill(tokens: float, rate: float, elapsed: float) -> float:
    """The byte budget after `elapsed` seconds at `rate` bytes/s (see the module docstring)."""
    elapsed = max(0.0, elapsed)
    return min(rate * max(1.0, elapsed), tokens + rate * elapsed)


def period(scrub_interval: float, tick: float) -> float:
    """Seconds between scrub passes: a quarter of the interval, within [tick, 30 s]."""
    return max(tick, min(scrub_interval / 4, 30.0))


def pick(due: list[Due], tokens: float) -> tuple[list[Due], float]:
    """(the copies to check now, longest unchecked first; the budget left, possibly negative)."""
    chosen = []
    for d in sorted(due, key=lambda d: (d.last_checked, d.key, d.tier)):
        if tokens <= 0:
            break
        chosen.append(d)
        tokens -= max(1, d.size)
    return chosen, tokens


def verdict(catalogued: str, read: str | None) -> str:
    if read is None:
        return "missing"
    return "ok" if read == catalogued else "bad"


# -- shell -----------------------------------------------------------------------------------------


def tier_marked(root: str) -> bool:
    """Blocking: is the tier there as the controller sees it (controller/tiers.py)? Its root holds the
    marker file the controller writes there, or it is a directory this host cannot write (a tier
    mounted read-only, which the controller cannot mark and probes by stat). False when neither,
    or when it cannot be looked at now."""
    try:
        store, path = resolve(tier_marker_url(root))
        store.stat(path)
    except DomasError:
        return unwritable_dir(root)
    return True


def unwritable_dir(root: str) -> bool:
    """Blocking: is `root` a directory that cannot be written from here (a read-only backend, or a
    local directory this process may not write: a read-only mount, or its mode)?"""
    try:
        store, path = resolve(root)
        if not store.stat_follow(path).is_dir:
            return False
    except DomasError:
        return False
    return not store.capabilities.writable or (store.scheme == "file" and not os.access(path, os.W_OK))


class Scrubber:
    """Checks due copies on the central and tape tiers, within the byte budget of `rate`; a tier
    for which `present(tier)` is False is left alone this pass (said once per absence)."""

    def __init__(self, catalogue, tier_url, *, interval: float, rate: float, stats=None,
                 tiers: tuple[str, ...] = SCRUB_TIERS, clock=time.time, present=None) -> None:
        self.cat, self.tier_url = catalogue, tier_url     # tier_url(tier, dataset_pid, path) -> url or None
        self.present, self.absent = present, set()
        self.interval, self.rate, self.stats, self.tiers, self.clock = interval, float(rate), stats, tiers, clock
        self.tokens, self._last = float(rate), None
        self.stop = threading.Event()

    def run_once(self) -> list[tuple[Due, str]]:
        """Check what is due now (blocking: call it in a worker thread); returns each copy's result."""
        now = self.clock()
        self.tokens = refill(self.tokens, self.rate, now - self._last if self._last is not None else 0.0)
        self._last = now
        if self.interval <= 0 or self.rate <= 0 or self.tokens <= 0:
            return []
        records: dict[tuple[tuple[str, str], str], object] = {}
        due = []
        for tier in self.tiers:
            if self.present is not None and not self.present(tier):
                if tier not in self.absent:
                    self.absent.add(tier)
                    log.warning("scrub: the %s tier's root has no marker file %s (not mounted?); its copies are "
                                "not checked until it is back", tier, TIER_MARKER)
                continue
            self.absent.discard(tier)
            for f in self.cat.replicas_due_for_check(tier, now - self.interval, limit=200):
                r = f.replicas[tier]
                records[((f.dataset, f.path), tier)] = f
                due.append(Due((f.dataset, f.path), tier, f.size, r.checked_at or r.verified_at or 0.0))
        chosen, self.tokens = pick(due, self.tokens)
        return [(d, self.check(records[(d.key, d.tier)], d.tier)) for d in chosen if not self.stop.is_set()]

    def check(self, f, tier: str) -> str:
        """Read one copy back; record the check (or "bad") in the catalogue; returns the verdict."""
        url = self.tier_url(tier, f.dataset, f.path)
        if url is None or not f.adler32:
            return "error"
        try:
            got = read_adler32(url, self.rate, self.stop, on_bytes=lambda n: self._count_bytes(tier, n))
        except DomasError as e:
            log.warning("scrub: cannot read %s on %s now: %s", url, tier, e)
            self._count(tier, "error")
            return "error"
        result = verdict(f.adler32, got)
        self._count(tier, result)
        fresh = self.cat.get_file(f.dataset, f.path)       # it may have changed while it was read
        if fresh is None or fresh.adler32 != f.adler32 or fresh.replicas.get(tier, None) is None \
                or fresh.replicas[tier].state != "verified":
            return result
        rep = fresh.replicas[tier]
        if result == "ok":
            self.cat.set_replicas([ReplicaUpdate(f.dataset, f.path, tier, replace(rep, checked_at=self.clock()))])
        else:
            log.error("scrub: %r on %s is %s (catalogue adler32 %s, read %s); marked bad, it will be "
                      "replaced from a good tier", url, tier, result, f.adler32, got)
            self.cat.set_replicas([ReplicaUpdate(f.dataset, f.path, tier,
                                                 replace(rep, state="bad", checked_at=self.clock()))])
        return result

    def _count_bytes(self, tier: str, n: int) -> None:
        if self.stats is not None:
            self.stats.count_bytes(tier, n)

    def _count(self, tier: str, result: str) -> None:
        if self.stats is not None:
            self.stats.count(tier, result)
