"""The tree-scan source: list the beamline tree every pass; a file is taken once its size and
mtime stayed the same for the stability window (detectors append to HDF5 files for minutes).

With filesystem events on (inotify.py), the scan is only the safety net: it runs every `every`
seconds ([source] full_scan_seconds), when the event queue overflowed (`request_rescan`), and again
when a file it saw will have settled, so that what it finds is taken without waiting a full period.

Nothing to acknowledge: a file the catalogue already holds with the same size and mtime is
skipped by the archiver, so a scan that sees it again (after a restart, or after a "file closed"
message took it) changes nothing.
"""

from __future__ import annotations

import logging

from prometheus_client.core import CounterMetricFamily

from domas.archive.discovery import StabilityTracker, scan_tree
from domas.archive.sources.base import Batch, Found, Source
from domas.transfer.storage import resolve

log = logging.getLogger("domas.archiver")


class ScanSource(Source):
    name = "scan"

    def __init__(self, root: str, stability_seconds: float, every: float = 0.0) -> None:
        self.root = root
        self.tracker = StabilityTracker(stability_seconds)
        self.problems_seen: set[str] = set()
        self.every = every           # 0: every pass; else seconds between full scans
        self.next_scan = 0.0         # the first poll scans
        self.scans = 0               # full scans done (the benchmark and tests read it)

    def request_rescan(self) -> None:
        """Scan the whole tree at the next poll (events were lost)."""
        self.next_scan = 0.0

    def poll(self, now: float) -> Batch:
        if self.every and now < self.next_scan:
            return Batch()
        store, root = resolve(self.root)
        listing, problems = scan_tree(store, root)
        self.scans += 1
        for p in problems:
            if str(p) not in self.problems_seen:
                self.problems_seen.add(str(p))
                log.warning("%s", p)
        ready = self.tracker.observe(listing, now)
        if self.every:
            settling = self.tracker.settled_by()
            self.next_scan = now + self.every if settling is None else min(now + self.every, settling)
        return Batch(found=[Found(r.relpath, r.size, r.mtime) for r in ready])

    def collectors(self) -> tuple:
        return (ScanCollector(self),)


class ScanCollector:
    def __init__(self, source: ScanSource) -> None:
        self.source = source

    def collect(self):
        yield CounterMetricFamily("domas_archiver_tree_scans", "Full scans of the beamline tree",
                                  value=self.source.scans)
