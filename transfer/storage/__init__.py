"""Storage backends and the URL -> (backend, path) resolver."""

from __future__ import annotations

import os
import re
import threading

from domas.errors import UsageError

from .base import ReadHandle, Stat, Storage, WriteHandle
from .memory import MemoryStorage
from .posix import PosixStorage

_ROOT_URL = re.compile(r"^(?P<scheme>roots?|xroots?)://(?P<host>[^/]+)/(?P<path>/.*)?$")

_posix = PosixStorage()
_xrootd_cache: dict[str, Storage] = {}
_lock = threading.Lock()


def is_remote(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


def resolve(url: str) -> tuple[Storage, str]:
    """Map a user's location to its backend and the path inside it.

    Local paths (absolute or relative) and file:// URLs go to POSIX; root://host:port//path to
    the XRootD backend (one instance, and one connection pool, per server); http(s):// URLs to the
    read-only HTTP backend (a data service's download URLs).
    """
    if url.startswith("file://"):
        return _posix, url[len("file://"):] or "/"
    m = _ROOT_URL.match(url)
    if m:
        from .xrootd import XRootDStorage

        endpoint = f"{m.group('scheme')}://{m.group('host')}"
        with _lock:
            store = _xrootd_cache.get(endpoint)
            if store is None:
                # Chunks of one file are written through several handles (threads, agents), so
                # every open is shared rather than one-writer-only.
                store = _xrootd_cache[endpoint] = XRootDStorage(endpoint, shared_open=True)
        return store, m.group("path") or "/"
    if url.startswith(("http://", "https://")):
        from .http import resolve_http

        return resolve_http(url)
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", url):
        raise UsageError(f"{url}: unsupported location (use a local path, file:// or root://host:port//path)")
    return _posix, os.path.abspath(url)


__all__ = ["ReadHandle", "Stat", "Storage", "WriteHandle", "MemoryStorage", "PosixStorage", "resolve",
           "is_remote"]
