"""The gRPC shell around the scheduler: the Controller service of domas.v1.

Invariants: the scheduler is touched only from the event loop thread, one event at a time, and
every event's Persist actions are committed to the state store before its reply (or ack) leaves.
Grants and revocations go to the agent's open Leases stream; an agent whose stream ends is lost
(its leases go back to the queue). Destination checks and renames run in a thread pool and come
back as DestinationVerified events. Foreign errors become gRPC status codes here and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

import grpc

from domas.checksum import parse_adler32
from domas.controller import convert
from domas.controller import events as ev
from domas.controller.rpc_errors import KIND_KEY
from domas.controller.scheduler import Scheduler, unfinished_in
from domas.controller.state import StateStore
from domas.controller.tiers import MARKER, PROBE_TIMEOUT, TierHealth, probe_root, tier_label
from domas.errors import AlreadyEnded, DomasError, InvalidMessage, NotFound, TransientError, Unsupported
from domas.transfer import filecore, validate
from domas.transfer.expand import expand
from domas.transfer.janitor import SweepSchedule, sweep
from domas.transfer.paths import Confinement, Root, normalise
from domas.transfer.storage import resolve
from domas.transfer.validate import Limits
from domas.v1 import domas_pb2 as pb
from domas.v1 import domas_pb2_grpc as pb_grpc

log = logging.getLogger("domas.controller")


def verify_and_rename(a: ev.FinalizeFile) -> ev.DestinationVerified:
    """Blocking: decide from the agents' chunk sums and rename the part file; never read it.

    Where the destination's chunks were read back by the agents that wrote them (local disks,
    `chunk_readback`), the folded adler32 of their reports is the destination's and only the size
    is checked here. A backend that computes checksums itself (XRootD `query checksum`) is asked
    for the whole file's: the server reads, not the control node. A destination that offers
    neither cannot be verified without reading the bytes here, which the controller never does."""
    try:
        store, part = resolve(a.part_url)
        _, final = resolve(a.final_url)
        found = None
        if _already_renamed(a, store, part, final):
            return ev.DestinationVerified(a.transfer_id, a.file_id, a.expected_adler32 if a.verify else None)
        _cut_to_size(store, part, a.size)
        if a.verify:
            if store.stat_follow(part).size != a.size:
                return ev.DestinationVerified(a.transfer_id, a.file_id, None)
            found = _destination_adler32(a, store, part)
            if isinstance(filecore.verdict(a.expected_adler32, found), filecore.Restart):
                return ev.DestinationVerified(a.transfer_id, a.file_id, found)     # not renamed: copied again
        changed = _source_changed(a, store, part)
        if changed is not None:
            return changed
        if a.mtime_ns:     # before the rename, so a final file always has it: a later submission
            store.set_mtime(part, a.mtime_ns / 1e9, a.mtime_ns)  # sees it up to date, a repeated finalize as ours
        store.rename(part, final)
        store.sync_dir(final.rsplit("/", 1)[0] or "/")
        return ev.DestinationVerified(a.transfer_id, a.file_id, found)
    except DomasError as e:
        return ev.DestinationVerified(a.transfer_id, a.file_id, None, e.kind, str(e), e.retriable)


def _cut_to_size(store, part: str, size: int) -> None:
    """Every chunk of the file's current version is written (a finalize comes after the last one);
    bytes past its end belong to a larger earlier version of the source or to an earlier writer of
    this destination (a failed or cancelled transfer), and are cut off before anything is checked
    or renamed: no check would pass with them, and an unverified rename would keep them."""
    if store.stat_follow(part).size > size:
        with store.open_write(part, create=False) as w:
            w.truncate(size)
            w.sync()


def _destination_adler32(a: ev.FinalizeFile, store, path: str) -> int:
    """The destination's adler32 without opening it: the folded chunk sums where every chunk was
    read back where it was written, else the server's own whole-file checksum."""
    server = None if store.chunk_readback else store.checksum(path, "adler32")
    found = filecore.destination_adler32(a.expected_adler32, store.chunk_readback,
                                         None if server is None else parse_adler32(server))
    if found is None:
        raise Unsupported(f"{store.url(path)} cannot be verified: its server computes no adler32 "
                          "(configure xrootd.chksum adler32) and its chunks are not read back")
    return found


