"""The archiver: discovery + catalogue + data policy, driving copies through the controller.

A thin shell around the pure cores (discovery.StabilityTracker, lifecycle.decide). Each pass:
1. scans the beamline tree, catalogues files that settled (beamtime, dataset with a PID, file);
2. asks the policy what is due for catalogued files and submits copies to the controller over
   gRPC (one transfer per file copy, with a deterministic request id, so a restart never copies
   or records a file twice), and follows them until done;
3. records each verified replica with the adler32 the transfer folded from its chunk sums (the
   first copy sets the file's checksum; later copies must match it), then expires earlier copies
   only when lifecycle.may_delete holds on a fresh read of the catalogue.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import posixpath
import time
from dataclasses import dataclass, replace

import grpc

from domas.agent.storage import resolve
from domas.config import Config
from domas.errors import CatalogueUnavailable, DomasError, NotFound
from domas.v1 import domas_pb2 as pb
from domas.v1 import domas_pb2_grpc as pb_grpc

from .catalogue import Beamtime, Catalogue, Dataset, FileRecord, Replica, SpooledCatalogue
from .catalogue.base import ReplicaUpdate
from .discovery import Location, StabilityTracker, parse_location, scan_tree
from .lifecycle import FileView, ReplicaState, Retention, decide, may_delete

log = logging.getLogger("domas.archiver")

_DATA_TYPE = {"raw": "raw", "processed": "processed"}
_TERMINAL = {pb.TRANSFER_STATE_DONE, pb.TRANSFER_STATE_FAILED, pb.TRANSFER_STATE_CANCELLED}


BATCH = 1000          # files per submitted transfer


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


def tier_url(root: str, dataset_path: str, relpath: str) -> str:
    """Where a file of a dataset lives on a tier: the tier root + the dataset path + the file path."""
    dataset_path = dataset_path.strip("/")
    if "://" in root:
        return f"{root.rstrip('/')}/{dataset_path}/{relpath}"
    return posixpath.join(root.rstrip("/") or "/", dataset_path, relpath)


class Archiver:
    def __init__(self, cfg: Config, catalogue: Catalogue, controller: str, *, token: str = "",
                 clock=time.time) -> None:
        self.cfg, self.cat, self.controller = cfg, catalogue, controller
        self.roots = {"beamline": cfg.storage.beamline, "central": cfg.storage.central, "tape": cfg.storage.tape}
        self.retention = Retention(cfg.policy.beamline_retention, cfg.policy.central_retention,
                                   retry_failed_after=max(5.0, min(300.0, cfg.policy.stability_seconds * 4)))
        self.tracker = StabilityTracker(cfg.policy.stability_seconds)
        self.clock = clock
        self.pending: dict[tuple[str, str, str], Pending] = {}
        self.finished: list[tuple[Pending, str]] = []      # done copies not yet recorded
        self.transfers: dict[str, list[tuple[str, str, str]]] = {}   # transfer id -> pending keys
        self.datasets: dict[str, Dataset] = {}
        self.read_only_done: set[tuple[str, str]] = set()
        self.problems_seen: set[str] = set()
        self._md = (("authorization", f"Bearer {token}"),) if token else ()
        self._next_expiry_scan = 0.0

    # -- the loop ------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event, interval: float = 1.0) -> None:
        async with grpc.aio.insecure_channel(self.controller) as channel:
            self.stub = pb_grpc.ControllerStub(channel)
            while not stop.is_set():
                try:
                    await self.run_pass()
                except grpc.aio.AioRpcError as e:
                    log.warning("controller %s: %s", self.controller, e.details() or e.code().name)
                except DomasError as e:
                    log.warning("archiver: %s", e)
                try:
                    await asyncio.wait_for(stop.wait(), timeout=interval)
                except asyncio.TimeoutError:
                    pass

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
        while it is unreachable (its writes wait in the spool)."""
        store, root = resolve(self.roots["beamline"])
        listing, problems = scan_tree(store, root)
        for p in problems:
            if str(p) not in self.problems_seen:
                self.problems_seen.add(str(p))
                log.warning("%s", p)
        now, settled = self.clock(), []
        for ready in self.tracker.observe(listing, now):
            try:
                loc = parse_location(ready.relpath)
            except DomasError as e:
                log.warning("%s", e)
                continue
            if loc is not None and loc.area in self.cfg.policy.archive_dirs:
                settled.append((loc, ready.size, ready.mtime))
        return self.catalogue_files(settled, now)

    def dataset_for(self, loc: Location) -> Dataset:
        path = "/" + loc.dataset_path
        ds = self.datasets.get(path)
        if ds is None:
            self.cat.upsert_beamtime(Beamtime(id=loc.beamtime, beamline=loc.beamline))
            ds = self.cat.upsert_dataset(Dataset(beamtime=loc.beamtime, path=path,
                                                 data_type=_DATA_TYPE.get(loc.area, "raw")))
            self.datasets[path] = ds
        return ds

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
            url = tier_url(self.roots["beamline"], loc.dataset_path, loc.relpath)
            rec = FileRecord(dataset=ds.pid, path=loc.relpath, size=size, mtime=mtime,
                             replicas={"beamline": Replica("pending", url, now)})
            records.append(rec)
            copies.append(CopyRequest(ds.pid, loc.relpath, "beamline", "central", rec, ds.path, now))
        if records:
            self.cat.upsert_files(records)
            log.info("catalogued %d file(s)%s", len(records),
                     f": {copies[0].dataset_path}/{records[0].path}" if len(records) == 1 else "")
        for loc, _, _ in settled:
            self._extract_metadata(self.dataset_for(loc), loc)
        return copies

    def _extract_metadata(self, ds: Dataset, loc: Location) -> None:
        """A dataset's scientific metadata comes from its first NeXus/HDF5 file."""
        from .catalogue.metadata import dataset_metadata, is_hdf5_name

        if ds.metadata or not is_hdf5_name(loc.relpath) or "://" in self.roots["beamline"]:
            return
        meta = dataset_metadata(posixpath.join(self.roots["beamline"], loc.dataset_path), [loc.relpath])
        if meta:
            self.datasets[ds.path] = self.cat.upsert_dataset(replace(ds, metadata=meta))

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
            if state == "copying" and (f.dataset, f.path, tier) not in self.pending:
                state, since = "failed", 0.0
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
        if action.kind == "delete":
            await asyncio.to_thread(self.expire, dataset, path, action.tier)
        elif action.kind == "make_read_only":
            await asyncio.to_thread(self.make_read_only, dataset, path)

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
        for r in requests:
            if (r.dataset, r.path, r.dst_tier) in self.pending:
                continue
            src = tier_url(self.roots[r.src_tier], r.dataset_path, r.path)
            dst = tier_url(self.roots[r.dst_tier], r.dataset_path, r.path)
            key = (r.dst_tier, dst.rsplit("/", 1)[0], r.dataset_path.strip("/").split("/", 1)[0])
            groups.setdefault(key, []).append((r, src, dst))
        for (dst_tier, dst_dir, beamline), items in groups.items():
            for start in range(0, len(items), BATCH):
                await self._submit(dst_tier, dst_dir, beamline, items[start:start + BATCH])

    async def _submit(self, dst_tier: str, dst_dir: str, beamline: str, items: list) -> None:
        ident = "\n".join(f"{r.dataset}:{r.path}:{r.f.size}:{r.f.mtime}:{r.f.adler32}" for r, _, _ in items)
        request_id = f"{dst_tier}:{hashlib.sha256(ident.encode()).hexdigest()[:32]}"
        resp = await self.stub.SubmitTransfer(pb.SubmitTransferRequest(
            sources=[src for _, src, _ in items], destination=dst_dir + "/", beamline=beamline, priority=0,
            request_id=request_id, options=pb.TransferOptions(verify=pb.VERIFY_MODE_FULL, overwrite=True)),
            metadata=self._md, timeout=60)
        keys, updates, now = [], [], self.clock()
        for r, src, dst in items:
            key = (r.dataset, r.path, dst_tier)
            self.pending[key] = Pending(resp.transfer_id, r.dataset, r.path, dst_tier, src, dst, r.f.size,
                                        r.f.mtime, r.f.adler32, r.discovered_at)
            keys.append(key)
            updates.append(ReplicaUpdate(r.dataset, r.path, dst_tier, Replica("copying", dst, now)))
        self.transfers[resp.transfer_id] = keys
        await asyncio.to_thread(self._set_replicas, updates)
        log.info("%d file(s) -> %s/ submitted as %s", len(items), dst_dir, resp.transfer_id)

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
                if not ok:
                    log.warning("copy to %s failed: %s", p.dst_url, fs.error_message or "transfer failed")
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
        """Record finished copies in batches; if the catalogue refuses, they wait for the next pass."""
        now, records, updates = self.clock(), [], []
        for p, adler32 in self.finished:
            if adler32 and p.expected_adler32 and p.expected_adler32 != adler32:
                log.error("%s on %s has adler32 %s, the catalogue says %s: not counted", p.path, p.tier, adler32,
                          p.expected_adler32)
                adler32 = ""
            if not adler32:
                updates.append(ReplicaUpdate(p.dataset, p.path, p.tier, Replica("failed", p.dst_url, now)))
            elif not p.expected_adler32:
                # The first copy fixes the file's checksum: name every replica, so none goes stale.
                records.append(FileRecord(
                    dataset=p.dataset, path=p.path, size=p.size, mtime=p.mtime, adler32=adler32,
                    replicas={"beamline": Replica("verified", p.src_url, p.discovered_at or now),
                              p.tier: Replica("verified", p.dst_url, now)}))
            else:
                updates.append(ReplicaUpdate(p.dataset, p.path, p.tier, Replica("verified", p.dst_url, now)))
        if records:
            self.cat.upsert_files(records)
        if updates:
            self.cat.set_replicas(updates)
        verified = len(records) + sum(u.replica.state == "verified" for u in updates)
        if self.finished:
            log.info("recorded %d verified cop%s, %d failed", verified, "y" if verified == 1 else "ies",
                     len(self.finished) - verified)
        self.finished.clear()

    # -- 4. expiry and protection --------------------------------------------------------------
    def expire(self, dataset: str, path: str, tier: str) -> None:
        f = self.cat.get_file(dataset, path)           # fresh read: the last guard
        ds = self._dataset(dataset)
        if f is None or ds is None or not may_delete(self.view(f), tier):
            return
        url = tier_url(self.roots[tier], ds.path, path)
        self.cat.set_replicas([ReplicaUpdate(dataset, path, tier, Replica("deleting", url, self.clock()))])
        store, spath = resolve(url)
        try:
            store.remove(spath)
        except NotFound:
            pass
        self.cat.set_replica(dataset, path, tier, "deleted", url, self.clock())
        log.info("expired %s (a verified copy is on a later tier)", url)

    def make_read_only(self, dataset: str, path: str) -> None:
        ds = self._dataset(dataset)
        if ds is None:
            return
        store, spath = resolve(tier_url(self.roots["beamline"], ds.path, path))
        try:
            store.chmod_readonly(spath)
        except NotFound:
            pass
        self.read_only_done.add((dataset, path))
