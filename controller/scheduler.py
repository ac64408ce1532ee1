"""The controller's scheduler: transfers -> files -> chunks -> leases, as a pure state machine.

Invariants:
- `on_event(event, now) -> list[Action]` is the only way state changes; it does no I/O and
  reads no clock or global random (jitter comes from the injected `rng`).
- A queued file costs one small slotted object; chunk state exists only while a file is active
  (chunks are derived from size and chunk_size on demand). File ids are contiguous per transfer.
- A chunk is leased to at most one agent at a time while its lease is active; an expired or
  failed lease puts the chunk back (after backoff for failures); every chunk is done at most once.
- A file is done only when every chunk is reported, the adler32 folded from the chunk sums (in
  file order, whichever agents copied them) equals the destination's own adler32 (unless verify
  is "none"), and the shell renamed the part file. The destination's adler32 is the agents' (each
  read its chunk back where it wrote it) or the storage server's; the controller never reads data.
- A report changes state at most once: a repeated report_id, a report for a closed lease or for
  a finished file is a Duplicate; a report that does not match its lease is Rejected.
- A lease is granted only when both endpoints are under their AIMD limit and their breakers allow,
  and neither the source nor the destination lies under a storage root that is down (TiersDown):
  an NFS tier that is not mounted is an empty directory, and nothing may be written into it.
- One destination is written by one file at a time: two unfinished transfers may name the same
  destination (a resubmission after a controller crash, a rewritten source submitted again), and
  both would write the one part file; chunks written after the first file's rename would land in
  a new part file with holes that the second would then verify by its chunk sums and rename over
  the good copy. A file whose destination another started file holds waits, and starts when that
  one ends (it is then copied again in full into a part file of its own).
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import OrderedDict, deque
from typing import Iterable

from domas.controller import events as ev
from domas.controller.breaker import CircuitBreaker
from domas.controller.endpoints import CONGESTION_KINDS, AimdLimit, endpoint_of
from domas.controller.fairshare import FairShare
from domas.controller.records import (ACTIVE, CANCELLED, DONE, FAILED, L_ACTIVE, L_CLOSED, L_EXPIRED, QUEUED,
                                      TERMINAL, VERIFYING, Agent, Endpoint, File, Lease, Progress, SchedulerConfig,
                                      Transfer)
from domas.controller.restore import rebuild
from domas.retry import RetryPolicy
from domas.transfer import filecore
from domas.transfer.plan import chunk_at, chunk_count

_BLOCKED, _EMPTY = object(), object()


class Scheduler:
    """See the module docstring. `epoch` must grow at every restart (the shell stores it)."""

    def __init__(self, config: SchedulerConfig | None = None, rng: random.Random | None = None,
                 epoch: int = 1) -> None:
        self.cfg = config or SchedulerConfig()
        self.rng = rng if rng is not None else random.Random(0)
        self.epoch = epoch
        self.fair = FairShare(self.cfg.weights, self.cfg.chunk_overhead)
        self._transfers: dict[str, Transfer] = {}
        self._ended: dict[str, str] = {}
        self._agents: dict[str, Agent] = {}
        self._endpoints: dict[str, Endpoint] = {}
        self._leases: dict[str, Lease] = {}
        self._expiry: list = []            # heap of (expires_at, lease_id)
        self._verify_due: list = []        # heap of (due, transfer_id, file_id)
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._seq = 0
        self._tseq = 0
        self._order = itertools.count()    # tie-breaker inside heaps
        self._next_file_id = 1
        self._rotation = 0
        self._writing: dict[str, File] = {}          # destination -> the started file that writes it
        self._waiting: dict[str, list[File]] = {}    # destination -> queued files waiting for it
        self._down: tuple[str, ...] = ()             # storage roots down now, each ending in "/"
        self.leases_granted = 0
        self._active = 0                   # leases in state L_ACTIVE
        self.errors: dict[str, int] = {}
        self.counts: dict[tuple[str, str], int] = {}
        self._handlers = {
            ev.TransferSubmitted: self._submitted, ev.AgentRegistered: self._registered,
            ev.AgentHeartbeat: self._heartbeat, ev.LeaseRequested: self._requested,
            ev.ChunkReported: self._reported, ev.AgentLost: self._lost, ev.Tick: self._tick,
            ev.DestinationVerified: self._verified, ev.CancelTransfer: self._cancel,
            ev.TiersDown: self._tiers_down,
        }

    # -- entry point ---------------------------------------------------------------------------

    def on_event(self, event: object, now: float) -> list:
        """Apply one event (a class of domas.controller.events) at time `now`; return the actions.

        After the event, agents with credit get whatever work and endpoint capacity allow
        (GrantLeases), so a report or a Tick may hand out leases too.
        """
        handler = self._handlers.get(type(event))
        if handler is None:
            raise TypeError(f"not a scheduler event: {event!r}")
        out: list = []
        handler(event, now, out)
        if self._agents and not isinstance(event, ev.AgentHeartbeat):
            self._dispatch(now, out)
        return ev.merge_revocations(out)

    # -- submission ----------------------------------------------------------------------------

    def reserve_file_ids(self, n: int) -> int:
        """The first of `n` file ids no other submission will get (for a TransferSubmitted that
        carries `first_file_id`, prepared off the event loop)."""
        first = self._next_file_id
        self._next_file_id = first + n
        return first

    @staticmethod
    def prepare(spec: ev.TransferSpec, files: tuple, first_file_id: int) -> tuple[str, Transfer | None]:
        """Pure, and safe in another thread (touches no scheduler): the per-file checks and the file
        records of a submission, O(files), so that accepting it on the event loop is O(1).
        Returns (why it cannot be queued, None) or ("", the prepared transfer)."""
        reason = ev.files_error(files)
        if reason:
            return reason, None
        t = Transfer(spec, 0, first_file_id, None)
        t.add_files(first_file_id, files)
        return "", t

    def _submitted(self, e: ev.TransferSubmitted, now: float, out: list) -> None:
        spec = e.transfer
        ready = e.prepared if e.prepared is not None and e.first_file_id else None
        reason = ev.submission_error(spec, () if ready else e.files,
                                     spec.transfer_id in self._transfers or spec.transfer_id in self._ended)
        if ready and not reason:
            reason = ready[0]
        if reason:
            out.append(ev.Rejected(reason))
            return
        first = e.first_file_id or self._next_file_id
        t = self._add_transfer(spec, first, ready[1] if ready else None)
        if not ready:
            t.add_files(first, e.files)
        self._next_file_id = max(self._next_file_id, first + len(e.files))
        t.live = len(e.files)
        t.counts[QUEUED] = t.live
        self._count(t.beamline, QUEUED, t.live)
        out.append(ev.TransferAccepted(spec, first, e.files, staged=bool(ready)))
        if t.live:
            self.fair.add(t)
        else:
            self._end_transfer(t, out)

    def _add_transfer(self, spec: ev.TransferSpec, first_id: int, prepared: Transfer | None = None) -> Transfer:
        self._tseq += 1
        policy = self.cfg.retry
        if spec.max_attempts:
            policy = RetryPolicy(spec.max_attempts, policy.base, policy.cap, policy.per_kind)
        if prepared is None:
            t = Transfer(spec, self._tseq, first_id, policy)
        else:
            t, t.seq, t.policy = prepared, self._tseq, policy
        self._transfers[spec.transfer_id] = t
        self.fair.beamline(spec.beamline)
        return t

    # -- agents ----------------------------------------------------------------------------------

    def _registered(self, e: ev.AgentRegistered, now: float, out: list) -> None:
        agent = self._agents.get(e.agent)
        if agent is None:
            self._agents[e.agent] = Agent(e.agent)
        else:
            agent.credit = 0

    def _requested(self, e: ev.LeaseRequested, now: float, out: list) -> None:
        agent = self._agents.get(e.agent)
        if agent is None:
            out.append(ev.Rejected(f"agent {e.agent!r} is not registered; call RegisterAgent first"))
        elif e.n < 0:
            out.append(ev.Rejected(f"lease request for {e.n} chunks; the number must not be negative"))
        else:
            # An agent may hold at most max_agent_leases (held + asked for): no hoarding the queue.
            room = max(0, self.cfg.max_agent_leases - len(agent.leases))
            agent.credit = min(agent.credit + e.n, room)

    def _heartbeat(self, e: ev.AgentHeartbeat, now: float, out: list) -> None:
        agent = self._agents.get(e.agent)
        if agent is None:
            out.append(ev.Rejected(f"agent {e.agent!r} is not registered; call RegisterAgent first"))
            return
        expires = now + self.cfg.lease_seconds
        ids = agent.leases.keys() if e.lease_ids is None else e.lease_ids
        revoked = []
        for lid in ids:
            lease = agent.leases.get(lid)
            if lease is None:
                revoked.append(lid)
            else:
                lease.expires_at = expires
        out.append(ev.LeasesRenewed(e.agent, expires, tuple(revoked)))

    def _lost(self, e: ev.AgentLost, now: float, out: list) -> None:
        agent = self._agents.pop(e.agent, None)
        if agent is None:
            return
        for lease in list(agent.leases.values()):
            self._expire(lease, now, False, out)

    # -- granting --------------------------------------------------------------------------------

    def _dispatch(self, now: float, out: list) -> None:
        waiting = [a for a in self._agents.values() if a.credit > 0]
        if not waiting:
            return
        k = self._rotation % len(waiting)
        waiting = waiting[k:] + waiting[:k]
        self._rotation += 1
        skip: set = set()
        grants: dict[str, list] = {}
        progress = True
        while progress:
            progress = False
            for agent in waiting:
                n = min(agent.credit, self.cfg.agent_round)
                got = grants.setdefault(agent.name, [])
                before = len(got)
                while n > 0 and self._grant_one(agent, now, skip, got):
                    n -= 1
                progress = progress or len(got) > before
                if self.fair.pick(skip) is None:
                    progress = False
                    break
        for name, leases in grants.items():
            if leases:
                out.append(ev.GrantLeases(name, tuple(leases)))

    def _grant_one(self, agent: Agent, now: float, skip: set, got: list) -> bool:
        while True:
            b = self.fair.pick(skip)
            if b is None:
                return False
            taken = self._take_from_beamline(b, now, skip)
            if taken is None:
                skip.add(b)
                continue
            f, index = taken
            chunk = chunk_at(index, f.size, f.t.spec.chunk_size)
            self.fair.charge(b, chunk.length)
            got.append(self._lease(agent, f, chunk, now))
            agent.credit -= 1
            return True

    def _take_from_beamline(self, b, now: float, skip: set):
        queue, i = b.queue, 0
        while i < len(queue):
            t = queue[i]
            got = _BLOCKED if t in skip else self._take_from_transfer(t, now)
            if got is _EMPTY:
                self.fair.remove(t)
            elif got is _BLOCKED:
                skip.add(t)
                i += 1
            else:
                return got
        return None

    def _take_from_transfer(self, t: Transfer, now: float):
        rq = t.requeue
        while rq and rq[0][0] <= now:
            _, _, p, f, index = rq[0]
            if f.prog is not p or p.done[index] or index in p.leased:
                heapq.heappop(rq)
                continue
            if not self._gate(p.eps, now) or self._on_down_tier(f):
                return _BLOCKED
            heapq.heappop(rq)
            return f, index
        while t.opening:
            f = t.opening[0]
            p = f.prog
            while f.state == ACTIVE and p.cursor < p.n and p.done[p.cursor]:
                p.cursor += 1
            if f.state != ACTIVE or p.cursor >= p.n:
                t.opening.popleft()
                continue
            if not self._gate(p.eps, now) or self._on_down_tier(f):
                return _BLOCKED
            p.cursor += 1
            return f, p.cursor - 1
        while t.next_file < len(t.files):
            f = t.files[t.next_file]
            if f.state != QUEUED:
                t.next_file += 1
                continue
            dst = f.dst
            holder = self._writing.get(dst)
            if holder is not None and holder is not f:
                self._waiting.setdefault(dst, []).append(f)      # started by `_hand_over`
                t.next_file += 1
                continue
            eps = self._eps(f)
            if not self._gate(eps, now) or self._on_down_tier(f):
                return _BLOCKED
            t.next_file += 1
            self._start(f, eps, dst)
            return self._take_from_transfer(t, now)
        return _BLOCKED if rq else _EMPTY

    def _eps(self, f: File) -> tuple:
        src, dst = self._endpoint(endpoint_of(f.src)), self._endpoint(endpoint_of(f.dst))
        return (src,) if src is dst else (src, dst)

    def _endpoint(self, name: str) -> Endpoint:
        e = self._endpoints.get(name)
        if e is None:
            cfg = self.cfg
            e = self._endpoints[name] = Endpoint(name, AimdLimit(cfg.limit_initial, cfg.limit_min, cfg.limit_max),
                                                 CircuitBreaker(cfg.breaker_threshold, cfg.breaker_cooldown))
        return e

    def _gate(self, eps: tuple, now: float) -> bool:
        for e in eps:
            if e.inflight >= e.limit.slots or not e.breaker.allow(now):
                return False
        return True

    def _on_down_tier(self, f: File) -> bool:
        return bool(self._down) and (f.dst.startswith(self._down) or f.src.startswith(self._down))

    def _tiers_down(self, e: ev.TiersDown, now: float, out: list) -> None:
        """Hold back every chunk under a root that is down; the leases held there now are revoked
        and their chunks queued again without counting a failure (they run when the root is back)."""
        self._down = tuple(r.rstrip("/") + "/" for r in e.roots)
        if not self._down:
            return
        revoked: dict[str, list[str]] = {}
        for lease in [x for x in self._leases.values() if x.state == L_ACTIVE and self._on_down_tier(x.file)]:
            revoked.setdefault(lease.agent, []).append(lease.id)
            self._expire(lease, now, False, out)
        for agent, ids in revoked.items():
            out.append(ev.RevokeLeases(agent, tuple(ids)))

    def _start(self, f: File, eps: tuple, dst: str = "") -> None:
        f.prog = Progress(chunk_count(f.size, f.t.spec.chunk_size), eps)
        self._set_state(f, ACTIVE)
        f.t.opening.append(f)
        self._writing.setdefault(dst or f.dst, f)

    def _hand_over(self, f: File, out: list, adler32: int | None = None) -> None:
        """`f` ended: the first file still queued for its destination starts (its transfer is put
        back into the fair share), the others keep waiting for that one. A waiting file that asks
        for exactly what `f` has just put there (done with `adler32`: the same source, size, mtime
        and version, verified if it wants verification) is done without a second copy: a
        resubmission after a crash that had accepted the first submission copies nothing twice."""
        dst = f.dst
        if self._writing.get(dst) is not f:
            return
        del self._writing[dst]
        waiting = self._waiting.get(dst)
        while waiting:
            w = waiting.pop(0)
            if w.state != QUEUED:
                continue
            if (adler32 is not None and w.src == f.src and (w.size, w.mtime_ns, w.version) == (f.size, f.mtime_ns, f.version)
                    and (f.t.part_verify or not w.t.part_verify)):
                out.append(ev.FileDone(w.t.id, w.id, dst, w.size, adler32))
                self._terminal(w, DONE, out)
                continue
            self._start(w, self._eps(w))
            self.fair.add(w.t)
            break
        if not waiting:
            self._waiting.pop(dst, None)

    def _lease(self, agent: Agent, f: File, chunk, now: float) -> ev.LeaseInfo:
        self._seq += 1
        lid = f"{self.epoch}-{self._seq}"
        expires = now + self.cfg.lease_seconds
        lease = self._leases[lid] = Lease(lid, f, chunk.index, agent.name, expires)
        p = f.prog
        p.leased[chunk.index] = lease
        p.lease_ids.append(lid)
        agent.leases[lid] = lease
        heapq.heappush(self._expiry, (expires, lid))
        for e in p.eps:
            e.inflight += 1
            e.breaker.on_start(now)
        self.leases_granted += 1
        self._active += 1
        t = f.t
        if not p.part:
            p.part = ev.part_url(f.dst)
        return ev.LeaseInfo(lid, t.id, f.id, chunk.index, chunk.offset, chunk.length, f.src,
                            p.part, f.size, f.mtime_ns, expires, t.spec.verify, f.version)

    def _release(self, lease: Lease, state: int) -> None:
        if lease.state == L_ACTIVE:
            self._active -= 1
        lease.state = state
        p = lease.file.prog
        if p is not None and p.leased.get(lease.index) is lease:
            del p.leased[lease.index]
            for e in p.eps:
                e.inflight -= 1
        agent = self._agents.get(lease.agent)
        if agent is not None:
            agent.leases.pop(lease.id, None)

    # -- reports ---------------------------------------------------------------------------------

    def _reported(self, e: ev.ChunkReported, now: float, out: list) -> None:
        r = e.report
        if r.report_id and r.report_id in self._recent:
            out.append(ev.Duplicate(r.report_id))
            return
        verdict = self._check_report(r)
        if not isinstance(verdict, str) and verdict is not None and verdict[1] is not None \
                and verdict[1].agent != e.agent:
            verdict = f"lease {r.lease_id} belongs to agent {verdict[1].agent!r}, not {e.agent!r}"
        if isinstance(verdict, str):
            out.append(ev.Rejected(verdict, r.report_id))
            return
        if verdict is None:
            out.append(ev.Duplicate(r.report_id))
        else:
            f, lease = verdict
            self._remember(r.report_id)
            if f.prog is None:          # success of a lease from before a restart, file not started
                self._start(f, self._eps(f))
                self.fair.add(f.t)
            if r.ok:
                self._chunk_ok(f, lease, r, now, out)
            else:
                self._chunk_failed(f, lease, r, now, out)

    def _check_report(self, r: ev.ChunkReport):
        """(file, lease-or-None) to apply, None for a duplicate, or the reason to reject."""
        t = self._transfers.get(r.transfer_id)
        if t is None:
            return None if r.transfer_id in self._ended else f"unknown transfer {r.transfer_id!r}"
        i = r.file_id - t.first_id
        if not 0 <= i < len(t.files):
            return f"file {r.file_id} is not part of transfer {r.transfer_id}"
        f = t.files[i]
        if f.state in TERMINAL or f.state == VERIFYING:
            return None
        lease = self._leases.get(r.lease_id)
        if lease is None:
            if not (r.ok and _epoch_of(r.lease_id) < self.epoch):
                return f"unknown lease {r.lease_id!r}"
        elif lease.file is not f or lease.index != r.index:
            return f"lease {r.lease_id} is for file {lease.file.id} chunk {lease.index}, not file {f.id} chunk {r.index}"
        elif lease.state == L_CLOSED or (lease.state == L_EXPIRED and not r.ok):
            return None
        reason = ev.range_error(r, f.size, t.spec.chunk_size)
        if reason:
            return reason
        if r.ok and f.prog is not None and f.prog.done[r.index]:
            return None
        return f, lease

    def _remember(self, report_id: str) -> None:
        if report_id:
            self._recent[report_id] = None
            if len(self._recent) > self.cfg.recent_reports:
                self._recent.popitem(last=False)

    def _chunk_ok(self, f: File, lease: Lease | None, r: ev.ChunkReport, now: float, out: list) -> None:
        p = f.prog
        if lease is not None:
            was_active = lease.state == L_ACTIVE
            self._release(lease, L_CLOSED)
            if was_active:
                for e in p.eps:
                    e.breaker.on_success(now)
                    e.limit.on_success(r.nbytes, r.seconds, now)
        other = p.leased.get(r.index)
        if other is not None:
            self._release(other, L_CLOSED)
            out.append(ev.RevokeLeases(other.agent, (other.id,)))
        p.done[r.index] = 1
        p.adlers[r.index] = r.adler32
        p.ndone += 1
        out.append(ev.ChunkDone(f.t.id, f.id, r.index, r.adler32, r.xxh3, r.length))
        if p.ndone == p.n:
            self._finalize(f, out)

    def _chunk_failed(self, f: File, lease: Lease, r: ev.ChunkReport, now: float, out: list) -> None:
        eps = f.prog.eps
        self._release(lease, L_CLOSED)
        self.errors[r.error_kind] = self.errors.get(r.error_kind, 0) + 1
        blamed = _blamed(eps, r.error_side)
        for e in eps:
            if e in blamed and r.error_kind in CONGESTION_KINDS:
                e.breaker.on_failure(now)
                e.limit.on_error(r.error_kind, now)
            elif e in blamed:
                e.breaker.on_success(now)
            else:
                e.breaker.on_abandon(now)
        if r.error_kind == "source_changed":
            size = f.size if r.observed_size is None else r.observed_size
            mtime = f.mtime_ns if r.observed_mtime_ns is None else r.observed_mtime_ns
            version = f.version if r.observed_version is None else r.observed_version
            self._reset(f, "source_changed", r.error_message, now, out, size, mtime, version)
        else:
            self._retry_chunk(f, r.index, r.error_kind, r.error_message, r.retriable, now, out)

    def _retry_chunk(self, f: File, index: int, kind: str, message: str, retriable: bool, now: float,
                     out: list) -> None:
        p = f.prog
        attempt = p.fails[index] = p.fails.get(index, 0) + 1
        act = filecore.retry_or_fail(f.t.policy, attempt, kind, message, retriable, self.rng, now, what=f"chunk {index}")
        if isinstance(act, filecore.Fail):
            self._fail(f, act.kind, act.message, out)
            return
        heapq.heappush(f.t.requeue, (act.when, next(self._order), p, f, index))
        self.fair.add(f.t)

    def _reset(self, f: File, kind: str, message: str, now: float, out: list, size: int, mtime: int,
               version: str | None = None) -> None:
        """Forget every chunk of the file and copy it again (bounded by the retry policy)."""
        f.resets += 1
        act = filecore.restart_or_fail(f.t.policy, f.resets, kind, message, self.rng)
        if isinstance(act, filecore.Fail):
            self._fail(f, act.kind, act.message, out)
            return
        old = self._drop_progress(f, out, keep=True)
        f.size, f.mtime_ns = size, mtime
        f.version = f.version if version is None else version
        out.append(ev.FileReset(f.t.id, f.id, size, mtime, kind, f.version))
        self._start(f, self._eps(f))
        f.prog.lease_ids = old
        self.fair.add(f.t)

    # -- expiry, finalisation, ending ----------------------------------------------------------------

    def _tick(self, e: ev.Tick, now: float, out: list) -> None:
        heap = self._expiry
        while heap and heap[0][0] <= now:
            _, lid = heapq.heappop(heap)
            lease = self._leases.get(lid)
            if lease is None or lease.state != L_ACTIVE:
                continue
            if lease.expires_at > now:
                heapq.heappush(heap, (lease.expires_at, lid))
                continue
            self._expire(lease, now, True, out)
        if len(heap) > 4 * self._active + 4096:     # drop entries of leases reported long ago
            self._expiry = [(x.expires_at, x.id) for x in self._leases.values() if x.state == L_ACTIVE]
            heapq.heapify(self._expiry)
        due = self._verify_due
        while due and due[0][0] <= now:
            _, tid, fid = heapq.heappop(due)
            t = self._transfers.get(tid)
            f = t.files[fid - t.first_id] if t else None
            if f is not None and f.state == VERIFYING:
                if self._on_down_tier(f):       # checked once its root is back
                    heapq.heappush(due, (now + 1.0, tid, fid))
                    continue
                out.append(self._finalize_action(f))

    def _expire(self, lease: Lease, now: float, counted: bool, out: list) -> None:
        f, index = lease.file, lease.index
        held = f.prog is not None and f.prog.leased.get(index) is lease
        for e in (f.prog.eps if held else ()):
            e.breaker.on_abandon(now)
        self._release(lease, L_EXPIRED)
        if not held or f.state != ACTIVE:
            return
        if counted:
            self.errors["lease_expired"] = self.errors.get("lease_expired", 0) + 1
            self._retry_chunk(f, index, "lease_expired", f"lease {lease.id} expired", True, now, out)
        else:
            heapq.heappush(f.t.requeue, (now, next(self._order), f.prog, f, index))
            self.fair.add(f.t)

    def _finalize(self, f: File, out: list) -> None:
        self._set_state(f, VERIFYING)
        out.append(self._finalize_action(f))

    def _finalize_action(self, f: File) -> ev.FinalizeFile:
        folded = filecore.fold(f.prog.adlers, f.size, f.t.spec.chunk_size)
        return ev.FinalizeFile(f.t.id, f.id, ev.part_url(f.dst), f.dst, f.size, folded, f.t.part_verify,
                               f.mtime_ns, f.src, f.version)

    def _verified(self, e: ev.DestinationVerified, now: float, out: list) -> None:
        t = self._transfers.get(e.transfer_id)
        i = e.file_id - t.first_id if t else -1
        if t is None or not 0 <= i < len(t.files) or t.files[i].state != VERIFYING:
            return
        f = t.files[i]
        expected = self._finalize_action(f).expected_adler32
        if e.error_kind == "source_changed" and e.observed is not None:
            self.errors["source_changed"] = self.errors.get("source_changed", 0) + 1
            self._reset(f, "source_changed", e.error_message, now, out, *e.observed)
        elif e.error_kind and self._on_down_tier(f):   # its root went away under the check: not the
            heapq.heappush(self._verify_due, (now + 1.0, t.id, f.id))     # file's fault, checked once back
        elif e.error_kind:
            self.errors[e.error_kind] = self.errors.get(e.error_kind, 0) + 1
            f.prog.verify_tries += 1
            act = filecore.retry_or_fail(self.cfg.verify_retry, f.prog.verify_tries, e.error_kind, e.error_message,
                                         e.retriable, self.rng, now)
            if isinstance(act, filecore.Fail):
                self._fail(f, act.kind, act.message, out)
            else:
                heapq.heappush(self._verify_due, (act.when, t.id, f.id))
        elif isinstance(act := filecore.verdict(expected, e.adler32, t.part_verify), filecore.Rename):
            out.append(ev.FileDone(t.id, f.id, f.dst, f.size, act.adler32))
            self._terminal(f, DONE, out, act.adler32)
        else:
            self.errors[act.kind] = self.errors.get(act.kind, 0) + 1
            self._reset(f, act.kind, act.reason, now, out, f.size, f.mtime_ns)

    def _fail(self, f: File, kind: str, message: str, out: list) -> None:
        out.append(ev.FileFailed(f.t.id, f.id, ev.part_url(f.dst), kind, message))
        self._terminal(f, FAILED, out)

    def _terminal(self, f: File, state: int, out: list, adler32: int | None = None) -> None:
        if state != DONE and f.prog is not None:
            out.append(ev.PartLeft(ev.part_url(f.dst)))
        self._drop_progress(f, out)
        self._set_state(f, state)
        self._hand_over(f, out, adler32)
        t = f.t
        t.live -= 1
        if t.live == 0:
            self._end_transfer(t, out)

    def _drop_progress(self, f: File, out: list, keep: bool = False) -> list[str]:
        """Revoke the file's active leases and forget its chunks; with `keep`, its leases stay known
        (closed) so late reports about them are duplicates; their ids are returned."""
        p = f.prog
        if p is None:
            return []
        revoked: dict[str, list[str]] = {}
        for lid in p.lease_ids:
            lease = self._leases.get(lid) if keep else self._leases.pop(lid, None)
            if lease is not None and lease.state == L_ACTIVE:
                revoked.setdefault(lease.agent, []).append(lid)
                for e in p.eps:
                    e.breaker.on_abandon(0.0)
                self._release(lease, L_CLOSED)
        for agent, ids in revoked.items():
            out.append(ev.RevokeLeases(agent, tuple(ids)))
        f.prog = None
        return p.lease_ids if keep else []

    def _end_transfer(self, t: Transfer, out: list) -> None:
        c = t.counts
        state = "cancelled" if c[CANCELLED] else "failed" if c[FAILED] else "done"
        out.append(ev.TransferEnded(t.id, state, {ev.STATES[s]: c[s] for s in TERMINAL}))
        self.fair.remove(t)
        del self._transfers[t.id]
        self._ended[t.id] = state
        t.files, t.opening, t.requeue = [], deque(), []   # no File -> Transfer -> File cycle left for the collector

    def _cancel(self, e: ev.CancelTransfer, now: float, out: list) -> None:
        t = self._transfers.get(e.transfer_id)
        if t is None:
            if e.transfer_id not in self._ended:
                out.append(ev.Rejected(f"unknown transfer {e.transfer_id!r}"))
            return
        self.fair.remove(t)
        queued = [f for f in t.files if f.state == QUEUED]
        for f in queued:
            f.state = CANCELLED
        n = len(queued)
        t.counts[QUEUED] -= n
        t.counts[CANCELLED] += n
        self._count(t.beamline, QUEUED, -n)
        self._count(t.beamline, CANCELLED, n)
        t.live -= n
        started = [f for f in t.files if f.state in (ACTIVE, VERIFYING)]
        for f in started:
            self._terminal(f, CANCELLED, out)
        if not started:
            self._end_transfer(t, out)

    # -- bookkeeping -----------------------------------------------------------------------------

    def _set_state(self, f: File, state: int) -> None:
        t = f.t
        t.counts[f.state] -= 1
        t.counts[state] += 1
        self._count(t.beamline, f.state, -1)
        self._count(t.beamline, state, 1)
        f.state = state

    def _count(self, beamline: str, state: int, n: int) -> None:
        key = (beamline, ev.STATES[state])
        self.counts[key] = self.counts.get(key, 0) + n

    def unfinished_view(self) -> list[tuple[str, list]]:
        """What the part-file janitor needs to know which destinations are still being copied, taken
        on the event loop in O(transfers), not O(files): each unfinished transfer's destination
        prefix and its list of files. `unfinished_in` reads it, in a worker thread and only when a
        directory holds a part file old enough to be an orphan."""
        return [(t.dst_prefix, t.files) for t in self._transfers.values()]

    def snapshot(self, now: float) -> dict:
        """Figures for metrics: files per (beamline, state) (terminal states count since start),
        endpoint limits, in-flight chunks and breaker states, leases granted, errors by kind."""
        return {
            "files": {k: v for k, v in self.counts.items() if v},
            "endpoints": {name: {"limit": e.limit.slots, "inflight": e.inflight,
                                 "breaker": e.breaker.state(now).value, "rate": e.limit.rate}
                          for name, e in self._endpoints.items()},
            "leases_granted_total": self.leases_granted,
            "leases_active": self._active,
            "errors_total": dict(self.errors),
            "agents": {a.name: {"credit": a.credit, "leases": len(a.leases)} for a in self._agents.values()},
            "transfers_active": len(self._transfers),
            "beamline_vtime": {b.name: b.vtime for b in self.fair.beamlines.values()},
        }

    # -- restore -------------------------------------------------------------------------------------

    @classmethod
    def restore(cls, transfers: Iterable[ev.TransferSpec], files: Iterable[ev.FileRecord],
                done_chunks: Iterable[ev.ChunkRecord], *, config: SchedulerConfig | None = None,
                rng: random.Random | None = None, epoch: int = 2, next_file_id: int = 1) -> "Scheduler":
        """Rebuild from the shell's records. Leases are not restored: chunks in flight go back to
        the queue, and reports for leases of an earlier epoch are still accepted once.
        Files whose chunks are all done are finalized again at the first Tick. `next_file_id` is one
        above the highest file id ever stored (finished transfers included): new ids start there."""
        s = cls(config, rng, epoch)
        rebuild(s, transfers, files, done_chunks, next_file_id)
        return s


def unfinished_in(view: list[tuple[str, list]], directories: set[str]) -> set[str]:
    """Final names (URLs) directly inside `directories` of the files in `view` (`unfinished_view`)
    not finished yet: the part-file janitor leaves theirs alone. Queued ones too: after a restore (or
    a rebuild after a failed write) a queued file's part file may hold chunks whose reports agents
    are still replaying. Safe in another thread: it only reads, and a file it sees unfinished that
    ends meanwhile is merely kept one sweep longer; transfers accepted after the view write part
    files younger than any orphan. Walks only the transfers whose prefix holds one of `directories`."""
    out: set[str] = set()
    for prefix, files in view:
        if not any((d + "/").startswith(prefix) for d in directories):
            continue
        for f in files:
            if f.state in (QUEUED, ACTIVE, VERIFYING):
                dst = prefix + f.dst_rel
                if dst.rsplit("/", 1)[0] in directories:
                    out.add(dst)
    return out


def _epoch_of(lease_id: str) -> int:
    head, _, _ = lease_id.partition("-")
    return int(head) if head.isdigit() else 1 << 62


def _blamed(eps: tuple, side: str) -> tuple:
    if side == "source" or len(eps) == 1:
        return eps[:1]
    if side == "destination":
        return eps[1:]
    return eps
