"""`domas catalogue reconcile --tier NAME`: one storage tier of a deployment against the catalogue.

Catalogue dataset paths are relative to every tier root (a dataset /B1/202611/Data/BT1/raw lives at
<tier root>/B1/202611/Data/BT1/raw on each tier). One walk of the tier (or of the part of it given)
through the Storage interface (local or root://) lists what is there; each file goes to the dataset
whose directory holds it, files outside every dataset are reported as not catalogued, and each
dataset is compared with `reconcile_tier` (pure). Hidden part files of copies in flight, and the
tier's marker file at its root (controller/tiers.py), are skipped.
"""

from __future__ import annotations

import posixpath

from domas.catalogue import Catalogue, Dataset
from domas.catalogue.reconcile import DiskEntry, ReconcileReport, reconcile_tier
from domas.config import StorageConfig
from domas.errors import NotFound, UsageError
from domas.transfer.filesum import read_adler32
from domas.transfer.parts import PART_SUFFIX, TIER_MARKER
from domas.transfer.storage import resolve

TIERS = ("beamline", "central", "tape")


def _local(root: str) -> str:
    return root if "://" in root else posixpath.normpath(posixpath.abspath(root))


def tier_for_path(storage: StorageConfig, path: str) -> tuple[str, str] | None:
    """(tier, dataset-path prefix) when a local `path` lies inside a configured tier root."""
    here = posixpath.normpath(posixpath.abspath(path))
    for tier in TIERS:
        root = getattr(storage, tier)
        if not root or "://" in root:
            continue
        root = _local(root)
        if here == root or here.startswith(root.rstrip("/") + "/"):
            return tier, "/" + here[len(root):].strip("/")
    return None


def reconcile_on_tier(cat: Catalogue, storage: StorageConfig, tier: str, prefix: str = "/",
                      checksum: bool = False) -> list[tuple[Dataset, ReconcileReport]]:
    """Every catalogued dataset at or below `prefix` against its directory on `tier`."""
    root = getattr(storage, tier, "") if tier in TIERS else ""
    if not root:
        raise UsageError(f"--tier {tier!r}: name a configured tier ({', '.join(t for t in TIERS if getattr(storage, t))})")
    prefix = "/" + prefix.strip("/")
    datasets = {d.path: d for d in cat.find_datasets(path_prefix=prefix)}
    if prefix != "/" and not datasets:
        here = cat.dataset_by_path(prefix)
        datasets = {here.path: here} if here else {}
    root = _local(root)
    store, top = resolve(root.rstrip("/") + prefix if prefix != "/" else root)
    _, base = resolve(root)
    found: dict[str, list[DiskEntry]] = {p: [] for p in datasets}
    strays: dict[str, list[DiskEntry]] = {}
    try:
        entries = list(store.walk(top))
    except NotFound:
        entries = []
    for e in entries:
        name = posixpath.basename(e.path)
        if e.is_dir or e.is_link or name.endswith(PART_SUFFIX):
            continue
        rel = "/" + e.path[len(base):].strip("/")
        if rel == "/" + TIER_MARKER:        # the controller's own, not a file of anyone's
            continue
        owner = _owner(rel, datasets)
        url = root.rstrip("/") + rel
        entry_for = lambda inner: DiskEntry(inner, e.size, read_adler32(url) if checksum else None)  # noqa: E731
        if owner is None:
            parent = posixpath.dirname(rel)
            strays.setdefault(parent, []).append(entry_for(name))
        else:
            found[owner].append(entry_for(rel[len(owner) + 1:]))
    reports = [(d, reconcile_tier(found[path], cat.files_of(d.pid), tier)) for path, d in sorted(datasets.items())]
    reports += [(Dataset(beamtime="-", path=parent, pid="(not catalogued)"), ReconcileReport(missing_in_catalogue=es))
                for parent, es in sorted(strays.items())]
    return reports


def _owner(rel: str, datasets: dict[str, Dataset]) -> str | None:
    """The dataset whose directory holds `rel` (the longest dataset path that is a parent)."""
    parts = rel.split("/")
    for n in range(len(parts) - 1, 0, -1):
        candidate = "/".join(parts[:n]) or "/"
        if candidate in datasets:
            return candidate
    return None
