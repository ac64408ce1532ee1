"""Storage tier health: is each storage root the controller copies into there right now?

Every root the controller confines transfers to (the `[storage]` tiers, `[storage.endpoints]`,
each --root) is probed every `every` seconds, in a thread of its own (a hung mount or server never
holds up finalizing). A stat of the root is not enough: an NFS file system that is not mounted
leaves its mount point, an empty directory on the local disk. So each configured tier
(`storage.*`) gets a marker file, MARKER, holding a random id, when the controller first finds
it without one; the id is recorded in the controller's state store, and from then on the tier is
up only while its root holds that marker with that id. A root the controller may not write (a
beamline mounted read-only) is probed by stat alone, as is a --root. /metrics shows, per tier:
`domas_storage_tier_up` (1/0), `domas_storage_tier_outages_total` (transitions to down),
`domas_storage_tier_down_seconds_total` and `domas_storage_tier_last_probe_timestamp_seconds`,
which is what a storage admin's alert needs: the breaker gauges are per endpoint, and every
local tier shares one.

Invariants: `TierHealth` is pure (time is passed in). A tier is up after a probe that found its
root as a directory holding the recorded marker (if one is recorded); down after one that failed,
found something else or found no marker or another id, or when a probe has
had no answer for `timeout` seconds. At most one probe per tier is in flight. An outage is
counted once, when the tier goes down (at the first probe too); its seconds accumulate until a
probe finds the tier again. Before its first verdict a tier is not reported.
"""

from __future__ import annotations

import math
import posixpath
import uuid
from dataclasses import dataclass

from domas.errors import DomasError, NotFound
from domas.transfer.parts import TIER_MARKER, tier_marker_url
from domas.transfer.paths import Root
from domas.transfer.storage import resolve

PROBE_EVERY = 2.0       # seconds between two probes of one tier
PROBE_TIMEOUT = 10.0    # a probe without an answer this long: the tier is down
MARKER = TIER_MARKER    # at a tier's root: "domas storage tier <id>"
_MARKER_TEXT = "domas storage tier "


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
    marker: str = ""                     # the recorded marker id ("" none: stat only)
    marks: bool = False                  # a configured tier: gets a marker when it has none

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


def read_marker(store, path: str) -> str:
    """The id in the marker file at `path`, "" if there is none; raises other storage errors."""
    try:
        with store.open_read(path) as h:
            text = bytes(h.pread(0, 256)).decode("utf-8", "replace")
    except NotFound:
        return ""
    return text[len(_MARKER_TEXT):].strip() if text.startswith(_MARKER_TEXT) else ""


def probe_root(url: str, marker: str = "", mark: bool = False) -> tuple[bool, str, str]:
    """Blocking: is the tier at `url` there? (up, why not, marker id) - never raises.

    With `marker`, the root must hold a marker file with that id. Without one and with `mark`,
    the root is made if it does not exist, and the marker found there is returned, or a new one is
    written and returned (the caller records it); a root that cannot be written is left unmarked
    ("" returned) and probed by stat."""
    try:
        store, path = resolve(url)
        try:
            st = store.stat_follow(path)
        except NotFound:
            if not mark or marker:
                raise
            store.makedirs(path)        # a tier never seen before is made, as a first copy into it would
            st = store.stat_follow(path)
        if not st.is_dir:
            return False, f"{url} is not a directory", marker
        if not (marker or mark):
            return True, "", ""
        _, mpath = resolve(tier_marker_url(url))
        found = read_marker(store, mpath)
        if marker:
            if found == marker:
                return True, "", marker
            what = f"holds the id {found} instead" if found else "is missing"
            return False, (f"its marker file {MARKER} (id {marker}) {what}: the file system is probably not mounted "
                           f"(if the tier was emptied on purpose, write the line '{_MARKER_TEXT}{marker}' back "
                           f"into {tier_marker_url(url)})"), marker
        return True, "", found or _write_marker(store, mpath)
    except DomasError as e:
        return False, str(e), marker
    except Exception as e:      # noqa: BLE001 - a backend's foreign error is an outage too, not a crash
        return False, f"{type(e).__name__}: {e}", marker


def _write_marker(store, path: str) -> str:
    """A new marker at `path`, written whole under a temporary name and renamed into place; ""
    where the root cannot be written (left to the stat probe)."""
    new = uuid.uuid4().hex
    tmp = f"{path}.{new[:8]}.tmp"
    try:
        with store.open_write(tmp, truncate=True) as w:
            w.pwrite(0, f"{_MARKER_TEXT}{new}\n".encode())
            w.sync()
        store.rename(tmp, path)
        store.sync_dir(posixpath.dirname(path) or "/")
    except DomasError as e:
        if e.retriable:
            raise
        return ""
    return read_marker(store, path) or new        # another controller marking it at the same moment won
