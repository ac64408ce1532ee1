"""The archiver: discovery + catalogue + data policy, driving copies through the controller.

A thin shell around the pure cores (discovery.StabilityTracker, lifecycle.decide). Each pass:
1. scans the beamline tree, catalogues files that settled (beamtime, dataset with a PID, file);
2. asks the policy what is due for catalogued files and submits copies to the controller over
   gRPC (one transfer per file copy, with a deterministic request id, so a restart never copies
   or records a file twice), and follows them until done;
3. records each verified replica with the adler32 the transfer folded from its chunk sums (the
   first copy sets the file's checksum; later copies must match it), then expires earlier copies
   only when lifecycle.may_delete holds on a fresh read of the catalogue.

A file's content is its (size, mtime) version: every replica records the version it was copied
from. A copy that finishes after the file was rewritten is recorded "stale", never "verified", and
a replica of another version never protects the current one (view() shows it as failed, so the
current content is copied again). Right before a copy is deleted, the copy is checked to still be
the catalogued version and the downstream copy that protects it is read back and must match the
catalogued adler32 (else it is marked "bad" and nothing is deleted). A scrubber (scrub.py) re-reads
central and tape copies on a schedule. Names are logged with repr() quoting: one line per event,
whatever characters a file name holds.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import posixpath
import shutil
import time
from dataclasses import dataclass, replace

import grpc

from domas.catalogue import Beamtime, Catalogue, Dataset, FileRecord, Replica, SpooledCatalogue
from domas.catalogue.base import ReplicaUpdate, content_version, holds_current
from domas.channel import make_channel
from domas.config import Config
from domas.errors import CatalogueUnavailable, DomasError, InvalidMessage, NotFound, UnsafePath
from domas.transfer import validate
from domas.transfer.filesum import read_adler32
from domas.transfer.parts import part_path
from domas.transfer.storage import resolve
from domas.v1 import domas_pb2 as pb
from domas.v1 import domas_pb2_grpc as pb_grpc

from .discovery import Location, StabilityTracker, parse_location, scan_tree
from .lifecycle import TIERS, FileView, ReplicaState, Retention, decide, may_delete
from .scrub import Scrubber, tier_marked, verdict
from .scrub import period as scrub_period
from .sources import from_config as sources_from_config, running, wait_for_news
from .sources.record import apply_annotations, with_writer_checksums

log = logging.getLogger("domas.archiver")

_DATA_TYPE = {"raw": "raw", "processed": "processed"}
_TERMINAL = {pb.TRANSFER_STATE_DONE, pb.TRANSFER_STATE_FAILED, pb.TRANSFER_STATE_CANCELLED}


BATCH = 1000          # files per submitted transfer
NO_ROOM_FIRST, NO_ROOM_MAX = 30.0, 3600.0   # seconds a file too big for a tier's free space waits, doubling


@dataclass(frozen=True)
class CopyRequest:
    dataset: str
    path: str
    src_tier: str
    dst_tier: str
    f: FileRecord
    dataset_path: str
    discovered_at: float


@dataclass
class Pending:
    """A copy submitted to the controller and not finished yet, with what recording it needs
    (so a finished copy can be recorded while the catalogue is unreachable: the spool takes it)."""

    transfer_id: str
    dataset: str
    path: str
    tier: str
    src_url: str
    dst_url: str
    size: int
    mtime: float
    expected_adler32: str = ""       # the catalogued checksum the copy must match ("" = first copy)
    discovered_at: float = 0.0
    repair: bool = False             # it replaces a copy found bad

    @property
    def version(self) -> str:
        return content_version(self.size, self.mtime)


def _retry_mark(f: FileRecord, tier: str) -> str:
    """What makes a copy replacing a failed, stale or bad replica a new request: the controller
    answers a known request id with the transfer it already ran (restarts stay idempotent)."""
    r = f.replicas.get(tier)
    return f":{r.state}@{r.verified_at}" if r is not None and r.state in ("failed", "stale", "bad") else ""


def tier_url(root: str, dataset_path: str, relpath: str) -> str:
    """Where a file of a dataset lives on a tier: the tier root + the dataset path + the file path.
    A catalogue path that would leave the tier root (an absolute file path, '..', NUL) is UnsafePath."""
    if relpath.startswith("/") or any("\0" in p or ".." in p.split("/") for p in (dataset_path, relpath)):
        raise UnsafePath(f"{relpath!r} of dataset {dataset_path!r} would leave the storage tier; not touched")
    dataset_path = dataset_path.strip("/")
    if "://" in root:
        return f"{root.rstrip('/')}/{dataset_path}/{relpath}"
    return posixpath.join(root.rstrip("/") or "/", dataset_path, relpath)


class Archiver:
    def __init__(self, cfg: Config, catalogue: Catalogue, controller: str, *, token: str = "",
                 clock=time.time, scrub_stats=None, tls_ca: str = "") -> None:
        self.cfg, self.cat, self.controller = cfg, catalogue, controller
        self.tls_ca = tls_ca              # the controller's CA: TLS when set (as the agents use it)
        self.roots = {"beamline": cfg.storage.beamline, "central": cfg.storage.central, "tape": cfg.storage.tape}
        self.retention = Retention(cfg.policy.beamline_retention, cfg.policy.central_retention,
                                   retry_failed_after=max(5.0, min(300.0, cfg.policy.stability_seconds * 4)))
        self.tracker = StabilityTracker(cfg.policy.stability_seconds)
        self.sources = sources_from_config(cfg)     # the tree scan and bus consumers, as configured
        self.clock = clock
        self.pending: dict[tuple[str, str, str], Pending] = {}
        self.finished: list[tuple[Pending, str]] = []      # done copies not yet recorded
        self.transfers: dict[str, list[tuple[str, str, str]]] = {}   # transfer id -> pending keys
        self.datasets: dict[str, Dataset] = {}
        self.read_only_done: set[tuple[str, str]] = set()
        # the beamline copy's ctime when its content was last known to be the catalogued one: a
        # rewrite that puts the old mtime back still moves the ctime (our own chmod is noted here)
        self.beamline_ctime: dict[tuple[str, str], float] = {}
        self.problems_seen: set[str] = set()
        # (dataset, path, tier) -> (when to try again, the wait that gave it): a file that did not fit
        # in the tier's free space waits, doubling, while the other files go on
        self.no_room: dict[tuple[str, str, str], tuple[float, float]] = {}
        self._md = (("authorization", f"Bearer {token}"),) if token else ()
        self._next_expiry_scan = 0.0
        self.scrub_stats = scrub_stats
        self.scrubber = Scrubber(catalogue, self.replica_url, interval=cfg.policy.scrub_interval,
                                 rate=cfg.policy.scrub_rate, stats=scrub_stats, clock=clock,
                                 present=lambda tier: bool(self.roots.get(tier)) and tier_marked(self.roots[tier]))

    # -- the loop ------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event, interval: float = 1.0) -> None:
        scrub = asyncio.create_task(self.scrub_loop(stop, interval))
        try:
            await self._run(stop, interval)
        finally:
            self.scrubber.stop.set()
            await asyncio.gather(scrub, return_exceptions=True)

    async def scrub_loop(self, stop: asyncio.Event, interval: float) -> None:
        """Re-read stored copies (in a worker thread, beside the archiving passes)."""
        interval = scrub_period(self.cfg.policy.scrub_interval, interval)
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.scrubber.run_once)
            except DomasError as e:
                log.warning("scrub: %s", e)
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
            except asyncio.TimeoutError:
                pass

    def replica_url(self, tier: str, dataset: str, path: str) -> str | None:
        ds = self._dataset(dataset)
        try:
            return tier_url(self.roots[tier], ds.path, path) if ds is not None and self.roots.get(tier) else None
        except UnsafePath as e:
            log.warning("%s", e)
            return None

    async def _run(self, stop: asyncio.Event, interval: float) -> None:
        async with make_channel(self.controller, self.tls_ca) as channel, running(self.sources):
            self.stub = pb_grpc.ControllerStub(channel)
            while not stop.is_set():
                try:
                    await self.run_pass()
                except grpc.aio.AioRpcError as e:
                    log.warning("controller %s: %s", self.controller, e.details() or e.code().name)
                except DomasError as e:
                    log.warning("archiver: %s", e)
                except Exception as e:      # a bug must not end archiving in silence: said once, next pass
                    if (seen := f"{type(e).__name__}: {e}") not in self.problems_seen:
                        self.problems_seen.add(seen)
                        log.error("archiver: unexpected %s in a pass; the next pass tries again",
                                  type(e).__name__, exc_info=e)
                await wait_for_news(stop, self.sources, interval)

    async def run_pass(self) -> None:
        if isinstance(self.cat, SpooledCatalogue) and self.cat.pending():
            await asyncio.to_thread(self.cat.replay)      # writes kept while the catalogue was down
        await self.submit_copies(await asyncio.to_thread(self.discover))
        await self.follow_transfers()
        await asyncio.to_thread(self.record_finished)
        actions = await asyncio.to_thread(self.due_actions)
        await self.submit_copies(await asyncio.to_thread(self.copy_requests, actions))
        for action in actions:
            await self.perform(action)

    # -- 1. discovery --------------------------------------------------------------------------
    def discover(self) -> list[CopyRequest]:
        """Catalogue files that settled; returns their first copies (to central) to submit.

        New files go to central straight away, without asking the catalogue, so transfers go on
        while it is unreachable (its writes wait in the spool). The files and dataset metadata come
        from the sources (sources/: tree scan, bus consumers); each source's batch is acknowledged
        only once it is committed to the catalogue."""
        now, settled, writer_sums = self.clock(), {}, {}
        batches = [(source, source.poll(now)) for source in self.sources]
        for _, batch in batches:
            for found in batch.found:
                try:
                    loc = parse_location(found.relpath)
                except DomasError as e:
                    log.warning("%s", e)
                    continue
                if loc is not None and loc.area in self.cfg.policy.archive_dirs:
                    settled[found.relpath] = (loc, found.size, found.mtime)
                    if found.adler32:
                        writer_sums[(loc.dataset_path, loc.relpath)] = found.adler32
        self.datasets.update(apply_annotations(self.cat, [a for _, b in batches for a in b.annotations]))
        copies = with_writer_checksums(self.cat, self.catalogue_files(list(settled.values()), now), writer_sums)
        for source, batch in batches:
            source.committed(batch)
        return copies

    def dataset_for(self, loc: Location) -> Dataset:
        path = "/" + loc.dataset_path
        ds = self.datasets.get(path)
        if ds is None:
            ds = self._stored(lambda: self.cat.dataset_by_path(path))    # keep its metadata and state
        if ds is None:
            if self._stored(lambda: self.cat.get_beamtime(loc.beamtime)) is None:
                self.cat.upsert_beamtime(Beamtime(id=loc.beamtime, beamline=loc.beamline))
            ds = self.cat.upsert_dataset(Dataset(beamtime=loc.beamtime, path=path,
                                                 data_type=_DATA_TYPE.get(loc.area, "raw")))
        self.datasets[path] = ds
        return ds

    @staticmethod
    def _stored(read):
        """A catalogue read, or None while the catalogue is unreachable (the upserts then spool)."""
        try:
            return read()
        except CatalogueUnavailable:
            return None

    def catalogue_files(self, settled: list[tuple[Location, int, float]], now: float) -> list[CopyRequest]:
        """Record settled files in one batch; returns the first copies (to central) they need."""
        records, copies = [], []
        for loc, size, mtime in settled:
            ds = self.dataset_for(loc)
            try:
                old = self.cat.get_file(ds.pid, loc.relpath)
            except CatalogueUnavailable:
                old = None                  # cannot tell: the upsert is idempotent anyway
            if old is not None and (old.size, old.mtime) == (size, mtime):
                continue                    # already catalogued as it is (e.g. after a restart)
            if old is not None:
                log.warning("%r changed after it was catalogued (size %d -> %d, mtime %.6f -> %.6f): the new "
                            "content is archived; copies of the old one no longer count", loc.relpath, old.size,
                            size, old.mtime, mtime)
                self.read_only_done.discard((ds.pid, loc.relpath))
            url = tier_url(self.roots["beamline"], loc.dataset_path, loc.relpath)
            self._note_ctime((ds.pid, loc.relpath), url, size, mtime)
            rec = FileRecord(dataset=ds.pid, path=loc.relpath, size=size, mtime=mtime,
                             replicas={"beamline": Replica("pending", url, now, content_version(size, mtime))})
            records.append(rec)
            copies.append(CopyRequest(ds.pid, loc.relpath, "beamline", "central", rec, ds.path, now))
        if records:
            self.cat.upsert_files(records)
            log.info("catalogued %d file(s)%s", len(records),
                     f": {copies[0].dataset_path + '/' + records[0].path!r}" if len(records) == 1 else "")
        for loc, _, _ in settled:
            self._extract_metadata(self.dataset_for(loc), loc)
        return copies

    def _extract_metadata(self, ds: Dataset, loc: Location) -> None:
        """A dataset's scientific metadata comes from its first NeXus/HDF5 file (its summary has a
        "format"). It fills only empty keys: metadata that came first (Bluesky documents, an
        operator) stays as it is, and the file's fields are added beside it."""
        from domas.catalogue.metadata import dataset_metadata, is_hdf5_name
        from domas.archive.sources.base import fill_empty

        if "format" in ds.metadata or not is_hdf5_name(loc.relpath) or "://" in self.roots["beamline"]:
            return
        meta = dataset_metadata(posixpath.join(self.roots["beamline"], loc.dataset_path), [loc.relpath])
        if meta:
            self.datasets[ds.path] = self.cat.upsert_dataset(replace(ds, metadata=fill_empty(ds.metadata, meta)))

    # -- 2. policy -----------------------------------------------------------------------------
    def due_actions(self) -> list:
        now = self.clock()
        actions, seen = [], set()
        candidates = [self.cat.files_lacking_replica(tier, "verified", limit=5000) for tier in ("central", "tape")]
        if now >= self._next_expiry_scan:
            # Retentions are days: looking for expired copies once per rescan period is enough.
            self._next_expiry_scan = now + self.cfg.policy.rescan_seconds
            candidates += [self.cat.files_by_replica_state(tier, "verified", limit=50000)
                           for tier in ("beamline", "central")]
        for batch in candidates:
            for f in batch:
                if (f.dataset, f.path) not in seen:
                    seen.add((f.dataset, f.path))
                    actions += decide(self.view(f), self.retention, now)
        return actions

    def view(self, f: FileRecord) -> FileView:
        """The policy's view of a catalogue record. A replica marked "copying" that this process
        does not follow (it restarted) counts as failed long ago, so the copy is submitted again;
        the controller recognises the request id and never copies it twice."""
        reps = {}
        for tier, r in f.replicas.items():
            state = {"pending": "verified" if tier == "beamline" else "copying", "stale": "failed"}.get(r.state, r.state)
            since = r.verified_at or 0.0
            if (state == "copying" and (f.dataset, f.path, tier) not in self.pending) or r.state == "stale":
                state, since = "failed", 0.0      # a stale copy is no failure: the current content is copied now
            if state in ("verified", "copying", "bad") and not holds_current(f, r):
                state, since = "failed", 0.0      # a copy of another content: the current one needs a copy
            reps[tier] = ReplicaState(state, since)
        discovered = f.replicas["beamline"].verified_at if "beamline" in f.replicas else 0.0
        area = f.dataset and self._area_of(f)
        return FileView((f.dataset, f.path), area, discovered or 0.0, reps,
                        read_only=((f.dataset, f.path) in self.read_only_done))

    def _area_of(self, f: FileRecord) -> str:
        ds = self._dataset(f.dataset)
        return ds.path.rsplit("/", 1)[-1] if ds else ""

    def _dataset(self, pid: str) -> Dataset | None:
        for ds in self.datasets.values():
            if ds.pid == pid:
                return ds
        ds = self.cat.get_dataset(pid)
        if ds is not None:
            self.datasets[ds.path] = ds
        return ds

    async def perform(self, action) -> None:
        dataset, path = action.key
        try:
            if action.kind == "delete":
                await asyncio.to_thread(self.expire, dataset, path, action.tier)
            elif action.kind == "make_read_only":
                await asyncio.to_thread(self.make_read_only, dataset, path)
        except UnsafePath as e:           # a catalogue path leaving the tier: never deleted nor changed
            log.warning("%s", e)

    def copy_requests(self, actions) -> list[CopyRequest]:
        out = []
        for a in actions:
            if a.kind != "copy":
                continue
            dataset, path = a.key
            ds, f = self._dataset(dataset), self.cat.get_file(dataset, path)
            if ds is not None and f is not None:
                discovered = f.replicas["beamline"].verified_at if "beamline" in f.replicas else 0.0
                out.append(CopyRequest(dataset, path, a.source_tier, a.tier, f, ds.path, discovered or 0.0))
        return out

    # -- 3. copies through the controller ------------------------------------------------------
    async def submit_copies(self, requests: list[CopyRequest]) -> None:
        """One transfer per destination directory (up to BATCH files), not one per file."""
        groups: dict[tuple, list] = {}
        now, free = self.clock(), {}
        for r in requests:
            key = (r.dataset, r.path, r.dst_tier)
            if key in self.pending or now < self.no_room.get(key, (0.0, 0.0))[0]:
                continue
            if r.dst_tier not in free:
                room = await asyncio.to_thread(self.free_space, r.dst_tier)
                # what copies under way may still take: counted whole (their bytes so far are off `room` already)
                free[r.dst_tier] = room, None if room is None else room - sum(
                    p.size for p in self.pending.values() if p.tier == r.dst_tier)
            room, budget = free[r.dst_tier]
            if room is not None and r.f.size > room:
                self._hold(key, r.f.size, room, now)
                continue
            if budget is not None:
                if r.f.size > budget:
                    continue          # it fits once the copies under way end: asked again next pass
                free[r.dst_tier] = room, budget - r.f.size
            try:
                src = tier_url(self.roots[r.src_tier], r.dataset_path, r.path)
                dst = tier_url(self.roots[r.dst_tier], r.dataset_path, r.path)
            except UnsafePath as e:
                log.warning("%s", e)
                continue
            key = (r.dst_tier, dst.rsplit("/", 1)[0], r.dataset_path.strip("/").split("/", 1)[0])
            groups.setdefault(key, []).append((r, src, dst))
        for (dst_tier, dst_dir, beamline), items in groups.items():
            for start in range(0, len(items), BATCH):
                await self._submit(dst_tier, dst_dir, beamline, items[start:start + BATCH])

    def free_space(self, tier: str) -> int | None:
        """Bytes free on a local tier (None: not local, or not known now)."""
        try:
            store, root = resolve(self.roots[tier])
            return shutil.disk_usage(root).free if store.scheme == "file" else None
        except (DomasError, OSError, ValueError):
            return None

    def _hold(self, key: tuple[str, str, str], size: int, free: int | None, now: float) -> None:
        """A file that does not fit in its tier's free space waits (doubling, up to NO_ROOM_MAX), said once a wait."""
        wait = min(NO_ROOM_MAX, 2 * self.no_room[key][1]) if key in self.no_room else NO_ROOM_FIRST
        self.no_room[key] = (now + wait, wait)
        log.warning("%r (%d bytes) does not fit on %s, which has %s bytes free: the other files go on, this one "
                    "is tried again in %.0f s", key[1], size, key[2], "?" if free is None else free, wait)

    def _give_back_space(self, p: Pending) -> None:
        """A copy that failed for lack of space: its part file goes at once, so the space it took is
        free for the other files (the transfer ended: no agent writes it any more)."""
        try:
            store, part = resolve(part_path(p.dst_url))
            store.remove(part)
        except NotFound:
            pass
        except DomasError as e:
            log.warning("the partial copy of %r on %s could not be removed: %s", p.path, p.tier, e)
        self._hold((p.dataset, p.path, p.tier), p.size, self.free_space(p.tier), self.clock())

    async def _submit(self, dst_tier: str, dst_dir: str, beamline: str, items: list) -> None:
        ident = "\n".join(f"{r.dataset}:{r.path}:{r.f.size}:{r.f.mtime}:{r.f.adler32}{_retry_mark(r.f, dst_tier)}"
                          for r, _, _ in items)
        request_id = f"{dst_tier}:{hashlib.sha256(ident.encode()).hexdigest()[:32]}"
        try:
            validate.beamline(beamline)
        except InvalidMessage:
            beamline = ""                 # a directory name the controller's fair share cannot take
        resp = await self.stub.SubmitTransfer(pb.SubmitTransferRequest(
            sources=[src for _, src, _ in items], destination=dst_dir + "/", beamline=beamline, priority=0,
            request_id=request_id, options=pb.TransferOptions(verify=pb.VERIFY_MODE_FULL, overwrite=True)),
            metadata=self._md, timeout=60)
        keys, updates, now = [], [], self.clock()
        for r, src, dst in items:
            key = (r.dataset, r.path, dst_tier)
            bad = r.f.replicas.get(dst_tier) is not None and r.f.replicas[dst_tier].state == "bad"
            self.pending[key] = Pending(resp.transfer_id, r.dataset, r.path, dst_tier, src, dst, r.f.size,
                                        r.f.mtime, r.f.adler32, r.discovered_at, repair=bad)
            keys.append(key)
            updates.append(ReplicaUpdate(r.dataset, r.path, dst_tier,
                                         Replica("copying", dst, now, content_version(r.f.size, r.f.mtime))))
        self.transfers[resp.transfer_id] = keys
        await asyncio.to_thread(self._set_replicas, updates)
        log.info("%d file(s) -> %r submitted as %s", len(items), dst_dir + "/", resp.transfer_id)

    def _set_replicas(self, updates: list[ReplicaUpdate]) -> None:
        try:
            self.cat.set_replicas(updates)
        except NotFound:
            pass        # not catalogued yet (its record waits in the spool); recorded when the copy ends

    async def follow_transfers(self) -> None:
        for tid, keys in list(self.transfers.items()):
            resp = await self.stub.GetStatus(pb.GetStatusRequest(transfer_id=tid), metadata=self._md, timeout=30)
            if resp.transfer.state not in _TERMINAL:
                continue
            by_src = {self.pending[k].src_url: self.pending[k] for k in keys if k in self.pending}
            async for fs in self._files_of(tid):
                p = by_src.pop(fs.src_url, None)
                if p is None:
                    continue
                ok = fs.state == pb.FILE_STATE_DONE and fs.adler32
                if not ok and fs.error_kind == "no_space":
                    await asyncio.to_thread(self._give_back_space, p)
                elif not ok:
                    log.warning("copy to %r failed: %s", p.dst_url, fs.error_message or "transfer failed")
                else:
                    self.no_room.pop((p.dataset, p.path, p.tier), None)
                self.finished.append((p, fs.adler32 if ok else ""))
            for p in by_src.values():
                self.finished.append((p, ""))
            for k in keys:
                self.pending.pop(k, None)
            del self.transfers[tid]

    async def _files_of(self, tid: str):
        token = ""
        while True:
            resp = await self.stub.GetStatus(pb.GetStatusRequest(transfer_id=tid, include_files=True, page_size=1000,
                                                                 page_token=token), metadata=self._md, timeout=60)
            for fs in resp.files:
                yield fs
            token = resp.next_page_token
            if not token:
                return

    def record_finished(self) -> None:
        """Record finished copies in batches; if the catalogue refuses, they wait for the next pass.

        Each copy is compared with a fresh read of the file's record: a copy of a content the file
        no longer has (it was rewritten meanwhile) is recorded "stale", whatever its checksum."""
        now, records, updates, verified = self.clock(), [], [], 0
        for p, adler32 in self.finished:
            current = self.cat.get_file(p.dataset, p.path)
            if adler32 and current is not None and content_version(current.size, current.mtime) != p.version:
                log.warning("%r changed while it was copied to %s: that copy holds an older content and does "
                            "not count; the current content is copied again", p.path, p.tier)
                updates.append(ReplicaUpdate(p.dataset, p.path, p.tier, Replica("stale", p.dst_url, now, p.version)))
                continue
            expected = (current.adler32 if current is not None else "") or p.expected_adler32
            if adler32 and expected and expected != adler32:
                log.error("%r on %s has adler32 %s, the catalogue says %s: not counted", p.path, p.tier, adler32,
                          expected)
                adler32 = ""
            if not adler32:
                updates.append(ReplicaUpdate(p.dataset, p.path, p.tier, Replica("failed", p.dst_url, now, p.version)))
                continue
            verified += 1
            if p.repair:
                log.warning("%r on %s replaced by a verified copy", p.path, p.tier)
                if self.scrub_stats is not None:
                    self.scrub_stats.repaired(p.tier)
            copy = Replica("verified", p.dst_url, now, p.version, now)
            if not expected:
                # The first copy fixes the file's checksum: name every replica, so none goes stale.
                records.append(FileRecord(
                    dataset=p.dataset, path=p.path, size=p.size, mtime=p.mtime, adler32=adler32,
                    replicas={"beamline": Replica("verified", p.src_url, p.discovered_at or now, p.version),
                              p.tier: copy}))
            else:
                updates.append(ReplicaUpdate(p.dataset, p.path, p.tier, copy))
        if records:
            self.cat.upsert_files(records)
        if updates:
            self.cat.set_replicas(updates)
        if self.finished:
            log.info("recorded %d verified cop%s, %d not", verified, "y" if verified == 1 else "ies",
                     len(self.finished) - verified)
        self.finished.clear()

    # -- 4. expiry and protection --------------------------------------------------------------
    def expire(self, dataset: str, path: str, tier: str) -> None:
        f = self.cat.get_file(dataset, path)           # fresh read: the last guard
        ds = self._dataset(dataset)
        if f is None or ds is None or not may_delete(self.view(f), tier):
            return
        url = tier_url(self.roots[tier], ds.path, path)
        store, spath = resolve(url)
        if not self._still_catalogued(store, spath, url, f, tier) or not self._downstream_intact(f, ds, tier):
            return
        self.cat.set_replicas([ReplicaUpdate(dataset, path, tier, replace(f.replicas[tier], state="deleting"))])
        try:
            store.remove(spath)
        except NotFound:
            pass
        self.cat.set_replicas([ReplicaUpdate(dataset, path, tier, Replica("deleted", url, self.clock(),
                                                                          f.replicas[tier].version))])
        log.info("expired %r (a verified copy is on a later tier)", url)

    def _still_catalogued(self, store, spath: str, url: str, f: FileRecord, tier: str) -> bool:
        """The copy about to be deleted is still the catalogued content (a rewrite not discovered
        yet is the only copy of the new content: it stays). A beamline copy whose ctime moved since
        its content was last known (or after a restart, when that is not known) is read back: a
        rewrite that put the old mtime back is catalogued as new content and archived first."""
        try:
            st = store.stat_follow(spath)
        except NotFound:                # gone already, unless the tier is: an empty mount point holds nothing
            if tier_marked(self.roots[tier]):
                return True
            log.warning("not expiring %r on %s: the tier's root has no marker file (not mounted?); tried again "
                        "when it is back", url, tier)
            return False
        same = st.size == f.size and (tier != "beamline" or abs(st.mtime - f.mtime) < 1e-6)
        if not same:
            log.warning("not expiring %r on %s: it changed since it was catalogued (size %d, mtime %.6f); "
                        "its new content is archived first", f.path, tier, st.size, st.mtime)
            return False
        key = (f.dataset, f.path)
        if tier != "beamline" or (st.ctime and self.beamline_ctime.get(key) == st.ctime):
            return True
        got = read_adler32(url)
        if got is None or got == f.adler32:
            self.beamline_ctime[key] = st.ctime
            return True
        log.warning("not expiring %r on the beamline: it was rewritten with its old mtime (adler32 %s, catalogued "
                    "%s); its new content is archived first", f.path, got, f.adler32)
        now = self.clock()
        self.cat.upsert_files([FileRecord(dataset=f.dataset, path=f.path, size=f.size, mtime=f.mtime, adler32=got,
                                          replicas={"beamline": Replica("pending", url, now, f.replicas["beamline"]
                                                                        .version)})])
        self.beamline_ctime[key] = st.ctime
        self.read_only_done.discard(key)
        return False

    def _note_ctime(self, key: tuple[str, str], url: str, size: int, mtime: float) -> None:
        """Remember the beamline copy's ctime for the content just catalogued (size and mtime)."""
        try:
            store, spath = resolve(url)
            st = store.stat_follow(spath)
        except DomasError:
            return
        if st.size == size and abs(st.mtime - mtime) < 1e-6 and st.ctime:
            self.beamline_ctime[key] = st.ctime

    def _downstream_intact(self, f: FileRecord, ds: Dataset, tier: str) -> bool:
        """Read back the verified later copy that protects this one; a mismatch marks it bad."""
        for later in TIERS[TIERS.index(tier) + 1:]:
            r = f.replicas.get(later)
            if r is None or r.state != "verified" or not holds_current(f, r):
                continue
            url = tier_url(self.roots[later], ds.path, f.path)
            try:
                got = read_adler32(url, on_bytes=lambda n: self.scrub_stats and self.scrub_stats.count_bytes(later, n))
            except DomasError as e:
                log.warning("not expiring %r on %s: its %s copy cannot be read back now (%s)", f.path, tier, later, e)
                return False
            result = verdict(f.adler32, got)
            if result == "missing" and not tier_marked(self.roots[later]):
                log.warning("%r on %s: its %s copy cannot be read back now, the tier's root has no marker file "
                            "(not mounted?)", f.path, tier, later)
                continue            # a later tier may protect it; this one is not bad, only away
            if self.scrub_stats is not None:
                self.scrub_stats.count(later, result)
            if result == "ok":
                self.cat.set_replicas([ReplicaUpdate(f.dataset, f.path, later, replace(r, checked_at=self.clock()))])
                return True
            log.error("not expiring %r on %s: its %s copy %r is %s (catalogue adler32 %s, read %s); marked bad, "
                      "it will be replaced", f.path, tier, later, url, result, f.adler32, got)
            self.cat.set_replicas([ReplicaUpdate(f.dataset, f.path, later, replace(r, state="bad",
                                                                                   checked_at=self.clock()))])
            return False
        return False

    def make_read_only(self, dataset: str, path: str) -> None:
        ds = self._dataset(dataset)
        if ds is None:
            return
        store, spath = resolve(tier_url(self.roots["beamline"], ds.path, path))
        key = (dataset, path)
        try:
            before = store.stat_follow(spath).ctime
            store.chmod_readonly(spath)
            if before and self.beamline_ctime.get(key) == before:      # our chmod, not a rewrite
                self.beamline_ctime[key] = store.stat_follow(spath).ctime
        except NotFound:
            pass
        self.read_only_done.add(key)
