"""Reconcile: compare what is on disk with what the catalogue says (pure, no I/O).

Invariants:
- Every path on either side lands in exactly one of: matched, missing_in_catalogue,
  missing_on_disk, size_drift, checksum_drift.
- A size difference is reported as size drift only (different sizes imply different content).
- A checksum is compared only when both sides know it (the disk listing may leave it out, and a
  catalogue record may not have one yet); lists come back sorted by path.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Iterable

from .base import FileRecord


@dataclass(frozen=True)
class DiskEntry:
    path: str                        # relative to the dataset, as in FileRecord.path
    size: int
    adler32: str | None = None       # 8 hex digits when computed, None when not


@dataclass(frozen=True)
class Drift:
    path: str
    catalogue: int | str
    disk: int | str


@dataclass(frozen=True)
class ReconcileReport:
    matched: int = 0
    missing_in_catalogue: list[DiskEntry] = field(default_factory=list)
    missing_on_disk: list[str] = field(default_factory=list)
    size_drift: list[Drift] = field(default_factory=list)
    checksum_drift: list[Drift] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.missing_in_catalogue or self.missing_on_disk or self.size_drift or self.checksum_drift)

    def to_dict(self) -> dict:
        return {**asdict(self), "clean": self.clean}


def reconcile(on_disk: Iterable[DiskEntry], records: Iterable[FileRecord]) -> ReconcileReport:
    """Classify every path of a dataset found on disk and/or in the catalogue."""
    disk = {e.path: e for e in on_disk}
    cat = {r.path: r for r in records}
    missing_in, size_drift, sum_drift = [], [], []
    matched = 0
    for path in sorted(disk):
        entry, record = disk[path], cat.get(path)
        if record is None:
            missing_in.append(entry)
        elif record.size != entry.size:
            size_drift.append(Drift(path, record.size, entry.size))
        elif entry.adler32 and record.adler32 and entry.adler32.lower() != record.adler32:
            sum_drift.append(Drift(path, record.adler32, entry.adler32.lower()))
        else:
            matched += 1
    missing_on = sorted(p for p in cat if p not in disk)
    return ReconcileReport(matched, missing_in, missing_on, size_drift, sum_drift)


# A tier is expected to hold a file when its replica there is in one of these states ("pending" is
# the beamline's own copy before its first transfer); "copying" may or may not be there yet.
_PRESENT = ("pending", "verified", "bad", "stale", "deleting")


def reconcile_tier(on_disk: Iterable[DiskEntry], records: Iterable[FileRecord], tier: str) -> ReconcileReport:
    """Classify a dataset's files on one storage tier: the files whose replica on `tier` says they
    are there against what the tier holds (paths relative to the dataset on both sides). A file on
    the tier that the catalogue does not place there is reported as not catalogued."""
    expected, in_flight = [], set()
    for r in records:
        state = r.replicas[tier].state if tier in r.replicas else None
        if state in _PRESENT:
            expected.append(r)
        elif state == "copying":
            in_flight.add(r.path)
    return reconcile((e for e in on_disk if e.path not in in_flight), expected)
