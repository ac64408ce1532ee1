"""One accounting object: bytes, chunks, retries and errors of a run (rclone's fs/accounting).

The progress display, the JSON summary and the Prometheus collector all read it; the copy path
only calls its few `add_*` methods. Updates take a lock: they come from worker threads.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

# Chunk durations reach minutes on a slow WAN link; buckets in seconds.
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


@dataclass
class FileStats:
    """One file of a run: its outcome, sums, bytes and timing, as the summary reports it."""

    source: str
    destination: str
    size: int
    done_bytes: int = 0
    retries: int = 0
    status: str = "queued"           # queued | copying | done | skipped | failed
    adler32: str | None = None
    xxh3: str | None = None
    error: str | None = None
    error_kind: str | None = None
    exit_code: int = 0
    resumed_bytes: int = 0
    started: float | None = None
    finished: float | None = None

    @property
    def seconds(self) -> float:
        if self.started is None:
            return 0.0
        return (self.finished or time.monotonic()) - self.started

    def as_dict(self) -> dict:
        return {"source": self.source, "destination": self.destination, "size": self.size,
                "adler32": self.adler32, "xxh3": self.xxh3, "seconds": round(self.seconds, 6),
                "retries": self.retries, "status": self.status, "resumed_bytes": self.resumed_bytes,
                "error": self.error, "error_kind": self.error_kind}


@dataclass
class Accounting:
    """A run's files and totals, shared by the engine and the progress display."""

    files: list[FileStats] = field(default_factory=list)
    bytes_read: int = 0
    bytes_written: int = 0
    bytes_verified: int = 0
    chunks_done: int = 0
    retries: int = 0
    errors: Counter = field(default_factory=Counter)
    chunks_failed: int = 0
    inflight: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.duration_counts = [0] * (len(DURATION_BUCKETS) + 1)   # last: +Inf
        self.duration_sum = 0.0

    def observe_chunk(self, seconds: float, nbytes: int, ok: bool, verified: bool = False) -> None:
        """One chunk finished (agent side): counts, bytes and its duration."""
        with self._lock:
            if ok:
                self.chunks_done += 1
                self.bytes_read += nbytes
                self.bytes_written += nbytes
                self.bytes_verified += nbytes if verified else 0
            else:
                self.chunks_failed += 1
            self.duration_sum += seconds
            i = next((k for k, b in enumerate(DURATION_BUCKETS) if seconds <= b), len(DURATION_BUCKETS))
            self.duration_counts[i] += 1

    def add_inflight(self, delta: int) -> None:
        with self._lock:
            self.inflight += delta

    def add_file(self, fs: FileStats) -> FileStats:
        with self._lock:
            self.files.append(fs)
        return fs

    def add_chunk(self, fs: FileStats, nbytes: int, verified: bool) -> None:
        with self._lock:
            self.bytes_read += nbytes
            self.bytes_written += nbytes
            self.bytes_verified += nbytes if verified else 0
            self.chunks_done += 1
            fs.done_bytes += nbytes

    def add_resumed(self, fs: FileStats, nbytes: int) -> None:
        """A chunk found already copied by an earlier run."""
        with self._lock:
            fs.done_bytes += nbytes
            fs.resumed_bytes += nbytes

    def restart_file(self, fs: FileStats) -> None:
        with self._lock:
            fs.done_bytes = 0

    def counters(self) -> dict:
        """A consistent snapshot of the counters (what /metrics exposes)."""
        with self._lock:
            return {"bytes_read": self.bytes_read, "bytes_written": self.bytes_written,
                    "bytes_verified": self.bytes_verified, "chunks_done": self.chunks_done,
                    "chunks_failed": self.chunks_failed, "inflight": self.inflight, "retries": self.retries,
                    "duration_counts": list(self.duration_counts), "duration_sum": self.duration_sum,
                    "errors": dict(self.errors)}

    def files_now(self) -> list[FileStats]:
        """A snapshot of the file list, safe to walk while workers add to it."""
        with self._lock:
            return list(self.files)

    def add_retry(self, fs: FileStats, kind: str) -> None:
        with self._lock:
            self.retries += 1
            fs.retries += 1
            self.errors[kind] += 1

    def add_error(self, kind: str) -> None:
        with self._lock:
            self.errors[kind] += 1

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def done_bytes(self) -> int:
        return sum(f.done_bytes for f in self.files)

    @property
    def seconds(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    def summary(self) -> dict:
        by = Counter(f.status for f in self.files)
        secs = self.seconds
        copied = self.bytes_written
        return {"files": [f.as_dict() for f in self.files],
                "totals": {"files": len(self.files), "done": by["done"], "skipped": by["skipped"],
                           "failed": by["failed"], "bytes": self.total_bytes, "bytes_copied": copied,
                           "seconds": round(secs, 6), "bytes_per_second": round(copied / secs) if secs > 0 else 0,
                           "retries": self.retries, "errors": dict(self.errors)}}