def _source_changed(a: ev.FinalizeFile, store, part: str) -> ev.DestinationVerified | None:
    """Right before the rename, one stat of the source: if it is no longer the version the chunks
    were read from (size, mtime, ctime + inode), the verdict that restarts the file; otherwise the
    final file gets the source's permission bits, never wider (agents create part files with the
    owner's read and write added, which a read-only source does not have)."""
    if not a.src_url:
        return None
    try:
        src_store, src = resolve(a.src_url)
        st = src_store.stat_follow(src)
    except NotFound:
        return None                   # the copy is verified; the source is gone since: keep it as it is
    now = (st.size, st.exact_mtime_ns(), st.version())
    if not filecore.same_version((a.size, a.mtime_ns, a.src_version), now):
        return ev.DestinationVerified(a.transfer_id, a.file_id, None, "source_changed",
                                      f"{a.src_url} changed after its chunks were copied; copying it again",
                                      True, now)
    if st.mode:
        store.set_mode(part, st.mode & 0o777)
    return None


def _already_renamed(a: ev.FinalizeFile, store, part: str, final: str) -> bool:
    """True when an earlier finalize of this file renamed it and the controller died before
    recording that: no part file, and the final one has the size and, when verifying, the mtime
    the finalize set (a backend without read-back: the server's adler32). Nothing is read."""
    try:
        store.stat_follow(part)
        return False
    except NotFound:
        pass
    try:
        st = store.stat_follow(final)
    except NotFound:
        return False
    if st.is_dir or st.size != a.size:
        return False
    if not a.verify:
        return True
    if store.chunk_readback:          # the rename set the source's mtime: another file rarely has it
        return not a.mtime_ns or filecore.same_mtime_ns(st.exact_mtime_ns(), a.mtime_ns)
    return isinstance(filecore.verdict(a.expected_adler32, _destination_adler32(a, store, final)), filecore.Rename)


def _finalize_each(finalize: Callable[[ev.FinalizeFile], ev.DestinationVerified],
                   actions: list[ev.FinalizeFile]) -> list[ev.DestinationVerified]:
    """Blocking: `finalize` each file in turn. One that fails unexpectedly (a bug: `finalize` turns
    every DomasError into a verdict) is logged and gets no verdict, as a failed task of its own did;
    the others in the list still get theirs."""
    verdicts = []
    for a in actions:
        try:
            verdicts.append(finalize(a))
        except Exception:       # noqa: BLE001 - a bug in one file's check must not lose the others'
            log.exception("the destination check of %s failed", a.final_url)
    return verdicts


def _sweep_dirs(dirs: list[str], unfinished: list, now: float, max_age: float) -> None:
    """Blocking: the janitor over each directory (URLs); failures wait for the next sweep. The part
    files of files still unfinished (`unfinished`: Scheduler.unfinished_view) are left alone; which
    those are is worked out here, off the event loop, and only for a directory with an old part file."""
    for d in dirs:
        try:
            store, path = resolve(d)

            def keep(d: str = d) -> set[str]:
                return {resolve(ev.part_url(u))[1] for u in unfinished_in(unfinished, {d})}

            for p in sweep(store, path, now=now, max_age=max_age, keep=keep):
                log.info("removed the orphan part file %r", store.url(p))
        except DomasError as e:
            log.warning("part-file janitor, %r: %s", d, e)


_STORE_FAILED = ("the controller could not record this in its state store (busy or full); nothing was changed, "
                 "try again shortly")


