"""Storage backends and the URL -> (backend, path) resolver.

Importing this package imports every backend module, and each registers the URL schemes it serves
(registry.py): local paths and file:// go to POSIX, root://host:port//path to XRootD (one instance,
and one connection pool, per server), http(s):// to the read-only HTTP backend (a data service's
download URLs). A new backend is a module that calls `register` plus one import line below.
"""

from __future__ import annotations

from . import http, posix, xrootd  # noqa: F401  (each registers its URL schemes)
from .base import Capabilities, ReadHandle, Stat, Storage, WriteHandle
from .memory import MemoryStorage
from .posix import PosixStorage
from .registry import register, resolve, scheme_of, schemes


def is_remote(url: str) -> bool:
    return scheme_of(url) not in ("", "file")


__all__ = ["Capabilities", "ReadHandle", "Stat", "Storage", "WriteHandle", "MemoryStorage", "PosixStorage",
           "register", "resolve", "schemes", "is_remote"]
