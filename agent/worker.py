"""The transfer agent: takes chunk leases from the controller over gRPC, copies, reports.

Invariants:
- Flow control is by credit: the agent asks for `want` more leases only when it has room
  (at start: 2 x streams; then one per finished chunk), so it never holds more than it can start.
- Every result is put in the durable spool before it is sent and removed only when acknowledged;
  on reconnect the spool is replayed (ReportResults) before new leases are taken.
- A chunk is reported done only after its bytes are durable at the destination (and read back
  when verifying on a local disk); the report carries its adler32 and xxh3.
- Losing the controller never stops work already leased; the agent reconnects with backoff.
- Nothing is written under a lease the controller took back or that expired while the controller
  was reachable (a frozen agent, SIGSTOP): checked before the destination is opened and after the
  source is read, the source checked again then (a rewrite during the read is a source_changed).
- The part file is created with the source's mode bits plus the owner's read and write.
- Every lease gets a report: an unexpected exception (not a DomasError) becomes a failed chunk of
  kind "internal" with one sentence, and is logged once with its traceback; it never ends a task
  silently and leaves the lease to expire.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from domas import __version__
from domas.channel import auth_metadata, make_channel, own_sentence
from domas.errors import (ConfigError, DomasError, InternalError, InvalidMessage, LeaseExpired, SourceChanged,
                          Unauthenticated)
from domas.retry import backoff_delay
from domas.transfer import filecore
from domas.transfer.plan import Chunk, check_range
from domas.transfer.storage import resolve
from domas.v1 import domas_pb2 as pb
from domas.v1 import domas_pb2_grpc as pb_grpc

from .accounting import Accounting
from .engine import copy_range, part_mode
from .spool import ReportSpool

log = logging.getLogger("domas.agent")


def run_lease(lease: pb.ChunkLease, acct: Accounting, alive=None) -> pb.ChunkResult:
    """Copy one leased chunk (blocking; runs in a worker thread) and describe the outcome.
    `alive()` says whether the lease still holds; it is asked before the destination is opened
    and again right before the write, so an agent that was frozen past its lease (SIGSTOP, a
    long pause) does not write a part file that is already finished or removed."""
    t0 = time.monotonic()
    res = pb.ChunkResult(report_id=uuid.uuid4().hex, lease_id=lease.lease_id, transfer_id=lease.transfer_id,
                         file_id=lease.file_id, chunk_index=lease.chunk_index, offset=lease.offset,
                         length=lease.length)
    side = pb.ERROR_SIDE_SOURCE
    try:
        check_range(lease.offset, lease.length, lease.file_size)
        src_store, src_path = resolve(lease.src_url)
        st = src_store.stat_follow(src_path)
        _observe(res, st)
        if lease.HasField("source") and not filecore.same_version(
                (lease.source.size, lease.source.mtime_ns, lease.source.version),
                (st.size, res.observed_source.mtime_ns, st.version())):
            raise SourceChanged(f"{lease.src_url} changed since the transfer was planned")
        side = pb.ERROR_SIDE_DESTINATION
        dst_store, dst_path = resolve(lease.dst_url)
        readback = lease.verify != pb.VERIFY_MODE_NONE and dst_store.chunk_readback
        side = pb.ERROR_SIDE_SOURCE
        def check() -> None:
            if alive is not None:
                _still_leased(lease, alive)

        def unchanged_and_leased() -> None:
            """After the read: the source is still the version the bytes came from (a rewrite during
            the read, even one that restores the mtime, is caught), and the lease still holds."""
            now = src_store.stat_follow(src_path)
            if now.identity() != st.identity():
                _observe(res, now)
                raise SourceChanged(f"{lease.src_url} changed while chunk {lease.chunk_index} was read")
            check()

        with src_store.open_read(src_path) as reader:
            side = pb.ERROR_SIDE_DESTINATION
            check()
            with dst_store.open_write(dst_path, mode=part_mode(st)) as writer:
                side = pb.ERROR_SIDE_UNSPECIFIED
                chunk = Chunk(lease.chunk_index, lease.offset, lease.length)
                adler, xxh, _ = copy_range(reader, writer, chunk, readback, lease.src_url, lease.dst_url,
                                           before_write=unchanged_and_leased)
                if not readback:
                    writer.sync()
        res.adler32, res.xxh3, res.bytes = adler, xxh, lease.length
        ok, verified = True, readback
    except Exception as e:        # noqa: BLE001 - every failure is reported, foreign ones as "internal"
        err = e if isinstance(e, DomasError) else internal_error(e, lease)
        res.error_kind, res.error_message, res.retriable = err.kind, str(err), err.retriable
        res.error_side = _side_of(err, lease, side)
        ok, verified = False, False
        acct.add_error(err.kind)
    res.seconds = time.monotonic() - t0
    acct.observe_chunk(res.seconds, lease.length, ok, verified)
    return res


def _observe(res: pb.ChunkResult, st) -> None:
    res.observed_source.size = st.size
    res.observed_source.mtime_ns = st.exact_mtime_ns()
    res.observed_source.version = st.version()


def _still_leased(lease: pb.ChunkLease, alive) -> None:
    if not alive():
        raise LeaseExpired(f"lease {lease.lease_id} ran out before chunk {lease.chunk_index} of "
                           f"{lease.dst_url} was written; it was not written")


def internal_error(exc: BaseException, lease: pb.ChunkLease) -> InternalError:
    """An unexpected exception as one sentence for the report; its traceback goes to the log once."""
    log.error("unexpected %s on lease %s (%s): %s", type(exc).__name__, lease.lease_id, lease.src_url, exc,
              exc_info=exc)
    return InternalError(f"the agent hit an unexpected {type(exc).__name__} while copying this chunk; "
                         "the agent's log has the details")


def failed_result(lease: pb.ChunkLease, err: DomasError) -> pb.ChunkResult:
    """The report of a lease whose work failed before run_lease could describe it."""
    return pb.ChunkResult(report_id=uuid.uuid4().hex, lease_id=lease.lease_id, transfer_id=lease.transfer_id,
                          file_id=lease.file_id, chunk_index=lease.chunk_index, offset=lease.offset,
                          length=lease.length, error_kind=err.kind, error_message=str(err),
                          retriable=err.retriable)


def _side_of(err: DomasError, lease: pb.ChunkLease, guess: int) -> int:
    where = err.path or ""
    if where and where in lease.dst_url:
        return pb.ERROR_SIDE_DESTINATION
    if where and where in lease.src_url:
        return pb.ERROR_SIDE_SOURCE
    return guess


class Agent:
    def __init__(self, *, controller: str, name: str, streams: int, state_dir: Path, token: str = "",
                 tls_ca: str = "", rng: random.Random | None = None) -> None:
        self.controller, self.name, self.streams = controller, name, streams
        self.token, self.tls_ca = token, tls_ca
        self.acct = Accounting()
        self.spool = ReportSpool(Path(state_dir) / f"agent-{name}" / "reports.sqlite")
        self.rng = rng or random.Random()
        self.connected = False
        self.agent_id = ""
        self.held: dict[str, pb.ChunkLease] = {}
        # Is a lease still ours? (see _alive_check)
        self._revoked: set[str] = set()     # leases the controller took back (expired, revoked)
        self._received: dict[str, float] = {}   # lease id -> monotonic time it arrived
        self._offset: float | None = None   # controller clock - our clock, from the last heartbeat
        self._renewed_until = 0.0           # controller clock: expiry the last heartbeat gave...
        self._renewed_ids: set[str] = set()   # ...to these leases
        self._outage_since: float | None = None   # our clock: first failed contact since the last answer
        self.lease_seconds = 60.0
        self._sem = asyncio.Semaphore(streams)
        self._pool = ThreadPoolExecutor(max_workers=streams + 2, thread_name_prefix="domas-agent")
        self._md = auth_metadata(token)
        self._outq: asyncio.Queue = asyncio.Queue()
        self._tasks: set[asyncio.Task] = set()

    async def run(self, stop: asyncio.Event) -> None:
        attempt = 0
        while not stop.is_set():
            channel = make_channel(self.controller, self.tls_ca)
            try:
                stub = pb_grpc.ControllerStub(channel)
                await self._register(stub)
                await self._replay(stub)
                attempt = 0
                await self._session(stub, stop)
            except grpc.aio.AioRpcError as e:
                final = self._refused(e)
                if final is not None:
                    raise final from None
                unreachable = e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
                said = own_sentence(e)              # the controller's refusal (a busy state store) is shown;
                log.warning("controller %s: %s; retrying", self.controller,     # never grpc core's own text
                            said or ("cannot be reached" if unreachable else e.details() or e.code().name))
                self._unreachable()
            finally:
                self.connected = False
                await channel.close()
            attempt = min(attempt + 1, 6)
            await _wait(stop, backoff_delay(attempt, 0.2, 5.0, self.rng))
        self._pool.shutdown(wait=True)

    def _refused(self, e: grpc.aio.AioRpcError) -> DomasError | None:
        """A failure that asking again cannot mend, as the error that ends the agent (None: retried).
        An unreachable or restarting controller is retried; a refused token, a registration the
        controller refuses as invalid (_register), and an address that is no domas controller are final."""
        code, where = e.code(), f"the controller at {self.controller}"
        if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            return Unauthenticated(f"{where} refused this agent's token; set DOMAS_TOKEN to the controller's token")
        if code == grpc.StatusCode.UNIMPLEMENTED:
            return ConfigError(f"agent.controller (or --controller): {self.controller} is not a domas controller's "
                               "gRPC address (it does not offer the agent's calls); give controller.listen's address")
        return None

    async def _register(self, stub) -> None:
        try:
            resp = await stub.RegisterAgent(pb.RegisterAgentRequest(
                name=self.name, hostname=socket.gethostname(), slots=self.streams, version=__version__),
                metadata=self._md, timeout=10)
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.INVALID_ARGUMENT:
                raise
            said = (own_sentence(e) or e.details() or "its registration is not valid").rstrip(".")
            raise InvalidMessage(f"the controller at {self.controller} refused this agent: {said}; "
                                 "asking again cannot help") from None
        self.agent_id = resp.agent_id
        self.heartbeat_seconds = resp.heartbeat_seconds or 5.0
        self.lease_seconds = resp.lease_seconds or 60.0

    async def _replay(self, stub, older_than: float | None = None) -> None:
        """Send spooled reports (from before a crash or an outage), oldest first."""
        while True:
            pending = await self._io(self.spool.pending, 500, older_than)
            if not pending:
                return
            results = [pb.ChunkResult.FromString(payload) for _, payload in pending]
            resp = await stub.ReportResults(pb.ReportResultsRequest(agent_id=self.agent_id, results=results),
                                            metadata=self._md, timeout=30)
            await self._io(self.spool.remove, [a.report_id for a in resp.acks])
            if not resp.acks:
                return

    async def _session(self, stub, stop: asyncio.Event) -> None:
        self._outq = outq = asyncio.Queue()
        call = stub.Leases(self._requests(outq), metadata=self._md)
        self.connected = True
        await outq.put(pb.LeasesRequest(agent_id=self.agent_id,
                                        lease_request=pb.LeaseRequest(want=2 * self.streams)))
        beats = asyncio.create_task(self._heartbeats(stub, stop, call))
        try:
            async for resp in call:
                await self._io(self.spool.remove, [a.report_id for a in resp.acks])
                for lease in resp.batch.leases:
                    self.held[lease.lease_id] = lease
                    self._received[lease.lease_id] = time.monotonic()
                    task = asyncio.create_task(self._work(lease))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                for lease_id in resp.batch.revoked_lease_ids:
                    self.held.pop(lease_id, None)
                    self._revoked.add(lease_id)
                if stop.is_set():
                    break
        except asyncio.CancelledError:
            # The heartbeat task ends the stream (stop asked, or the controller went silent);
            # grpc.aio reports that as a cancellation of the call. Anything else is ours to raise.
            if not call.cancelled():
                raise
        finally:
            beats.cancel()
            call.cancel()

    async def _requests(self, outq: asyncio.Queue):
        while True:
            first = await outq.get()
            want, results = first.lease_request.want, list(first.results)
            while not outq.empty():
                more = outq.get_nowait()
                want += more.lease_request.want
                results.extend(more.results)
            yield pb.LeasesRequest(agent_id=self.agent_id, lease_request=pb.LeaseRequest(want=want),
                                   results=results)

    async def _work(self, lease: pb.ChunkLease) -> None:
        """Copy one lease and queue its report. Every failure is reported (never dropped with the task)."""
        try:
            async with self._sem:
                self.acct.add_inflight(1)
                try:
                    result = await self._io(run_lease, lease, self.acct, self._alive_check(lease))
                finally:
                    self.acct.add_inflight(-1)
        except Exception as e:      # noqa: BLE001 - run_lease reports its own; this is the shell failing
            result = failed_result(lease, internal_error(e, lease))
        try:
            await self._io(self.spool.put, result.report_id, result.SerializeToString())
        except Exception as e:      # noqa: BLE001 - the report still goes out, only unspooled
            log.error("cannot spool the report of lease %s (%s: %s); sending it without a spool copy",
                      lease.lease_id, type(e).__name__, e)
        self.held.pop(lease.lease_id, None)
        self._revoked.discard(lease.lease_id)
        self._received.pop(lease.lease_id, None)
        await self._outq.put(pb.LeasesRequest(agent_id=self.agent_id, lease_request=pb.LeaseRequest(want=1),
                                              results=[result]))

    async def _heartbeats(self, stub, stop: asyncio.Event, call) -> None:
        while not stop.is_set():
            await _wait(stop, self.heartbeat_seconds)
            try:
                listed, sent = set(self.held), time.monotonic()
                resp = await stub.Heartbeat(pb.HeartbeatRequest(agent_id=self.agent_id, lease_ids=list(listed),
                                                                spooled_results=len(self.spool)),
                                            metadata=self._md, timeout=10)
                self._revoked.update(resp.revoked_lease_ids)
                self._revoked.intersection_update(self._received)      # only leases still worked on
                until, rtt = resp.expires_at.ToNanoseconds() / 1e9, time.monotonic() - sent
                if rtt < min(1.0, self.lease_seconds / 4):     # a late answer (a freeze) measures nothing
                    self._offset = until - self.lease_seconds - (time.time() - rtt / 2)
                self._renewed_until, self._renewed_ids = until, listed - set(resp.revoked_lease_ids)
                self._outage_since = None
                # reports that missed their stream (finished while it was down) go by the unary path
                await self._replay(stub, older_than=2 * self.heartbeat_seconds)
            except grpc.aio.AioRpcError as e:
                log.warning("heartbeat failed: %s", e.details() or e.code().name)
                self._unreachable()
                call.cancel()
                return
        call.cancel()

    def _unreachable(self) -> None:
        if self._outage_since is None:
            self._outage_since = time.time()

    def _alive_check(self, lease: pb.ChunkLease):
        """alive() for run_lease. A lease is ours until the controller takes it back or its expiry
        (as granted, or as the last heartbeat renewed it) passes on the controller's clock,
        estimated from the last heartbeat (before the first answer: our clock, and `ttl_seconds`
        from its arrival as well). A lease that waited in a buffer while this process was frozen
        arrives late but expired: its expiry, not its arrival, decides. Exception: while the
        controller is unreachable, and was so before the lease expired, work goes on (nobody can be
        given the chunk meanwhile; a restarted controller accepts the report once)."""
        lid = lease.lease_id
        granted_until = lease.expires_at.ToNanoseconds() / 1e9

        def alive() -> bool:
            if lid in self._revoked:
                return False
            until = max(granted_until, self._renewed_until if lid in self._renewed_ids else 0.0)
            until -= self._offset or 0.0                      # on our clock
            expired = granted_until > 0 and time.time() >= until
            if self._offset is None and lease.ttl_seconds > 0:
                received = self._received.get(lid, time.monotonic())
                expired = expired or time.monotonic() >= received + lease.ttl_seconds
            if not expired:
                return True
            return self._outage_since is not None and self._outage_since < until

        return alive

    async def _io(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except asyncio.TimeoutError:
        pass
