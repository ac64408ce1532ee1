"""What every discovery source hands the archiver: found files, annotations, batches; the Source interface."""

from __future__ import annotations

import abc
import asyncio
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Found:
    """A file on beamline storage, relative to the beamline root."""

    relpath: str
    size: int
    mtime: float
    adler32: str = ""        # the writer's checksum, checked against the copy ("" = unknown)
    closed: bool = False     # the writer said it is closed: taken at once, no stability wait


@dataclass(frozen=True)
class Annotation:
    """Metadata for the dataset at `dataset_path` (<Beamline>/<YYYYMM>/Data/<BeamtimeID>/<area>)
    and for the runs (scans) that write to it, which the catalogue keeps as records of their own.

    Applied by filling only what is empty: a field already set (by an operator, a NeXus file or an
    earlier document) is never overwritten, so applying an annotation twice changes nothing."""

    dataset_path: str
    metadata: dict
    proposal: str = ""       # fills the beamtime's proposal when it has none
    scans: dict = field(default_factory=dict)    # run uid -> fields of its catalogue.Scan record (filled alike)


@dataclass
class Batch:
    found: list[Found] = field(default_factory=list)
    annotations: list[Annotation] = field(default_factory=list)
    token: Any = None        # what committed() needs to acknowledge this batch


class Source(abc.ABC):
    """Base class: a source with no background work (see the module docstring for the contract)."""

    name = "source"
    ready: asyncio.Event | None = None

    async def start(self) -> None:
        """Begin background work (a consumer connection); called once in the archiver's loop."""

    async def close(self) -> None:
        """Stop background work; unacknowledged messages go back to their queue."""

    @abc.abstractmethod
    def poll(self, now: float) -> Batch:
        """What the source found since the last poll: files and metadata annotations (every plugin
        answers this; start, close and committed have no work by default)."""

    def committed(self, batch: Batch) -> None:
        """Every item of `batch` is in the catalogue."""

    def collectors(self) -> tuple:
        """Prometheus collectors this source exposes (served on the controller's /metrics)."""
        return ()


def fill_empty(current: Any, new: Any) -> Any:
    """`current` with the empty parts filled from `new`, recursively through dicts; idempotent."""
    if isinstance(current, dict) and isinstance(new, dict):
        out = dict(current)
        for k, v in new.items():
            out[k] = fill_empty(out[k], v) if k in out else v
        return out
    return new if current in (None, "", [], {}) else current
