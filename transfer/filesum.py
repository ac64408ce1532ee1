"""Checksums of stored files, read through the Storage interface (the server's where it keeps one)."""

from __future__ import annotations

import threading
import time

from domas.checksum import adler32, format_adler32, format_xxh3
from domas.errors import NotFound, UsageError
from domas.transfer.storage import resolve


def file_checksum(url: str, algo: str) -> str:
    """The checksum of one file: the server's when it has one, otherwise read in large blocks."""
    import xxhash

    store, path = resolve(url)
    st = store.stat_follow(path)
    if st.is_dir:
        raise UsageError(f"{url} is a directory; give files")
    if algo == "adler32":
        server = store.checksum(path, "adler32")
        if server is not None:
            return server
    block = 16 * 1024 * 1024
    value, h = 1, xxhash.xxh3_64()
    with store.open_read(path) as r:
        offset = 0
        while True:
            data = r.pread(offset, block)
            if not data:
                break
            if algo == "adler32":
                value = adler32(data, value)
            else:
                h.update(data)
            offset += len(data)
    return format_adler32(value) if algo == "adler32" else format_xxh3(h.intdigest())


PIECE = 4 * 1024 * 1024


def pace(done: int, elapsed: float, rate: float) -> float:
    """Seconds to wait so that `done` bytes in `elapsed` seconds do not exceed `rate` bytes/s."""
    if rate <= 0:
        return 0.0
    return max(0.0, done / rate - elapsed)


def read_adler32(url: str, rate: float = 0.0, stop: threading.Event | None = None,
                 on_bytes=None) -> str | None:
    """The adler32 of the bytes stored at `url`, read at most at `rate` bytes/s (0: unlimited);
    None if there is no file there. Reads the bytes themselves: a stored checksum would hide rot."""
    store, path = resolve(url)
    try:
        st = store.stat_follow(path)
        reader = store.open_read(path)
    except NotFound:
        return None
    value, done, started = 1, 0, time.monotonic()
    try:
        while done < st.size:
            data = reader.pread(done, min(PIECE, st.size - done))
            if not data:
                break
            value = adler32(data, value)
            done += len(data)
            if on_bytes is not None:
                on_bytes(len(data))
            wait = pace(done, time.monotonic() - started, rate)
            if wait > 0 and (stop.wait(wait) if stop is not None else time.sleep(wait)):
                break
    finally:
        reader.close()
    return format_adler32(value)
