"""Prometheus collector of the archive service's scrubber."""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily


class ScrubStats:
    """What the scrubber did since the process started; the scrub loop counts, /metrics reads."""

    RESULTS = ("ok", "bad", "missing", "error")

    def __init__(self) -> None:
        import threading

        self._lock = threading.Lock()
        self._bytes: dict[str, int] = {}
        self._files: dict[tuple[str, str], int] = {}
        self._repairs: dict[str, int] = {}

    def count(self, tier: str, result: str) -> None:
        with self._lock:
            self._files[(tier, result)] = self._files.get((tier, result), 0) + 1

    def count_bytes(self, tier: str, nbytes: int) -> None:
        with self._lock:
            self._bytes[tier] = self._bytes.get(tier, 0) + nbytes

    def repaired(self, tier: str) -> None:
        with self._lock:
            self._repairs[tier] = self._repairs.get(tier, 0) + 1

    def snapshot(self) -> dict:
        with self._lock:
            return {"bytes": dict(self._bytes), "files": dict(self._files), "repairs": dict(self._repairs)}


class ScrubCollector:
    """domas_scrub_*: bytes re-read, copies that did not match the catalogue, repairs."""

    def __init__(self, stats: ScrubStats, tiers=("central", "tape")) -> None:
        self._stats, self._tiers = stats, tuple(tiers)

    def collect(self):
        snap = self._stats.snapshot()
        read = CounterMetricFamily("domas_scrub_bytes", "Bytes of stored copies re-read and checked", labels=["tier"])
        bad = CounterMetricFamily("domas_scrub_mismatches", "Copies found missing or not matching the catalogued "
                                  "adler32", labels=["tier"])
        files = CounterMetricFamily("domas_scrub_files", "Copies checked, by result", labels=["tier", "result"])
        repairs = CounterMetricFamily("domas_scrub_repairs", "Bad copies replaced by a verified copy",
                                      labels=["tier"])
        for tier in sorted(set(self._tiers) | set(snap["bytes"])):
            read.add_metric([tier], snap["bytes"].get(tier, 0))
            bad.add_metric([tier], sum(snap["files"].get((tier, r), 0) for r in ("bad", "missing")))
            repairs.add_metric([tier], snap["repairs"].get(tier, 0))
            for result in ScrubStats.RESULTS:
                files.add_metric([tier, result], snap["files"].get((tier, result), 0))
        yield from (read, bad, files, repairs)
