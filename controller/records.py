"""The scheduler's settings and in-memory records: compact, slotted, mutated only by the Scheduler.

Invariants: a QUEUED File holds no chunk state (`prog` is None); chunk state (Progress) exists
only while a file is active or verifying. `Progress.leased` maps a chunk index to its one active
Lease; an Endpoint's `inflight` counts the active leases touching it (once per lease, even when
source and destination are the same endpoint).
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field
from typing import Mapping

from domas.controller import events as ev
from domas.controller.breaker import CircuitBreaker
from domas.controller.endpoints import AimdLimit
from domas.retry import RetryPolicy
from domas.errors import ConfigError

QUEUED, ACTIVE, VERIFYING, DONE, FAILED, CANCELLED = range(6)
TERMINAL = (DONE, FAILED, CANCELLED)
L_ACTIVE, L_EXPIRED, L_CLOSED = range(3)


@dataclass(frozen=True)
class SchedulerConfig:
    lease_seconds: float = 60.0
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(max_attempts=5, base=0.5, cap=60.0))
    verify_retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(max_attempts=3, base=1.0, cap=60.0))
    weights: Mapping[str, float] = field(default_factory=dict)
    chunk_overhead: int = 1 << 20          # bytes a chunk costs in fair share beyond its length
    breaker_threshold: int = 5
    breaker_cooldown: float = 10.0
    limit_initial: int = 16
    limit_min: int = 1
    limit_max: int = 256
    agent_round: int = 64                  # leases per agent per pass when several wait
    recent_reports: int = 1 << 16          # report ids remembered for de-duplication
    max_agent_leases: int = 1024           # leases one agent may hold and ask for at once

    def __post_init__(self) -> None:
        if self.lease_seconds <= 0:
            raise ConfigError(f"lease_seconds must be positive, got {self.lease_seconds}")
        if not 1 <= self.limit_min <= self.limit_initial <= self.limit_max:
            raise ConfigError("endpoint limits need 1 <= limit_min <= limit_initial <= limit_max")
        if self.agent_round < 1 or self.recent_reports < 1 or self.chunk_overhead < 0:
            raise ConfigError("agent_round and recent_reports must be positive, chunk_overhead not negative")


class Endpoint:
    __slots__ = ("name", "limit", "breaker", "inflight")

    def __init__(self, name: str, limit: AimdLimit, breaker: CircuitBreaker) -> None:
        self.name, self.limit, self.breaker = name, limit, breaker
        self.inflight = 0


class Transfer:
    __slots__ = ("spec", "id", "beamline", "priority", "seq", "first_id", "files", "next_file",
                 "opening", "requeue", "listed", "live", "counts", "policy", "part_verify", "src_prefix",
                 "dst_prefix")

    def __init__(self, spec: ev.TransferSpec, seq: int, first_id: int, policy: RetryPolicy) -> None:
        self.spec, self.id, self.seq, self.first_id, self.policy = spec, spec.transfer_id, seq, first_id, policy
        self.beamline, self.priority = spec.beamline, spec.priority
        self.files: list[File] = []
        self.next_file = 0                 # files[next_file:] may still be QUEUED
        self.opening: deque[File] = deque()   # active files with chunks never handed out
        self.requeue: list = []            # heap of (not_before, order, progress, file, index)
        self.listed = False
        self.live = 0                      # files not yet terminal
        self.counts = [0] * 6
        self.part_verify = spec.verify != "none"
        self.src_prefix = self.dst_prefix = ""   # directories every src (dst) of the transfer starts with

    def add_files(self, first_id: int, specs) -> None:
        """Append files (objects with src, dst, size, mtime_ns) numbered from first_id. Paths are kept
        relative to the transfer's common directories, and one string serves both when src and dst
        end alike, as they do for a directory copied into another."""
        self.src_prefix = common_dir([f.src for f in specs])
        self.dst_prefix = common_dir([f.dst for f in specs])
        ns, nd = len(self.src_prefix), len(self.dst_prefix)
        for i, f in enumerate(specs):
            s, d = f.src[ns:], f.dst[nd:]
            self.files.append(File(first_id + i, self, s, s if s == d else d, f.size, f.mtime_ns,
                                   getattr(f, "version", "")))


class File:
    __slots__ = ("id", "t", "src_rel", "dst_rel", "size", "mtime_ns", "version", "state", "prog", "resets")

    def __init__(self, fid: int, t: Transfer, src_rel: str, dst_rel: str, size: int, mtime_ns: int,
                 version: str = "") -> None:
        self.id, self.t, self.src_rel, self.dst_rel, self.size, self.mtime_ns = fid, t, src_rel, dst_rel, size, mtime_ns
        self.version = version
        self.state = QUEUED
        self.prog: Progress | None = None
        self.resets = 0

    @property
    def src(self) -> str:
        return self.t.src_prefix + self.src_rel

    @property
    def dst(self) -> str:
        return self.t.dst_prefix + self.dst_rel


def common_dir(paths: list[str]) -> str:
    """The longest common prefix of the paths that ends with '/' ('' when there is none)."""
    # in slices: one commonprefix (min and max) over 10^6 paths is a single C call holding the GIL
    prefix = os.path.commonprefix([os.path.commonprefix(paths[i:i + 10_000]) for i in range(0, len(paths), 10_000)])
    return prefix[:prefix.rfind("/") + 1]


class Progress:
    __slots__ = ("n", "cursor", "done", "adlers", "ndone", "leased", "fails", "eps", "lease_ids",
                 "verify_tries", "part")

    def __init__(self, n: int, eps: tuple) -> None:
        self.n, self.eps = n, eps
        self.cursor = 0
        self.done = bytearray(n)
        self.adlers = [1] * n
        self.ndone = 0
        self.leased: dict[int, Lease] = {}
        self.fails: dict[int, int] = {}
        self.lease_ids: list[str] = []
        self.verify_tries = 0
        self.part = ""                     # the part file's URL, once a lease needed it


class Lease:
    __slots__ = ("id", "file", "index", "agent", "expires_at", "state")

    def __init__(self, lid: str, f: File, index: int, agent: str, expires_at: float) -> None:
        self.id, self.file, self.index, self.agent, self.expires_at = lid, f, index, agent, expires_at
        self.state = L_ACTIVE


class Agent:
    __slots__ = ("name", "credit", "leases")

    def __init__(self, name: str) -> None:
        self.name, self.credit = name, 0
        self.leases: dict[str, Lease] = {}