class ControllerService(pb_grpc.ControllerServicer):
    """Every request is checked by `validate` (and every location against `roots`) before it
    reaches the scheduler or the store; a refusal is INVALID_ARGUMENT with one sentence."""

    def __init__(self, scheduler: Scheduler, store: StateStore, *, roots: Sequence[Root], token: str = "",
                 default_chunk_size: int = 8 << 20, clock: Callable[[], float] = time.time,
                 finalize: Callable[[ev.FinalizeFile], ev.DestinationVerified] = verify_and_rename,
                 workers: int = 8, limits: Limits = Limits(), private: Sequence[str] = ()) -> None:
        if not roots:
            raise ValueError("a controller needs at least one storage root")
        self.s, self.store, self.token, self.clock = scheduler, store, token, clock
        self.roots, self.limits, self.private = tuple(roots), limits, tuple(private)   # private: never touched
        self.default_chunk_size = default_chunk_size
        self._finalize_fn = finalize
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="domas-controller")
        self._workers = workers
        self._streams: dict[str, asyncio.Queue] = {}
        self._submitting: dict[str, asyncio.Event] = {}     # request ids being planned now
        self._tasks: set[asyncio.Task] = set()
        self._verdicts: list[ev.DestinationVerified] = []   # finished checks waiting for one commit
        self._stale = False                                  # the scheduler is ahead of the store
        self._stale_since, self._told = 0.0, False           # while stale: since when, and whether it was logged
        markers = store.tier_markers()      # roots are distinct (paths.parse_roots): one marker each
        self._tiers = [TierHealth(tier_label(r), r.location.url, marker=markers.get(r.location.url, ""),
                                  marks=r.key.startswith("storage.")) for r in self.roots]   # see controller/tiers.py
        self._probe_pool = ThreadPoolExecutor(max_workers=min(4, len(self._tiers)), thread_name_prefix="domas-tier-probe")
        self.latest: dict = {}
        self._publish()                                     # for the metrics thread
        lease = scheduler.cfg.lease_seconds                 # orphan part files: see transfer/janitor.py
        self._janitor = SweepSchedule(every=lease, window=10 * lease)
        now = clock()
        for d in store.recent_directories(now - 10 * lease):     # where it was going before a restart
            self._janitor.finalized(d, now)

    # -- the one way into the scheduler ------------------------------------------------------------

    def event(self, event: object) -> list:
        return self.events([event])[0]

    def events(self, events: list) -> list[list]:
        """Apply events in order; their facts are committed in one transaction, then routed.
        When the store cannot commit them (locked by another process, disk full) the scheduler has
        run ahead of the disk: nothing is routed, the caller gets TransientError (UNAVAILABLE,
        retriable), and so does every later call until the store takes a write again; then the
        scheduler is rebuilt from the stored facts once (`_recover`)."""
        if self._stale:
            self._recover()
        now = self.clock()
        results = [self.s.on_event(e, now) for e in events]
        everything = [a for actions in results for a in actions]
        try:
            self.store.apply(everything, now)
        except Exception as e:      # noqa: BLE001 - sqlite3 errors of any kind: memory must follow the disk
            log.warning("the state store did not take a write (%s: %s); refusing requests until it does, then "
                        "rebuilding the scheduler from the stored state (agents reconnect and replay their "
                        "reports)", type(e).__name__, e)
            self._went_stale()
            self._recover()
            raise TransientError(_STORE_FAILED) from None
        self._route(everything, now)
        return results

    def _went_stale(self) -> None:
        """A write failed: the scheduler is ahead of the store until `_recover` succeeds. The lease
        streams end now (UNAVAILABLE), so agents stop working on leases the store never recorded."""
        if not self._stale:
            self._stale, self._told = True, False
            self._stale_since = time.monotonic()
            self.store.next_epoch()          # the rebuilt scheduler's, stored by the write that ends this
            self.end_streams(_STORE_FAILED)

    def _recover(self) -> None:
        """Memory equals disk again: once the store takes a write (the new epoch, tried at each call
        without waiting on a lock: a refusal costs microseconds), a scheduler rebuilt from the
        stored facts (controller/restore.py) with that epoch, so no lease id repeats and reports for
        earlier leases are accepted once. Agents register again and replay their spooled reports, as
        after a restart. Until then every call is refused at once (TransientError): a store locked or
        full for minutes costs no rebuild and no busy-timeout wait per call."""
        try:
            self.store.try_write()
            specs, files, chunks = self.store.load()
            next_file_id = self.store.next_file_id()
            old = self.s
            self.s = Scheduler.restore(specs, files, chunks, config=old.cfg, rng=old.rng,
                                       epoch=self.store.epoch, next_file_id=next_file_id)
            self.s.on_event(self._tiers_down(), self.clock())     # no lease yet: nothing to route
        except Exception as e:      # noqa: BLE001
            t = time.monotonic()
            if not self._told and t - self._stale_since >= 5.0:      # once per outage, not once per try
                self._told = True
                log.warning("the state store still takes no write after %.0f s (%s: %s); refusing requests until "
                            "it does", t - self._stale_since, type(e).__name__, e)
            raise TransientError(_STORE_FAILED) from None
        self._stale = False
        self.end_streams(_STORE_FAILED)
        self._publish()
        log.info("scheduler rebuilt from the state store (epoch %d, %d unfinished transfers)", self.s.epoch,
                 len(specs))

    def _route(self, actions: list, now: float) -> None:
        grants: dict[str, list] = {}
        revokes: dict[str, list] = {}
        finals: list[ev.FinalizeFile] = []
        for a in actions:
            if isinstance(a, ev.GrantLeases):
                grants.setdefault(a.agent, []).append(a)
            elif isinstance(a, ev.RevokeLeases):
                revokes.setdefault(a.agent, []).append(a)
            elif isinstance(a, ev.FinalizeFile):
                finals.append(a)
            elif isinstance(a, ev.PartLeft):        # swept from a lease time on (transfer/janitor.py)
                self._janitor.finalized(a.part_url.rsplit("/", 1)[0], now)
        if finals:          # one pool call per worker, not one task and one thread hop per file
            n = min(len(finals), self._workers)
            for i in range(n):
                self._spawn(self._finalize(finals[i::n]))
        for agent in grants.keys() | revokes.keys():
            queue = self._streams.get(agent)
            if queue is not None:
                batch = convert.batch_to_pb(grants.get(agent, []), revokes.get(agent, []), now)
                queue.put_nowait(pb.LeasesResponse(batch=batch))

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _finalize(self, actions: list[ev.FinalizeFile]) -> None:
        loop = asyncio.get_running_loop()
        verdicts = await loop.run_in_executor(self._pool, _finalize_each, self._finalize_fn, actions)
        now = self.clock()
        for a in actions:
            self._janitor.finalized(a.final_url.rsplit("/", 1)[0], now)
        if not self._verdicts:
            loop.call_soon(self._flush_verdicts)
        self._verdicts.extend(verdicts)

    def _flush_verdicts(self) -> None:
        """Checks that finished in the same loop turn go into the scheduler and the store together."""
        verdicts, self._verdicts = self._verdicts, []
        try:
            self.events(verdicts)
        except TransientError:
            pass            # not stored: the rebuilt scheduler finalizes those files again at its first tick

    async def run_ticks(self, stop: asyncio.Event, every: float = 1.0) -> None:
        while not stop.is_set():
            try:
                self.event(ev.Tick())
            except TransientError:
                pass        # the store failed (logged, scheduler rebuilt); the next tick tries again
            self._probe_tiers()
            self._publish()
            self._sweep_parts()
            try:
                await asyncio.wait_for(stop.wait(), every)
            except asyncio.TimeoutError:
                pass

    def _publish(self) -> None:
        """The figures /metrics serves (read on its own thread): the scheduler's, and each tier's."""
        now = self.clock()
        self.latest = {**self.s.snapshot(now), "tiers": {h.tier: h.figures(now) for h in self._tiers}}

    def _probe_tiers(self) -> None:
        """Each storage root is probed every few seconds, off the loop (controller/tiers.py); a
        change between up and down is logged once."""
        now = self.clock()
        for h in self._tiers:
            if h.check_hung(now):
                log.warning("storage tier %s (%s) is down: %s", h.tier, h.url, h.reason)
                self._held_back()
            if h.due(now):
                h.started(now)
                self._spawn(self._probe(h))

    async def probe_tiers_once(self, timeout: float = PROBE_TIMEOUT) -> None:
        """Every tier probed before the first lease (the server's start): a tier that is not
        mounted gets no lease even from agents that were waiting to reconnect. A probe with no
        answer within `timeout` leaves its tier down."""
        now = self.clock()
        probes = []
        for h in self._tiers:
            if h.due(now):
                h.started(now)
                probes.append(self._spawn(self._probe(h)))
        if probes:
            await asyncio.wait(probes, timeout=timeout)
        now = max(self.clock(), now + timeout)
        for h in self._tiers:
            if h.check_hung(now):
                log.warning("storage tier %s (%s) is down: %s", h.tier, h.url, h.reason)
        self._held_back()

    def _tiers_down(self) -> ev.TiersDown:
        return ev.TiersDown(tuple(h.url for h in self._tiers if h.up is False))

    def _held_back(self) -> None:
        """The scheduler holds back every chunk under a tier that is down (and revokes leases there)."""
        try:
            self.event(self._tiers_down())
        except TransientError:
            pass            # not stored: the rebuild (`_recover`) passes the tiers that are down again

    async def _probe(self, h: TierHealth) -> None:
        ok, why, marker = await asyncio.get_running_loop().run_in_executor(self._probe_pool, probe_root, h.url,
                                                                           h.marker, h.marks)
        now = self.clock()
        if ok and marker and not h.marker:
            try:
                self.store.record_tier_marker(h.url, marker, now)
                h.marker = marker
                log.debug("storage tier %s (%s) carries the marker %s (id %s); from now on it is down whenever "
                         "that file is not there", h.tier, h.url, MARKER, marker)
            except Exception as e:      # noqa: BLE001 - sqlite3 errors of any kind: recorded at a later probe
                log.warning("the marker of storage tier %s could not be recorded (%s: %s); tried again at the "
                            "next probe", h.tier, type(e).__name__, e)
        was_down = h.down_seconds(now) - h.down_closed
        if h.observe(ok, now, why):
            if ok:
                log.warning("storage tier %s (%s) is back after %.0f s down", h.tier, h.url, was_down)
            else:
                log.warning("storage tier %s (%s) is down: %s; nothing is read from or written to it until it "
                            "is back", h.tier, h.url, why)
            self._held_back()

    def _sweep_parts(self) -> None:
        """Directories finalized into lately get their orphan part files removed (a hung agent's
        late chunk, a killed copy): older than the lease time and of no file still in progress."""
        if self._stale:
            return          # the scheduler may hold files as ended that the store keeps unfinished
        now = self.clock()
        due = self._janitor.due(now)
        if due:     # O(transfers) here; the walk over their files, if any, in the pool
            self._pool.submit(_sweep_dirs, due, self.s.unfinished_view(), now, self.s.cfg.lease_seconds)

    def end_streams(self, reason: str = "the controller is stopping; reconnect to it when it is back") -> None:
        """End every open Leases stream with UNAVAILABLE (agents reconnect), so that a stopping
        server has no stream left to cancel: a cancelled stream handler is a grpc traceback."""
        streams, self._streams = self._streams, {}
        for queue in streams.values():
            queue.put_nowait((grpc.StatusCode.UNAVAILABLE, reason))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._probe_pool.shutdown(wait=False, cancel_futures=True)

    async def _auth(self, context) -> None:
        if not self.token:
            return
        md = dict(context.invocation_metadata() or ())
        if md.get("authorization") != f"Bearer {self.token}":
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong token; set DOMAS_TOKEN")

    async def _admit(self, context, check, *args):
        """Authenticate, then run a `validate` check; a refusal ends the call as INVALID_ARGUMENT."""
        await self._auth(context)
        try:
            return check(*args)
        except InvalidMessage as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))

    # -- agents ------------------------------------------------------------------------------------

    async def RegisterAgent(self, request, context):
        await self._admit(context, validate.register, request)
        name = request.name or context.peer()
        self.event(ev.AgentRegistered(name))
        lease = self.s.cfg.lease_seconds
        return pb.RegisterAgentResponse(agent_id=name, lease_seconds=lease, heartbeat_seconds=lease / 4)

    async def Heartbeat(self, request, context):
        await self._admit(context, validate.heartbeat, request)
        for a in self.event(ev.AgentHeartbeat(request.agent_id, tuple(request.lease_ids))):
            if isinstance(a, ev.Rejected):
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, a.reason)
            if isinstance(a, ev.LeasesRenewed):
                return pb.HeartbeatResponse(expires_at=convert.timestamp(a.expires_at),
                                            revoked_lease_ids=list(a.revoked))
        await context.abort(grpc.StatusCode.INTERNAL, "heartbeat produced no answer")

    async def Leases(self, request_iterator, context):
        await self._auth(context)
        queue: asyncio.Queue = asyncio.Queue()
        state = {"agent": ""}
        reader = asyncio.get_running_loop().create_task(self._read_stream(request_iterator, queue, state))
        try:
            while True:
                item = await queue.get()
                if item is None:
                    break
                if isinstance(item, tuple):
                    await context.abort(*item)
                yield item
        finally:
            reader.cancel()
            agent = state["agent"]
            if agent and self._streams.get(agent) is queue:
                del self._streams[agent]
                try:
                    self.event(ev.AgentLost(agent))
                except TransientError:
                    pass    # rebuilt from the store: the agent is forgotten anyway

    async def _read_stream(self, request_iterator, queue: asyncio.Queue, state: dict) -> None:
        try:
            async for msg in request_iterator:
                try:
                    validate.stream_message(msg)
                except InvalidMessage as e:
                    queue.put_nowait((grpc.StatusCode.INVALID_ARGUMENT, str(e)))
                    return
                if not state["agent"]:
                    if msg.agent_id not in self.s.snapshot(self.clock())["agents"]:
                        queue.put_nowait((grpc.StatusCode.FAILED_PRECONDITION,
                                          "register the agent (RegisterAgent) before opening the stream"))
                        return
                    state["agent"] = msg.agent_id
                    self._streams[msg.agent_id] = queue
                acks = self._reports(state["agent"], msg.results, msg.lease_request.want)
                if acks:
                    queue.put_nowait(pb.LeasesResponse(acks=acks))
        except grpc.aio.AioRpcError:
            pass
        except TransientError as e:     # the store failed: the stream ends, the agent reconnects
            queue.put_nowait((grpc.StatusCode.UNAVAILABLE, str(e)))
        finally:
            queue.put_nowait(None)

    def _reports(self, agent: str, results, want: int = 0) -> list[pb.ReportAck]:
        """One event per valid result (then the credit `want`, if any), all committed together before
        any ack is returned; a result that fails validation never reaches the scheduler and is
        acknowledged as rejected."""
        problems = [validate.result_problem(r) for r in results]
        valid = [r for r, p in zip(results, problems) if not p]
        events = [ev.ChunkReported(agent, convert.report_from_pb(r)) for r in valid]
        if want:
            events.append(ev.LeaseRequested(agent, want))
        outcomes = iter(self.events(events) if events else ())
        return [pb.ReportAck(report_id=r.report_id, outcome=pb.REPORT_OUTCOME_REJECTED, message=p) if p
                else convert.ack_from_actions(r.report_id, next(outcomes)) for r, p in zip(results, problems)]

    async def ReportResults(self, request, context):
        await self._admit(context, _report_request, request)
        if request.agent_id not in self.s.snapshot(self.clock())["agents"]:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                "register the agent (RegisterAgent) before reporting results")
        return pb.ReportResultsResponse(acks=self._reports(request.agent_id, request.results))

    # -- clients -----------------------------------------------------------------------------------

    async def SubmitTransfer(self, request, context):
        """A request id already queued answers with its transfer; one still being planned (a client
        that gave up waiting and asked again) is waited for, so it is never planned twice."""
        await self._admit(context, validate.submit, request, self.roots, self.limits)
        rid = request.request_id
        while rid in self._submitting:
            await self._submitting[rid].wait()
        if rid:
            existing = self.store.transfer_by_request(rid)
            if existing:
                t = self.store.transfer(existing)
                return pb.SubmitTransferResponse(transfer_id=existing, files=t["files_total"], bytes=t["bytes_total"])
            self._submitting[rid] = asyncio.Event()
        try:
            with _collector_paused():
                return await self._submit(request, context)
        finally:
            if rid:
                self._submitting.pop(rid).set()

    async def _submit(self, request, context):
        loop = asyncio.get_running_loop()
        try:
            files, skipped = await loop.run_in_executor(self._pool, _plan_files, list(request.sources),
                                                        request.destination, request.options.overwrite,
                                                        self.roots, self.limits.max_files, self.private,
                                                        self._tiers_down().roots)
        except DomasError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        _freeze_when_done(len(files))
        tid = uuid.uuid4().hex[:16]
        spec = convert.options_from_pb(tid, request.beamline, request.priority, request.options,
                                       self.default_chunk_size)
        submitted, nbytes = await self._prepare_submission(spec, files)
        self.store.note_submission(tid, list(request.sources), request.destination, request.request_id,
                                   self.clock(), nbytes)
        try:
            actions = self.event(submitted)
        except TransientError:
            await self._unstage(tid)
            raise
        for a in actions:
            if isinstance(a, ev.Rejected):
                await self._unstage(tid)
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, a.reason)
        n = len(files)
        del submitted, actions
        await loop.run_in_executor(self._pool, _drain, files)    # the scheduler keeps its own records
        return pb.SubmitTransferResponse(transfer_id=tid, files=n, bytes=nbytes, skipped=skipped)

    async def _prepare_submission(self, spec: ev.TransferSpec, files: list) -> tuple[ev.TransferSubmitted, int]:
        """Everything a submission costs per file, off the event loop (a 10^6-file submission must not
        stall other RPCs): the scheduler's file records (`Scheduler.prepare`) and the store's file rows
        (`StateStore.stage_files`, in short transactions) are built in a worker thread; the event that
        accepts them on the loop is O(1). Ids are reserved first; if the scheduler was rebuilt from
        the store meanwhile (a failed write), the reservation is void and the client retries."""
        loop = asyncio.get_running_loop()
        for _ in range(3):
            if self._stale:
                self._recover()
            s = self.s
            first = s.reserve_file_ids(len(files))

            def prepare(first: int = first) -> tuple[ev.TransferSubmitted, int]:
                prepared = Scheduler.prepare(spec, files, first)
                if not prepared[0]:
                    self.store.stage_files(spec.transfer_id, first, files)
                return ev.TransferSubmitted(spec, files, first, prepared), sum(f.size for f in files)

            try:
                submitted, nbytes = await loop.run_in_executor(self._pool, prepare)
            except Exception as e:      # noqa: BLE001 - sqlite3 errors of any kind: nothing was accepted
                log.warning("the state store did not take a submission's files (%s: %s); rebuilding the scheduler "
                            "from the stored state", type(e).__name__, e)
                self._went_stale()          # as after any failed write: memory follows the disk (ids reserved)
                await self._unstage(spec.transfer_id)
                raise TransientError(_STORE_FAILED) from None
            if self.s is s:
                return submitted, nbytes
            await self._unstage(spec.transfer_id)      # rebuilt meanwhile: its ids may be taken, prepare again
        raise TransientError(_STORE_FAILED)

    async def _unstage(self, transfer_id: str) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(self._pool, self.store.unstage, transfer_id)
        except Exception as e:      # noqa: BLE001 - the store's next open removes them
            log.warning("could not remove the staged files of %s (%s: %s)", transfer_id, type(e).__name__, e)

    async def GetStatus(self, request, context):
        size, offset, states = await self._admit(context, validate.get_status, request)
        t = self.store.transfer(request.transfer_id)
        if t is None:
            await _not_found(context, f"no transfer {request.transfer_id!r}")
        resp = pb.GetStatusResponse(transfer=_transfer_pb(t))
        if request.include_files:
            rows = self.store.files(request.transfer_id, states, size + 1, offset)
            resp.files.extend(_file_pb(f) for f in rows[:size])
            if len(rows) > size:
                resp.next_page_token = str(offset + size)
        return resp

    async def ListTransfers(self, request, context):
        size, offset, states = await self._admit(context, validate.list_transfers, request)
        rows = self.store.transfers(request.beamline, states, size + 1, offset)
        return pb.ListTransfersResponse(transfers=[_transfer_pb(t) for t in rows[:size]],
                                        next_page_token=str(offset + size) if len(rows) > size else "")

    async def CancelTransfer(self, request, context):
        await self._admit(context, validate.cancel, request)
        rejected = [a.reason for a in self.event(ev.CancelTransfer(request.transfer_id, request.reason))
                    if isinstance(a, ev.Rejected)]
        t = self.store.transfer(request.transfer_id)
        if t is None:
            await _not_found(context, rejected[0] if rejected else f"no transfer {request.transfer_id!r}")
        if t["state"] in ("done", "failed"):    # a cancel ends a transfer as cancelled: it had ended before
            raise AlreadyEnded(f"transfer {request.transfer_id!r} already finished ({t['state']}); "
                               "there is nothing to cancel")
        return pb.CancelTransferResponse(transfer=_transfer_pb(t))


