"""Catalogue: one interface, an embedded SQLite backend and a MongoDB backend.

`open_catalogue(cfg.catalogue, cfg.state_path())` picks the backend from the URL:
"" -> SQLite file under the state directory, "sqlite:///path" -> that SQLite file,
"mongodb://..." or "mongodb+srv://..." -> MongoDB. With `spool=True` the MongoDB catalogue is
wrapped in a SpooledCatalogue so writes survive while it is unreachable.
"""

from __future__ import annotations

from pathlib import Path

from domas.config import CatalogueConfig
from domas.errors import ConfigError

from .base import (DATASET_STATES, DATA_TYPES, REPLICA_STATES, Beamtime, Catalogue, Dataset, FileRecord, Proposal,
                   Replica, ReplicaUpdate)
from .pid import dataset_pid
from .reconcile import DiskEntry, ReconcileReport, reconcile
from .spool import SpooledCatalogue

DEFAULT_FILE = "catalogue.sqlite"

__all__ = ["Beamtime", "Catalogue", "DATA_TYPES", "DATASET_STATES", "Dataset", "DiskEntry", "FileRecord",
           "Proposal", "REPLICA_STATES", "ReconcileReport", "Replica", "ReplicaUpdate", "SpooledCatalogue", "dataset_pid",
           "open_catalogue", "reconcile"]


def open_catalogue(cfg: CatalogueConfig, state_dir: str | Path, *, spool: bool = False,
                   timeout: float = 2.0) -> Catalogue:
    """The catalogue the configuration names (see the module docstring)."""
    url = cfg.url.strip()
    if url == "" or url.startswith("sqlite://"):
        from .sqlite import SQLiteCatalogue

        path = url[len("sqlite://"):] if url else str(Path(state_dir) / DEFAULT_FILE)
        if not path:
            raise ConfigError("catalogue.url: sqlite:// needs a path, e.g. sqlite:///var/lib/domas/catalogue.sqlite")
        return SQLiteCatalogue(Path(path).expanduser(), cfg.pid_prefix)
    if url.startswith(("mongodb://", "mongodb+srv://")):
        from .mongo import MongoCatalogue

        inner = MongoCatalogue(url, cfg.pid_prefix, timeout=timeout)
        return SpooledCatalogue(inner, Path(state_dir) / "spool") if spool else inner
    raise ConfigError(f"catalogue.url: {cfg.url!r} is not supported; use sqlite:///path, mongodb://host:port/db "
                      "or leave it empty for the embedded catalogue")
