"""The part-file janitor: removes part files nobody will finish (a killed copy, a hung agent).

Invariants:
- Only part names (transfer/parts.py) are ever removed, never a finished file or anything else.
- A part file is an orphan when it has not been written for `max_age` seconds (its mtime; every
  chunk written moves it), it is not one the caller still copies (`keep`, part paths, or a
  function giving them that is called only when there is an old part file), and no
  writer holds its lock (backends with advisory locks: a running `domas copy` is never touched).
  `max_age` is at least the lease time: a writer whose lease is alive has written since.
- A removed part file's resume journal (in the caller's state directory) goes with it.
- `SweepSchedule` is the pure part: which directories to sweep at `now`, each at most once per
  `every` seconds and only while a file was finalized into it (or left a part file there: failed,
  cancelled) within `window` seconds.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from domas.errors import DestinationBusy, DomasError, NotFound

from .journal import journal_path
from .parts import final_name, is_part_name


def orphans(entries, now: float, max_age: float, keep: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """Paths of the part files among `entries` (Stats) that are old enough and not kept."""
    return [e.path for e in entries
            if not e.is_dir and not e.is_link and is_part_name(posixpath.basename(e.path))
            and now - e.mtime >= max_age and e.path not in keep]


def sweep(store, directory: str, *, now: float, max_age: float,
          keep: frozenset[str] | set[str] | Callable[[], set[str]] = frozenset(),
          state_dir: Path | None = None) -> list[str]:
    """Remove the orphan part files directly inside `directory`; returns the paths removed. `keep`
    is the part paths to leave alone, or a function giving them, called only when the directory
    holds a part file old enough to be an orphan (finding what is still in progress may be a walk
    over every queued file; most sweeps find nothing old)."""
    try:
        entries = store.listdir(directory)
    except NotFound:
        return []
    candidates = orphans(entries, now, max_age)
    if candidates and callable(keep):
        keep = keep()
    removed = []
    for path in candidates:
        if path in keep:
            continue
        if _remove_unlocked(store, path):
            removed.append(path)
            _drop_journal(store, path, state_dir)
    return removed


def _remove_unlocked(store, path: str) -> bool:
    try:
        lock = store.lock(path, create=False)
    except (DestinationBusy, NotFound):
        return False                      # a live writer holds it, or it was finished meanwhile
    try:
        store.remove(path)
        return True
    except NotFound:
        return False
    except DomasError:
        return False                      # left for the next sweep
    finally:
        if lock is not None:
            lock.release()


def _drop_journal(store, part: str, state_dir: Path | None) -> None:
    name = final_name(posixpath.basename(part))
    if state_dir is None or name is None:
        return
    journal_path(state_dir, store.url(posixpath.join(posixpath.dirname(part), name))).unlink(missing_ok=True)


@dataclass
class SweepSchedule:
    """Which destination directories the janitor visits, and when (pure: `now` is passed in)."""

    every: float                          # seconds between two sweeps of one directory
    window: float                         # a directory is visited this long after its last finalize
    _finalized: dict[str, float] = field(default_factory=dict)
    _swept: dict[str, float] = field(default_factory=dict)

    def finalized(self, directory: str, now: float) -> None:
        self._finalized[directory] = now

    def due(self, now: float) -> list[str]:
        """Directories to sweep now (each is then not due again for `every` seconds)."""
        for d in [d for d, t in self._finalized.items() if now - t > self.window]:
            del self._finalized[d]
            self._swept.pop(d, None)
        out = [d for d in self._finalized if now - self._swept.get(d, float("-inf")) >= self.every]
        for d in out:
            self._swept[d] = now
        return out