_FREEZE_AT = 50_000     # files in one submission above which its objects are moved out of the collector's sight
_gc = {"paused": 0, "freeze": False}


@contextlib.contextmanager
def _collector_paused():
    """No cyclic garbage collection while submissions are planned and accepted (event loop thread).

    Planning 10^6 files allocates millions of objects, and each full collection walks every one of
    them (and the scheduler's) in one pass holding the GIL: 0.1-0.2 s per pass at 10^5 files, seconds
    at 10^6, during which no other RPC is answered. Reference counting still frees what is not in a
    cycle. When a large submission has been accepted, what is alive is frozen (`gc.freeze`: the
    collector never walks those objects again), so its files cost no later pass either; the
    scheduler breaks its Transfer <-> File cycle when a transfer ends, so they are still freed."""
    if not _gc["paused"]:
        gc.disable()
    _gc["paused"] += 1
    try:
        yield
    finally:
        _gc["paused"] -= 1
        if not _gc["paused"]:
            if _gc["freeze"]:
                gc.freeze()
                _gc["freeze"] = False
            gc.enable()


def _freeze_when_done(files: int) -> None:
    if files >= _FREEZE_AT:
        _gc["freeze"] = True


async def _not_found(context, message: str) -> None:
    """NOT_FOUND with the kind not_found, so `domas status`/`cancel` exit 3 (NotFound), as documented."""
    err = NotFound(message)
    await context.abort(grpc.StatusCode.NOT_FOUND, str(err), trailing_metadata=((KIND_KEY, err.kind),))


