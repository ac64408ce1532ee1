"""Prometheus collector of the controller: reads the scheduler snapshot the tick loop publishes.

Invariants: collect() never touches the scheduler (it runs on the HTTP server's thread); it reads
the last published snapshot, at most one tick old. No label names a file or transfer (a tier
label names a --root by its location: a few, fixed at start).
"""

from __future__ import annotations

from typing import Callable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from domas.controller.events import STATES
from domas.metrics import STORAGE_KINDS

BREAKER_STATES = ("closed", "open", "half_open")
# error classes the scheduler counts besides the agents' storage errors; all start at 0 so that
# rate() has a series before the first error
CONTROLLER_KINDS = ("lease_expired", "checksum_mismatch")


class ControllerCollector:
    def __init__(self, snapshot: Callable[[], dict], extra: tuple = ()) -> None:
        self._snapshot = snapshot
        self._extra = tuple(extra)          # collectors served alongside (the scrubber's, in `domas up`)

    def collect(self):
        snap = self._snapshot() or {}
        files = GaugeMetricFamily("domas_controller_queue_files", "Files known to the scheduler by state "
                                  "(terminal states count since the controller started)", labels=["state", "beamline"])
        counts = snap.get("files", {})
        for beamline in sorted({b for b, _ in counts}):     # every state of a known beamline, 0 included
            for state in STATES:
                files.add_metric([state, beamline], counts.get((beamline, state), 0))
        yield files
        endpoints = snap.get("endpoints", {})
        limit = GaugeMetricFamily("domas_controller_concurrency_limit",
                                  "Chunks an endpoint may carry at once (AIMD)", labels=["endpoint"])
        inflight = GaugeMetricFamily("domas_controller_endpoint_inflight", "Chunks leased on an endpoint now",
                                     labels=["endpoint"])
        breaker = GaugeMetricFamily("domas_controller_endpoint_breaker", "1 for the breaker's current state",
                                    labels=["endpoint", "state"])
        for name, e in sorted(endpoints.items()):
            limit.add_metric([name], e["limit"])
            inflight.add_metric([name], e["inflight"])
            for state in BREAKER_STATES:
                breaker.add_metric([name, state], 1.0 if e["breaker"] == state else 0.0)
        yield from (limit, inflight, breaker)
        yield CounterMetricFamily("domas_controller_leases", "Leases handed out since start",
                                  value=snap.get("leases_granted_total", 0))
        yield GaugeMetricFamily("domas_controller_leases_active", "Leases held by agents now",
                                value=snap.get("leases_active", 0))
        agents = GaugeMetricFamily("domas_controller_agents", "Registered agents: busy (holding leases) or idle",
                                   labels=["state"])
        held = [a.get("leases", 0) for a in snap.get("agents", {}).values()]
        agents.add_metric(["busy"], sum(1 for n in held if n))
        agents.add_metric(["idle"], sum(1 for n in held if not n))
        yield agents
        errors = CounterMetricFamily("domas_controller_errors", "Chunk and verification errors by class",
                                     labels=["class"])
        counted = snap.get("errors_total", {})
        for kind in sorted(set(STORAGE_KINDS) | set(CONTROLLER_KINDS) | set(counted)):
            errors.add_metric([kind], counted.get(kind, 0))
        yield errors
        yield from _tier_families(snap.get("tiers", {}))
        for other in self._extra:
            yield from other.collect()


def _tier_families(tiers: dict) -> list:
    """Per storage tier (controller/tiers.py), once probed: up (1/0), outages and seconds down
    since the controller started, and when it was last probed."""
    up = GaugeMetricFamily("domas_storage_tier_up", "1 when the tier's root answered the last probe as a "
                           "directory, 0 when it is missing, failing or not answering", labels=["tier"])
    outages = CounterMetricFamily("domas_storage_tier_outages", "Times the tier went down (since the controller "
                                  "started)", labels=["tier"])
    down = CounterMetricFamily("domas_storage_tier_down_seconds", "Seconds the tier has been down (since the "
                               "controller started)", labels=["tier"])
    probed = GaugeMetricFamily("domas_storage_tier_last_probe_timestamp_seconds", "When the tier last answered "
                               "a probe or failed it (Unix time)", labels=["tier"])
    for name, t in sorted(tiers.items()):
        if t["up"] is None:
            continue
        up.add_metric([name], 1.0 if t["up"] else 0.0)
        outages.add_metric([name], t["outages"])
        down.add_metric([name], t["down_seconds"])
        probed.add_metric([name], t["last_probe"])
    return [up, outages, down, probed]
