"""The tree-scan source: list the beamline tree every pass; a file is taken once its size and
mtime stayed the same for the stability window (detectors append to HDF5 files for minutes).

Nothing to acknowledge: a file the catalogue already holds with the same size and mtime is
skipped by the archiver, so a scan that sees it again (after a restart, or after a "file closed"
message took it) changes nothing.
"""

from __future__ import annotations

import logging

from domas.agent.storage import resolve

from ..discovery import StabilityTracker, scan_tree
from . import Batch, Found, Source

log = logging.getLogger("domas.archiver")


class ScanSource(Source):
    name = "scan"

    def __init__(self, root: str, stability_seconds: float) -> None:
        self.root = root
        self.tracker = StabilityTracker(stability_seconds)
        self.problems_seen: set[str] = set()

    def poll(self, now: float) -> Batch:
        store, root = resolve(self.root)
        listing, problems = scan_tree(store, root)
        for p in problems:
            if str(p) not in self.problems_seen:
                self.problems_seen.add(str(p))
                log.warning("%s", p)
        return Batch(found=[Found(r.relpath, r.size, r.mtime) for r in self.tracker.observe(listing, now)])