def _report_request(request: pb.ReportResultsRequest) -> None:
    validate.ident(request.agent_id, "agent_id")
    validate.results(request.results)


def _plan_files(sources: list[str], destination: str, overwrite: bool, roots: Sequence[Root],
                max_files: int, private: Sequence[str] = (), down: Sequence[str] = ()) -> tuple[list[ev.FileSpec], int]:
    """Blocking: expand sources as `domas copy` lays them out (at most `max_files` entries), check
    that every source and destination resolves inside a root (symlinks included), create empty
    destination dirs, and leave out files whose destination is up to date unless `overwrite`.
    Nothing inside a `private` directory is read or written, nor anything under a root that is
    `down` (its files are queued and held back until it is back; its empty directories are made by
    no one). Returns (files, skipped). Nothing is created before every check has passed."""
    guard = Confinement(roots, private)
    for i, src in enumerate(sources):
        guard.check_real(normalise(src), f"source {i + 1}")
    guard.check_real(normalise(destination), "destination")
    plan = expand(sources, destination, max_files=max_files)
    if plan.problems and not plan.jobs:
        raise plan.problems[0][1]
    _confine(plan, guard)
    held = tuple(r.rstrip("/") + "/" for r in down)
    for store, path in plan.dirs:
        if not (store.url(path).rstrip("/") + "/").startswith(held or ("\0",)):
            store.makedirs(path)
    jobs = plan.jobs if overwrite else [j for j in plan.jobs if not _up_to_date(j)]
    files = [ev.FileSpec(j.src_url, j.dst_url, j.src_stat.size, j.src_stat.exact_mtime_ns(), j.src_stat.version())
             for j in jobs]
    skipped = len(plan.jobs) - len(jobs)
    _drain(jobs)
    _drain(plan.jobs)
    return files, skipped


