"""Discovery: which files on beamline storage are new and finished, in the HEPS layout.

Pure core (no I/O, no clock; `now` is passed in):
- `parse_location(rel)` reads `<Beamline>/<YearMonth>/Data/<BeamtimeID>/<area>/<path>`; anything
  else is not a beamtime file. `..`, empty and absolute components, and names that are not UTF-8,
  are refused (UnsafePath).
- `StabilityTracker` emits a file once its (size, mtime) has stayed the same for the stability
  window: detectors append to HDF5 files for minutes, and a growing file must not be taken.
  A file is emitted once; if it changes after that it is emitted again as changed.
The shell (`scan_tree`) lists a storage tree and refuses symlinks that leave the root.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from domas.errors import StorageError, UnsafePath
from domas.rootpath import check_relative
from domas.transfer.parts import PART_SUFFIX

AREAS = ("raw", "processed", "scratch", "share")
_YEARMONTH = re.compile(r"^\d{6}$")


@dataclass(frozen=True)
class Location:
    beamline: str
    yearmonth: str
    beamtime: str
    area: str
    relpath: str          # path inside the area

    @property
    def dataset_path(self) -> str:
        """The dataset a file belongs to: one per beamtime and area."""
        return f"{self.beamline}/{self.yearmonth}/Data/{self.beamtime}/{self.area}"


def parse_location(rel: str) -> Location | None:
    """The beamtime location of a path relative to the beamline root, or None if outside the layout."""
    parts = check_relative(rel)
    if len(parts) < 6 or parts[2] != "Data" or not _YEARMONTH.match(parts[1]) or parts[4] not in AREAS:
        return None
    return Location(parts[0], parts[1], parts[3], parts[4], "/".join(parts[5:]))


@dataclass(frozen=True)
class Seen:
    size: int
    mtime: float
    since: float          # when this (size, mtime) was first seen


@dataclass(frozen=True)
class Ready:
    relpath: str
    size: int
    mtime: float
    changed: bool         # True if it had been emitted before with other content


class StabilityTracker:
    def __init__(self, stability_seconds: float) -> None:
        self.window = stability_seconds
        self._seen: dict[str, Seen] = {}
        self._emitted: dict[str, tuple[int, float]] = {}

    def observe(self, listing: dict[str, tuple[int, float]], now: float) -> list[Ready]:
        """Feed one full scan ({relpath: (size, mtime)}); returns files that just became stable."""
        ready: list[Ready] = []
        for rel, (size, mtime) in listing.items():
            prev = self._seen.get(rel)
            if prev is None or (prev.size, prev.mtime) != (size, mtime):
                self._seen[rel] = prev = Seen(size, mtime, now)
            if now - prev.since < self.window:
                continue
            before = self._emitted.get(rel)
            if before == (size, mtime):
                continue
            self._emitted[rel] = (size, mtime)
            ready.append(Ready(rel, size, mtime, changed=before is not None))
        for gone in set(self._seen) - set(listing):
            del self._seen[gone]
        return ready

    def settled_by(self) -> float | None:
        """When the earliest file seen but not emitted yet will have been stable for the window
        (None: nothing is settling). A caller that scans rarely scans again then."""
        due = [seen.since + self.window for rel, seen in self._seen.items()
               if self._emitted.get(rel) != (seen.size, seen.mtime)]
        return min(due) if due else None

    def forget(self, relpath: str) -> None:
        self._emitted.pop(relpath, None)
        self._seen.pop(relpath, None)

    def mark_known(self, relpath: str, size: int, mtime: float) -> None:
        """A file already catalogued (after a restart): emit it again only if it changes."""
        self._emitted[relpath] = (size, mtime)


def scan_tree(store, root: str) -> tuple[dict[str, tuple[int, float]], list[UnsafePath]]:
    """List regular files below `root` as {relpath: (size, mtime)}; unsafe entries are reported."""
    files: dict[str, tuple[int, float]] = {}
    problems: list[UnsafePath] = []
    real_root = store.realpath(root)
    for entry in store.walk(root):
        rel = entry.path[len(root):].lstrip("/")
        if entry.is_link:
            target = store.realpath(entry.path)
            if not (target == real_root or target.startswith(real_root.rstrip("/") + "/")):
                problems.append(UnsafePath(f"{entry.path} is a symlink to {target}, outside the beamline root; "
                                           "not followed"))
                continue
            try:
                st = store.stat_follow(entry.path)
            except StorageError as e:       # a loop or a dangling link: this entry, not the whole scan
                problems.append(UnsafePath(f"{entry.path} is a symlink that cannot be followed ({e}); not archived"))
                continue
            if st.is_dir:
                continue
            if st.special:
                problems.append(UnsafePath(f"{entry.path} is a symlink to {st.special}, not a regular file; not archived"))
                continue
            files[rel] = (st.size, st.mtime)
        elif entry.special:     # an agent reading a FIFO would wait for a writer forever
            problems.append(UnsafePath(f"{entry.path} is {entry.special}, not a regular file; not archived"))
        elif not entry.is_dir and not posixpath.basename(rel).endswith(PART_SUFFIX):
            files[rel] = (entry.size, entry.mtime)
    return files, problems
