"""Storage backends and the URL -> (backend, path) resolver.

Every backend module registers the URL schemes it serves when it is imported (registry.py): local
paths and file:// go to POSIX (imported here), root://host:port//path to XRootD (one instance, and
one connection pool, per server), http(s):// to the read-only HTTP backend (a data service's
download URLs); those two are imported on their first URL, so that a local copy loads neither
httpx nor the XRootD client. A new backend is a module that calls `register` plus one `provide` line.
"""

from __future__ import annotations

from . import posix  # noqa: F401  (registers file:// and local paths)
from .base import Capabilities, ReadHandle, Stat, Storage, WriteHandle
from .posix import PosixStorage
from .registry import provide, register, resolve, scheme_of, schemes

provide(f"{__name__}.xrootd", "root", "roots", "xroot", "xroots")
provide(f"{__name__}.http", "http", "https")


def __getattr__(name: str):
    """MemoryStorage (tests, the contract suite) is imported on first use, not by every command."""
    if name == "MemoryStorage":
        from .memory import MemoryStorage

        return MemoryStorage
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def is_remote(url: str) -> bool:
    return scheme_of(url) not in ("", "file")


__all__ = ["Capabilities", "ReadHandle", "Stat", "Storage", "WriteHandle", "MemoryStorage", "PosixStorage",
           "provide", "register", "resolve", "schemes", "is_remote"]