def _drain(items: list) -> None:
    """Free a large list in slices (in a worker thread): freeing 10^6 objects at once is one C call
    that holds the GIL, and the event loop answers nothing meanwhile."""
    while items:
        del items[-5_000:]


def _confine(plan, guard: Confinement) -> None:
    """Every planned destination (directory or file) inside a root after realpath, each file once."""
    for store, path in plan.dirs:
        guard.check_real(guard.lexical(store.url(path), "destination directory"), "destination directory")
    seen: set[str] = set()
    for job in plan.jobs:
        dst = guard.lexical(job.dst_url, "destination")
        guard.check_real(dst, "destination")
        if dst.url in seen:
            raise InvalidMessage(f"two sources would be copied to the same destination {dst.url!r}; "
                                 "give each destination file one source")
        seen.add(dst.url)


def _up_to_date(job) -> bool:
    """Same rule as `domas copy`: same size, and the same mtime (local) or a newer one (remote)."""
    try:
        dst = job.dst_store.stat_follow(job.dst_path)
    except DomasError:
        return False
    return filecore.up_to_date(job.src_stat.size, job.src_stat.mtime, dst.size, dst.mtime,
                               local=job.dst_store.scheme == "file", dst_is_dir=dst.is_dir)


def _transfer_pb(t: dict) -> pb.TransferStatus:
    msg = pb.TransferStatus(
        transfer_id=t["id"], beamline=t["beamline"], priority=t["priority"],
        state=convert.transfer_state_to_pb(t["state"]), sources=t["sources"], destination=t["destination"],
        files_total=t["files_total"], files_done=t["files_done"], files_failed=t["files_failed"],
        bytes_total=t["bytes_total"], bytes_done=t["bytes_done"], submitted_at=convert.timestamp(t["submitted_at"]),
        errors=[pb.ErrorCount(kind=k, count=n) for k, n in sorted(t["errors"].items())],
        options=pb.TransferOptions(chunk_size=t["chunk_size"], verify=convert.verify_to_pb(t["verify"]),
                                   max_attempts=t["max_attempts"]))
    if t["finished_at"] is not None:
        msg.finished_at.CopyFrom(convert.timestamp(t["finished_at"]))
    return msg


def _file_pb(f: dict) -> pb.FileStatus:
    return pb.FileStatus(file_id=f["id"], src_url=f["src"], dst_url=f["dst"], size=f["size"],
                         state=convert.file_state_to_pb(f["state"]), bytes_done=f["bytes_done"],
                         adler32=f["adler32"], error_kind=f["error_kind"], error_message=f["error_message"])
