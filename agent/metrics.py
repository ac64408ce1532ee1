"""Prometheus exposition of an agent's Accounting: a collector that reads it at scrape time.

Names follow Prometheus conventions: base units as suffixes, `_total` on counters, bounded
labels only (never a path, file or transfer id).
"""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from domas.metrics import STORAGE_KINDS

from .accounting import DURATION_BUCKETS, Accounting


class AgentCollector:
    def __init__(self, acct: Accounting, spool_size=lambda: 0, connected=lambda: False) -> None:
        self.acct, self.spool_size, self.connected = acct, spool_size, connected

    def collect(self):
        c = self.acct.counters()
        read, written, verified = c["bytes_read"], c["bytes_written"], c["bytes_verified"]
        ok, failed, inflight, retries = c["chunks_done"], c["chunks_failed"], c["inflight"], c["retries"]
        counts, total, errors = c["duration_counts"], c["duration_sum"], c["errors"]
        b = CounterMetricFamily("domas_agent_bytes", "Bytes moved by this agent", labels=["direction"])
        b.add_metric(["read"], read)
        b.add_metric(["write"], written)
        b.add_metric(["verify"], verified)
        yield b
        c = CounterMetricFamily("domas_agent_chunks", "Chunks finished by this agent, by result", labels=["result"])
        c.add_metric(["ok"], ok)
        c.add_metric(["error"], failed)
        yield c
        e = CounterMetricFamily("domas_agent_errors", "Chunk errors by class", labels=["class"])
        for kind in sorted(set(STORAGE_KINDS) | set(errors)):   # known classes start at 0
            e.add_metric([kind], errors.get(kind, 0))
        yield e
        yield CounterMetricFamily("domas_agent_retries", "Chunk retries", value=retries)
        buckets, cum = [], 0
        for bound, n in zip([*map(str, DURATION_BUCKETS), "+Inf"], counts):
            cum += n
            buckets.append((bound, cum))
        yield HistogramMetricFamily("domas_agent_chunk_duration_seconds", "Time to copy and verify one chunk",
                                    buckets=buckets, sum_value=total)
        yield GaugeMetricFamily("domas_agent_inflight_chunks", "Chunks being copied now", value=inflight)
        yield GaugeMetricFamily("domas_agent_spooled_reports", "Chunk reports waiting for the controller",
                                value=self.spool_size())
        yield GaugeMetricFamily("domas_agent_controller_connected", "1 when the lease stream is up",
                                value=1 if self.connected() else 0)


