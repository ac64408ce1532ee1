"""Storage tier health: is each storage root the controller copies into there right now?

Every root the controller confines transfers to (the `[storage]` tiers, `[storage.endpoints]`,
each --root) is probed every `every` seconds with one stat of its root directory, in a thread
of its own (a hung mount or server never holds up finalizing). /metrics shows, per tier:
`domas_storage_tier_up` (1/0), `domas_storage_tier_outages_total` (transitions to down),
`domas_storage_tier_down_seconds_total` and `domas_storage_tier_last_probe_timestamp_seconds`,
which is what a storage admin's alert needs: the breaker gauges are per endpoint, and every
local tier shares one.

Invariants: `TierHealth` is pure (time is passed in). A tier is up after a probe that found its
root as a directory; down after one that failed or found something else, or when a probe has
had no answer for `timeout` seconds. At most one probe per tier is in flight. An outage is
counted once, when the tier goes down (at the first probe too); its seconds accumulate until a
probe finds the tier again. Before its first verdict a tier is not reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from domas.errors import DomasError
from domas.transfer.paths import Root
from domas.transfer.storage import resolve

PROBE_EVERY = 2.0       # seconds between two probes of one tier
PROBE_TIMEOUT = 10.0    # a probe without an answer this long: the tier is down


@dataclass
class TierHealth:
    tier: str
    url: str
    every: float = PROBE_EVERY
    timeout: float = PROBE_TIMEOUT
    up: bool | None = None
    changed_at: float = 0.0
    outages: int = 0
    down_closed: float = 0.0             # seconds of outages that have ended
    last_probe: float = -math.inf        # time of the last verdict
    probing_since: float | None = None
    reason: str = ""

    def due(self, now: float) -> bool:
        return self.probing_since is None and now - self.last_probe >= self.every

    def started(self, now: float) -> None:
        self.probing_since = now

    def observe(self, ok: bool, now: float, reason: str = "") -> bool:
        """A probe's verdict; True when the tier changed between up and down."""
        self.probing_since = None
        self.last_probe = now
        return self._set(ok, now, reason)

    def check_hung(self, now: float) -> bool:
        """Down when the probe in flight has had no answer for `timeout`; True on that change."""
        if self.probing_since is not None and now - self.probing_since >= self.timeout and self.up is not False:
            return self._set(False, now, f"its probe has had no answer for {self.timeout:g} s")
        return False

    def _set(self, ok: bool, now: float, reason: str) -> bool:
        if ok == self.up:
            return False
        first = self.up is None
        if self.up is False:
            self.down_closed += now - self.changed_at
        if not ok:
            self.outages += 1
        self.up, self.reason, self.changed_at = ok, reason, now
        return not (first and ok)        # a first verdict "up" is no news

    def down_seconds(self, now: float) -> float:
        return self.down_closed + (now - self.changed_at if self.up is False else 0.0)

    def figures(self, now: float) -> dict:
        return {"up": self.up, "outages": self.outages, "down_seconds": self.down_seconds(now),
                "last_probe": self.last_probe}


def tier_label(root: Root) -> str:
    """The `tier` label of a root: its configuration key without `storage.` (beamline, central,
    tape, endpoints.NAME); a --root is named by its location."""
    if root.key.startswith("storage."):
        return root.key[len("storage."):]
    return root.location.url


def probe_root(url: str) -> tuple[bool, str]:
    """Blocking: one stat of a tier's root. (up, why not) - never raises."""
    try:
        store, path = resolve(url)
        st = store.stat_follow(path)
    except DomasError as e:
        return False, str(e)
    except Exception as e:      # noqa: BLE001 - a backend's foreign error is an outage too, not a crash
        return False, f"{type(e).__name__}: {e}"
    if not st.is_dir:
        return False, f"{url} is not a directory"
    return True, ""
