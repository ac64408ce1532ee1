"""The copy engine: many chunks in flight across files and within one file, each hashed in flight.

Invariants:
- At most `streams` chunks are in flight and at most `streams` files are open at once; blocking
  I/O runs in a thread pool (preads/pwrites), the event loop only schedules.
- Every chunk is hashed once, as it passes, with chunk_sums (adler32 + xxh3). The whole-file
  adler32 is folded from the chunk sums (adler32_combine); the source is never re-read for it.
- With verification (the default) a chunk is durable and read back (local disks) before it counts,
  and a destination with a checksum of its own (XRootD) must agree with the folded sum, as must a
  source whose checksum is authoritative (`checksum_authoritative`: a data service's Digest header).
- A chunk is journaled only after its data is durable (and read back, when verifying), so a rerun
  trusts journaled chunks that the part file's size covers without reading them again.
- Durability comes in groups: a file of several chunks that is read back is made durable with one
  fdatasync per group of chunks written -- DURABLE_GROUP bytes, or an eighth of the file if less, so
  a killed copy loses at most that much; chunk by chunk in the file's last group, so that its end
  waits for one chunk -- and when a chunk fails and before the file is finalized, not one per chunk; the group's chunks are then read back, compared and journaled. The destination is written under a hidden
  temporary name (transfer/parts.py) and renamed to its final name only when complete and verified.
- One writer per destination: the part file is locked (where the backend has advisory locks;
  elsewhere, XRootD, a lock file beside the journal keeps out other copies on this host) before it
  is truncated or its journal read, and stays locked until the final name is given.
- The source's identity (size, mtime, ctime, inode) is taken when the file starts, stored in the
  journal header (resume only from the same identity) and checked again after the last chunk,
  before the final name is given: any change restarts the file from zero, never finishing a mix.
- The copy keeps the source's permission bits (never wider); the part file is owner-only until then.
- Every decision about a file -- up to date, resume, retry, restart, the final verdict -- is its
  FileCore's (transfer/filecore.py, the core the controller's scheduler shares); this module does
  the I/O. Every retry follows one RetryPolicy: storage that stops answering is retried for
  `copy.retry_budget_seconds`, with handles reopened by the backend.
- Handles are closed only when no worker thread can still use them.
"""

from __future__ import annotations

import asyncio
import errno
import posixpath
import random
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import xxhash

from domas.checksum import chunk_sums, format_adler32, parse_adler32, xxh3_64
from domas.config import Config
from domas.errors import (ChecksumMismatch, DestinationBusy, DomasError, IsADirectory, NoSpace, NotFound,
                          SourceChanged, Unsupported)
from domas.retry import RetryPolicy

from domas.transfer.filecore import PART_GONE, SOURCE_CHANGED, Copy, Fail, FileCore, Restart, Skip
from .accounting import Accounting, FileStats
from domas.transfer.expand import Expansion, FileJob
from domas.transfer.journal import ChunkRecord, Header, Journal, journal_path, read_journal
from domas.transfer.parts import PART_SUFFIX, part_path  # noqa: F401  (the one spelling, re-exported)
from domas.transfer.plan import Chunk
from domas.transfer.storage.posix import PosixStorage


_LOCAL = PosixStorage()


def retry_policy(copy) -> RetryPolicy:
    """The copy engine's one retry policy, from [copy]: `max_retries` retries of anything
    retriable; a storage that is away is retried for `retry_budget_seconds`; a checksum mismatch
    or a changed source restarts the file at most `max_retries` times."""
    tries = copy.max_retries + 1
    return RetryPolicy(max_attempts=tries, base=copy.backoff_base, cap=copy.backoff_max,
                       per_kind={"checksum_mismatch": tries, "source_changed": tries},
                       budget=copy.retry_budget_seconds)


def source_mode(src) -> int:
    """Permission bits a copy of `src` gets: the source's own (0 when its storage has none)."""
    return src.mode & 0o777


def part_mode(src) -> int:
    """Permission bits of a part file that several writers open for update: the source's, plus
    the owner's read and write (never more for group and others); 0644 when the source has none."""
    return source_mode(src) | 0o600 if src.mode else 0o644


def copy_range(reader, writer, c: Chunk, readback: bool, src_url: str, dst_url: str,
               before_write=None) -> tuple[int, int, bytes]:
    """Copy one chunk: read once, hash in flight, write, and (readback) make durable and compare.

    Returns (adler32, xxh3, data). The shared unit of work of `domas copy` and of the agent.
    `before_write()`, when given, runs between the read and the write and may raise to stop it.
    """
    data = reader.pread(c.offset, c.length)
    if len(data) != c.length:
        raise SourceChanged(f"{src_url} shrank while it was copied; copying it again from the start")
    adler, xxh = chunk_sums(data)
    if before_write is not None:
        before_write()
    writer.pwrite(c.offset, data)
    if readback:
        writer.sync()
        if xxh3_64(writer.readback(c.offset, c.length)) != xxh:
            raise ChecksumMismatch(f"chunk {c.index} of {dst_url} read back differently from what "
                                   "was written; copying it again")
    return adler, xxh, data


_FULL = (errno.ENOSPC, errno.EDQUOT)   # a full destination (not a file-size limit, EFBIG, which says so)
DURABLE_GROUP = 8 * 1024 * 1024   # at most, bytes of a file written between two fdatasyncs (see the invariants)
SYNC_GROUP_MAX = 128      # small files made durable together (each holds its part file open meanwhile)
SYNC_LINGER = 0.25        # seconds a group waits for files still being copied to join it


class OrderedHash:
    """Whole-file xxh3 fed with chunks in file order, whatever order they finish in."""

    def __init__(self) -> None:
        self._h = xxhash.xxh3_64()
        self._pending: dict[int, bytes] = {}
        self._lock = threading.Lock()
        self.next_index = 0
        self.broken = False

    def offer(self, index: int, data: bytes) -> None:
        with self._lock:
            if self.broken:
                self.next_index = max(self.next_index, index + 1)
                return
            self._pending[index] = data
            while self.next_index in self._pending:
                self._h.update(self._pending.pop(self.next_index))
                self.next_index += 1

    def give_up(self, index: int) -> None:
        """A chunk's data will not pass here (resumed without read-back): no whole-file xxh3."""
        with self._lock:
            self.broken = True
            self._pending.clear()
            self.next_index = max(self.next_index, index + 1)

    def hexdigest(self) -> str | None:
        return None if self.broken else self._h.hexdigest()


class FileCopy:
    """One file's transfer: the I/O shell around its FileCore (transfer/filecore.py), which makes
    every decision. Methods without `async` run in worker threads."""

    def __init__(self, job: FileJob, cfg: Config, stats: FileStats, acct: Accounting,
                 force: bool, note, policy: RetryPolicy, rng: random.Random) -> None:
        self.job, self.cfg, self.stats, self.acct = job, cfg, stats, acct
        self.force, self.note = force, note
        self.verify = cfg.copy.verify != "none"
        self.readback = self.verify and job.dst_store.chunk_readback
        self.core = FileCore(job.dst_path, cfg.copy.chunk_size, policy, rng)
        self.core.begin(job.src_stat.size, job.src_stat.mtime, job.src_stat.identity())
        self.part = self.core.part
        self.reader = self.writer = None
        self.lock = None
        self.lock_file: Path | None = None      # a lock in the state directory, not on the part file
        self.journal: Journal | None = None
        self.hasher = OrderedHash()
        self.error: DomasError | None = None
        self.folded: int | None = None      # whole-file adler32 once the copy is complete
        # A one-chunk file written but not yet durable: (chunk, xxh3 of what was written). Small
        # files are made durable in groups (CopyEngine._durable) and read back after that.
        self.deferred: tuple[Chunk, int] | None = None
        # Chunks of a multi-chunk file written but not yet durable: (chunk, adler32, xxh3), made
        # durable, read back and journaled together (_make_durable).
        self.unsynced: list[tuple[Chunk, int, int]] = []
        self.unsynced_bytes = 0
        self.durable_lock = threading.Lock()
        self.release_slot = lambda: None
        self.skipped = False
        self.progress = asyncio.Event()

    @property
    def size(self) -> int:
        return self.core.size

    @property
    def n(self) -> int:
        return self.core.n

    # -- preparation ------------------------------------------------------------------------
    def prepare(self, fresh_only: bool = False) -> None:
        job = self.job
        src = job.src_store.stat_follow(job.src_path)
        if src.is_dir:
            raise IsADirectory(f"{job.src_url} became a directory; skipped", path=job.src_url)
        self.src = src
        self.core.begin(src.size, src.mtime, src.identity())
        self.stats.size = src.size
        if not fresh_only and isinstance(self.core.plan(self._destination(), local=job.dst_store.scheme == "file",
                                                        force=self.force), Skip):
            self.skipped = True
            return
        if self.lock is None:
            try:
                self.lock = job.dst_store.lock(self.part)
                if self.lock is None:             # no advisory locks there (XRootD): one copy per host
                    self.lock_file = journal_path(self.cfg.state_path(), job.dst_url).with_suffix(".lock")
                    self.lock = _LOCAL.lock(str(self.lock_file))
            except DestinationBusy:
                raise DestinationBusy(f"another copy of {job.dst_url} is running; wait for it to finish "
                                      "or stop it, then run again") from None
        header = Header(job.src_url, job.dst_url, src.size, src.mtime, src.ident, self.cfg.copy.chunk_size,
                        src.ctime)
        jpath = journal_path(self.cfg.state_path(), job.dst_url)
        fresh = fresh_only or not self.cfg.copy.resume or not self._resume(jpath)
        try:
            self.reader = job.src_store.open_read(job.src_path)
            if src.size == 0 and job.src_store.scheme == "file" and self.reader.pread(0, 1):
                raise Unsupported(f"{job.src_url} says it holds 0 bytes but has content (a /proc or /sys file, "
                                  "whose size is known only once read); domas copies a file by its size, so nothing "
                                  f"was copied: save it first (cat {job.src_path} > FILE) and copy that")
            self.writer = job.dst_store.open_write(self.part, truncate=fresh, mode=0o600)
        except DomasError:
            self.close()              # a retry opens both again
            raise
        if fresh:
            jpath.unlink(missing_ok=True)
        if self.cfg.copy.resume and self.n > 1:
            self.journal = Journal(jpath, header, fresh=fresh)

    def _destination(self) -> tuple[int, float] | None:
        """The destination's (size, mtime), None when there is none yet."""
        job = self.job
        try:
            dst = job.dst_store.stat_follow(job.dst_path)
        except NotFound:
            return None
        if dst.is_dir:
            raise IsADirectory(f"destination {job.dst_url} is a directory; remove it or copy into it", path=job.dst_url)
        if dst.special:          # renaming the copy over it would replace /dev/null (as root) or a FIFO
            raise Unsupported(f"destination {job.dst_url} is {dst.special}, not a regular file; nothing copied")
        return dst.size, dst.mtime

    def _resume(self, jpath: Path) -> bool:
        """Offer the interrupted copy's journal and part file to the core; True when it resumes."""
        old, records = read_journal(jpath)
        journaled = part_size = None
        if old is not None:
            journaled = ((old.size, old.mtime, old.ctime, old.ident), old.chunk_size)
            try:
                part_size = self.job.dst_store.stat(self.part).size
            except NotFound:
                pass
        act = self.core.resume(journaled, records, part_size)
        if isinstance(act, Copy):
            if act.resumed:
                done = sum(r.length for r in act.resumed.values())
                self.note(f"{self.job.src_url}: resuming, {len(act.resumed)} of {self.n} chunks ({done} bytes) "
                          "already copied")
            return True
        if act.kind == SOURCE_CHANGED:
            self.note(f"{self.job.src_url}: the source changed since the interrupted copy; restarting it from zero")
        elif act.kind == PART_GONE:
            self.note(f"{self.job.dst_url}: the partial copy is gone; restarting it from zero")
        return False

    def chunks(self) -> list[Chunk]:
        return self.core.pending()

    # -- the per-chunk work (worker threads) ------------------------------------------------
    def run_chunk(self, c: Chunk) -> None:
        rec = self.core.resumed.get(c.index)
        if rec is not None and self._check_resumed(c, rec):
            return
        self.copy_chunk(c)

    def copy_chunk(self, c: Chunk) -> None:
        if self.readback and self.n > 1:
            self._copy_grouped(c)
            return
        defer = self.cfg.copy.group_sync and self.readback and self.n == 1 and self.journal is None
        adler, xxh, data = copy_range(self.reader, self.writer, c, self.readback and not defer,
                                      self.job.src_url, self.job.dst_url)
        if self.journal is not None:
            if not self.readback:
                self.writer.sync()
            self.journal.record(ChunkRecord(c.index, adler, xxh, c.length))
        self.core.chunk_done(c.index, adler, c.length)
        self.hasher.offer(c.index, data)
        if defer:
            self.deferred = (c, xxh)
        else:
            self.acct.add_chunk(self.stats, c.length, self.readback)

    def _copy_grouped(self, c: Chunk) -> None:
        """A chunk of a file read back in groups: written now; durable, read back and journaled
        with its group (when DURABLE_GROUP bytes are pending, a chunk fails, or at finalize)."""
        try:
            adler, xxh, data = copy_range(self.reader, self.writer, c, False, self.job.src_url, self.job.dst_url)
        except DomasError:
            self._make_durable()          # what was written before the failure keeps its journal records
            raise
        self.core.chunk_done(c.index, adler, c.length)
        self.hasher.offer(c.index, data)
        with self.durable_lock:
            self.unsynced.append((c, adler, xxh))
            self.unsynced_bytes += c.length
            group = max(min(DURABLE_GROUP, self.size // 8), self.cfg.copy.chunk_size)
            # The file's last group goes chunk by chunk: its end waits for one chunk's sync, not a group's.
            full = self.unsynced_bytes >= group or c.offset + c.length > self.size - group
        if full:
            self._make_durable()

    def _make_durable(self) -> None:
        """One fdatasync for the pending chunks, then each read back, compared and journaled. Any
        failure restarts the file (fc.error; a non-retriable one fails it): a chunk that read back
        differently, or a failed fdatasync, after which what reached the disk is unknown (a second
        fdatasync may report success for pages that were never written)."""
        with self.durable_lock:
            group, self.unsynced, self.unsynced_bytes = self.unsynced, [], 0
        if not group:
            return
        try:
            self.writer.sync()
            for c, adler, xxh in group:
                if xxh3_64(self.writer.readback(c.offset, c.length)) != xxh:
                    raise ChecksumMismatch(f"chunk {c.index} of {self.job.dst_url} read back differently from "
                                           "what was written; copying the file again")
                if self.journal is not None:
                    self.journal.record(ChunkRecord(c.index, adler, xxh, c.length))
                self.acct.add_chunk(self.stats, c.length, True)
        except DomasError as e:
            err = e if isinstance(e, ChecksumMismatch) or not e.retriable else ChecksumMismatch(
                f"{self.job.dst_url} could not be made durable and read back ({e}); copying it again")
            self.error = self.error or err          # the engine restarts (or fails) the file
            raise err from None

    def whole(self) -> tuple[str, Exception | None]:
        """A one-chunk file's prepare, chunk and finalize in one call (one trip to a worker thread
        instead of three). Returns the step it stopped at and why: ("done", None), ("skipped",
        None), or (step, error) for the caller to go on from there as the step-by-step path would."""
        step = "prepare"
        try:
            self.prepare()
            if self.skipped:
                return "skipped", None
            step = "copy"
            if self.n != 1:                 # it grew since it was listed: chunk by chunk
                return step, None
            self.run_chunk(self.chunks()[0])
            step = "finalize"
            self.finalize()
        except Exception as e:      # noqa: BLE001 - handed to the step-by-step path, which decides
            return step, e
        return "done", None

    def check_deferred(self) -> None:
        """After its group was made durable: read the one-chunk file back, as copy_range would."""
        c, xxh = self.deferred
        if xxh3_64(self.writer.readback(c.offset, c.length)) != xxh:
            raise ChecksumMismatch(f"{self.job.dst_url} read back differently from what was written; "
                                   "copying it again")
        self.deferred = None
        self.acct.add_chunk(self.stats, c.length, True)

    def _check_resumed(self, c: Chunk, rec: ChunkRecord) -> bool:
        """Accept a journaled chunk; False to copy it again.

        A record is written only after its chunk was made durable (and, when verifying, read back
        and compared), so its sums are the destination's: it is trusted without reading the chunk
        again (the part file's size was checked to cover it). Only a download whose whole-file
        xxh3 is checked against the catalogue (an authoritative source) reads it back, to feed
        that hash; elsewhere a resumed file has no whole-file xxh3."""
        if self.readback and self.job.src_store.checksum_authoritative:
            back = self.writer.readback(c.offset, c.length)
            if len(back) != c.length or xxh3_64(back) != rec.xxh3:
                self.note(f"{self.job.dst_url}: journaled chunk {c.index} no longer matches; copying it again")
                return False
            self.hasher.offer(c.index, back)
        else:
            self.hasher.give_up(c.index)
        self.core.chunk_done(c.index, rec.adler32, rec.length)
        self.acct.add_resumed(self.stats, rec.length)
        return True

    # -- completion -------------------------------------------------------------------------
    def finalize(self) -> None:
        """Check the whole file and give it its final name. Safe to call again after a transient
        failure: the part that closed the file is done once."""
        if self.folded is None:
            self.folded = self._complete()
        self._publish(self.folded)

    def _complete(self) -> int:
        job = self.job
        self._make_durable()
        adler = self.core.finalize().expected_adler32
        now = job.src_store.stat_follow(job.src_path)
        if self.core.source_now(now.identity()) is not None:
            raise SourceChanged(f"{job.src_url} changed while it was copied; copying it again from the start")
        if not (self.readback or self.journal is not None):
            self.writer.sync()            # otherwise every chunk was made durable as it was written
        self.close()
        return adler

    def _publish(self, adler: int) -> None:
        job = self.job
        if self.verify:
            server = job.dst_store.checksum(self.part, "adler32")
            if isinstance(self.core.finish(adler, None if server is None else parse_adler32(server), True), Restart):
                raise ChecksumMismatch(f"{job.dst_url}: the destination's adler32 {server} differs from the "
                                       f"source's {format_adler32(adler)}; copying it again")
            if job.src_store.checksum_authoritative:
                origin = job.src_store.checksum(job.src_path, "adler32")
                if isinstance(self.core.finish(adler, None if origin is None else parse_adler32(origin), True), Restart):
                    raise ChecksumMismatch(f"{job.src_url}: the adler32 of the bytes received, "
                                           f"{format_adler32(adler)}, differs from the {origin} the source "
                                           "announces; copying it again")
        job.dst_store.set_mode(self.part, source_mode(self.src) if self.src.mode else 0o644)
        job.dst_store.rename(self.part, job.dst_path)     # durable with the run's sync_dirs()
        job.dst_store.set_mtime(job.dst_path, self.src.mtime, self.src.mtime_ns or None)
        if self.journal is not None:
            self.journal.discard()
        self.stats.adler32 = format_adler32(adler)
        self.stats.xxh3 = self.hasher.hexdigest()

    def restart(self) -> None:
        """Throw the partial copy away and start the file again from zero."""
        self.close()
        if self.journal is not None:
            self.journal.discard()
            self.journal = None
        if self.lock is None or self.lock_file is not None:
            # A new file rather than a truncated one: a server may keep the checksum it computed
            # for the old one (xrootd does, until the mtime moves). A locked part file is kept
            # (and truncated), so that the lock keeps holding the name.
            try:
                self.job.dst_store.remove(self.part)
            except NotFound:
                pass
        self.folded = None
        self.deferred = None
        self.unsynced, self.unsynced_bytes = [], 0
        self.hasher = OrderedHash()
        self.error = None
        self.acct.restart_file(self.stats)
        self.prepare(fresh_only=True)

    def no_space(self, err: NoSpace) -> NoSpace:
        """The sentence of a file that met a full destination: its size, the space there, and the part
        file that holds space (kept: the same command resumes it, README "Resume"; removing it gives
        the space back to the other files)."""
        job = self.job
        if job.dst_store.scheme != "file":
            return err
        du = shutil.disk_usage(posixpath.dirname(self.part) or ".")
        try:
            held = f"its partial copy {self.part} holds {Path(self.part).stat().st_blocks * 512} bytes there"
        except OSError:
            held = "no partial copy of it was kept"
        return NoSpace(f"No space left at {job.dst_url} for this file's {self.size} bytes ({du.free} bytes free, "
                       f"{du.total} in all); {held}: remove it to give the space back, or free space and run the "
                       "same command again to resume", path=None)

    def close(self) -> None:
        for h in (self.reader, self.writer):
            if h is not None:
                h.close()
        self.reader = self.writer = None
        if self.journal is not None:
            self.journal.close()

    def unlock(self) -> None:
        """Let another copy write this destination (after the final name is given, or a failure)."""
        lock, self.lock = self.lock, None
        if lock is not None:
            if self.lock_file is not None:
                self.lock_file.unlink(missing_ok=True)     # safe: a lock checks it holds the file at the path
            lock.release()


class CopyEngine:
    """Runs an Expansion to completion; returns the Accounting of the run."""

    def __init__(self, cfg: Config, *, reporter=None, force: bool = False,
                 rng: random.Random | None = None, acct: Accounting | None = None) -> None:
        from .progress import NullReporter

        self.cfg, self.force = cfg, force
        self.reporter = reporter or NullReporter()
        self.rng = rng or random.Random()
        self.acct = acct or Accounting()
        self.policy = retry_policy(cfg.copy)
        self._copies: list[FileCopy] = []
        self._copying = 0                   # files with chunks in flight (may join a sync group)
        self._sync_wait: list[tuple[FileCopy, asyncio.Future]] = []
        self._sync_task: asyncio.Task | None = None
        self._sync_kick: asyncio.Event | None = None
        self._sync_slots: asyncio.Semaphore | None = None

    async def run(self, exp: Expansion) -> Accounting:
        streams = self.cfg.copy.streams
        self._pool = ThreadPoolExecutor(max_workers=streams + 2, thread_name_prefix="domas-io")
        self._chunk_slots = asyncio.Semaphore(streams)
        self._sync_slots = asyncio.Semaphore(SYNC_GROUP_MAX)
        self._sync_kick = asyncio.Event()
        file_slots = asyncio.Semaphore(streams)
        self.reporter.start(self.acct)
        try:
            for src, err in exp.problems:
                self._failed(FileStats(src, "", 0), err)
            await self._io(_make_dirs, exp.dirs)
            tasks = []
            for job in exp.jobs:
                await file_slots.acquire()
                stats = self.acct.add_file(FileStats(job.src_url, job.dst_url, job.src_stat.size))
                fc = FileCopy(job, self.cfg, stats, self.acct, self.force, self.reporter.note, self.policy, self.rng)
                fc.release_slot = _once(file_slots.release)
                self._copies.append(fc)
                task = asyncio.create_task(self._file(fc))
                task.add_done_callback(lambda _t, release=fc.release_slot: release())
                tasks.append(task)
            await asyncio.gather(*tasks)
            await self._sync_dirs()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
            for fc in self._copies:
                fc.close()
                fc.unlock()
            self.acct.finished = time.monotonic()
            self.reporter.stop()
        return self.acct

    async def _io(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def _sync_dirs(self) -> None:
        """Make every final name of this run durable: one directory sync per directory, not per file."""
        dirs: dict[tuple[int, str], list[FileCopy]] = {}
        for fc in self._copies:
            if fc.stats.status == "done":
                key = (id(fc.job.dst_store), posixpath.dirname(fc.job.dst_path))
                dirs.setdefault(key, []).append(fc)

        async def one(fcs: list[FileCopy]) -> None:
            try:
                await self._io(fcs[0].job.dst_store.sync_dir, posixpath.dirname(fcs[0].job.dst_path))
            except DomasError as e:
                for fc in fcs:
                    self._failed(fc.stats, e)

        await asyncio.gather(*(one(fcs) for fcs in dirs.values()))

    async def _file(self, fc: FileCopy) -> None:
        fc.stats.started = fc.job.began or time.monotonic()     # a file's time counts from its first byte asked
        fc.stats.status = "copying"
        interrupted = False
        try:
            step, err = "prepare", None
            if fc.n == 1 and not self.cfg.copy.group_sync:
                async with self._chunk_slots:
                    step, err = await self._io(fc.whole)
            if step == "prepare":
                await self._retrying(fc, fc.prepare, err)
                step, err = "copy", None
            if fc.skipped:
                fc.stats.status = "skipped"
                fc.stats.done_bytes = fc.size
                self.reporter.file_done(fc.stats)
                return
            self.reporter.file_started(fc.stats)
            if step != "done":
                await self._copy_file(fc, step, err)
            fc.stats.status = "done"
            self.reporter.file_done(fc.stats)
        except DomasError as e:
            if isinstance(e, NoSpace) and getattr(e.__cause__, "errno", None) in _FULL:
                e = await self._io(fc.no_space, e)
            self._failed(fc.stats, e)
        except (OSError, ValueError, RuntimeError) as e:
            self._failed(fc.stats, DomasError(f"{fc.job.src_url}: unexpected failure: {e}"))
        except asyncio.CancelledError:
            interrupted = True
            raise
        finally:
            fc.stats.finished = time.monotonic()
            if not interrupted:   # every chunk task has ended: no worker thread holds the handles
                fc.close()        # (interrupted, a thread may still be in a chunk: run() closes
                fc.unlock()       # them once its pool has drained)

    async def _copy_file(self, fc: FileCopy, step: str = "copy", err: Exception | None = None) -> None:
        """Copy the chunks and finalize; `step` ("copy" or "finalize") and `err`: where to go on
        after a first attempt that failed (FileCopy.whole)."""
        while True:
            try:
                if step == "copy":
                    await self._copy_chunks(fc, err)
                if fc.deferred is not None:
                    await self._durable(fc)
                    await self._retrying(fc, fc.check_deferred)
                await self._retrying(fc, fc.finalize, err if step == "finalize" else None)
                return
            except (SourceChanged, ChecksumMismatch) as e:
                if isinstance(fc.core.restart(e.kind, str(e)), Fail):
                    raise
                self.acct.add_retry(fc.stats, e.kind)
                self.reporter.note(str(e))
                await self._retrying(fc, fc.restart)
            step, err = "copy", None

    async def _retrying(self, fc: FileCopy, fn, failed: Exception | None = None):
        """Run a blocking step in the pool, retried as the policy says (`failed`: the error of a
        first attempt made already). A changed source and a checksum mismatch go up at once: they
        restart the file."""
        step = fn.__name__
        while True:
            try:
                if failed is not None:
                    e, failed = failed, None
                    raise e
                result = await self._io(fn)
                fc.core.succeeded(step)
                return result
            except (SourceChanged, ChecksumMismatch):
                raise
            except DomasError as e:
                now = time.monotonic()
                act = fc.core.failed(step, e.kind, str(e), e.retriable, now)
                if isinstance(act, Fail):
                    raise
                self.acct.add_retry(fc.stats, e.kind)
                await asyncio.sleep(act.when - now)

    async def _durable(self, fc: FileCopy) -> None:
        """Wait until the file's bytes are durable, synced together with the other small files
        that finished meanwhile (group commit): one syncfs for a group instead of an fdatasync per
        file. The file gives its slot to the next file while it waits (at most SYNC_GROUP_MAX wait)."""
        await self._sync_slots.acquire()
        try:
            fc.release_slot()
            if fc.reader is not None:
                fc.reader.close()         # not needed any more; a restart opens it again
                fc.reader = None
            fut = asyncio.get_running_loop().create_future()
            self._sync_wait.append((fc, fut))
            self._sync_kick.set()
            if self._sync_task is None:
                self._sync_task = asyncio.create_task(self._group_sync())
            await fut
        finally:
            self._sync_slots.release()

    async def _group_sync(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._sync_wait:
                # Let the files still being copied join, up to a group's size or SYNC_LINGER.
                deadline = loop.time() + SYNC_LINGER
                while len(self._sync_wait) < SYNC_GROUP_MAX and self._copying > 0 and loop.time() < deadline:
                    self._sync_kick.clear()
                    try:
                        await asyncio.wait_for(self._sync_kick.wait(), deadline - loop.time())
                    except asyncio.TimeoutError:
                        break
                group, self._sync_wait = self._sync_wait, []
                by_store: dict[int, list[tuple[FileCopy, asyncio.Future]]] = {}
                for item in group:
                    by_store.setdefault(id(item[0].job.dst_store), []).append(item)
                for items in by_store.values():
                    try:
                        await self._io(items[0][0].job.dst_store.sync_many, [f.writer for f, _ in items])
                    except DomasError as e:
                        for _, fut in items:
                            fut.done() or fut.set_exception(e)
                        continue
                    for _, fut in items:
                        fut.done() or fut.set_result(None)
        finally:
            self._sync_task = None

    async def _copy_chunks(self, fc: FileCopy, failed: Exception | None = None) -> None:
        self._copying += 1
        try:
            await self._copy_chunks_of(fc, failed)
        finally:
            self._copying -= 1
            self._sync_kick.set()

    async def _copy_chunks_of(self, fc: FileCopy, failed: Exception | None = None) -> None:
        """Copy the pending chunks; `failed`: the error of a first attempt at the first of them."""
        window = 2 * self.cfg.copy.streams
        tasks = []
        for c in fc.chunks():
            while c.index - fc.hasher.next_index >= window and not fc.error and not fc.hasher.broken:
                fc.progress.clear()
                await fc.progress.wait()
            await self._chunk_slots.acquire()
            if fc.error:
                self._chunk_slots.release()
                break
            tasks.append(asyncio.create_task(self._chunk(fc, c, failed)))
            failed = None
        await asyncio.gather(*tasks)
        if fc.error:
            err, fc.error = fc.error, None
            raise err

    async def _chunk(self, fc: FileCopy, c: Chunk, failed: Exception | None = None) -> None:
        try:
            while not fc.error:
                try:
                    if failed is not None:
                        e, failed = failed, None
                        raise e
                    await self._io(fc.run_chunk, c)
                    return
                except SourceChanged as e:
                    fc.error = fc.error or e
                    return
                except DomasError as e:
                    now = time.monotonic()
                    act = fc.core.failed(c.index, e.kind, str(e), e.retriable, now)
                    if isinstance(act, Fail) or fc.error:
                        fc.error = fc.error or e
                        return
                    self.acct.add_retry(fc.stats, e.kind)
                    await asyncio.sleep(act.when - now)
                except (OSError, ValueError, RuntimeError) as e:
                    fc.error = fc.error or DomasError(f"{fc.job.src_url}: unexpected failure in chunk {c.index}: {e}")
                    return
        finally:
            self._chunk_slots.release()
            fc.progress.set()

    def _failed(self, stats: FileStats, err: DomasError) -> None:
        stats.status = "failed"
        stats.error = str(err)
        stats.error_kind = err.kind
        stats.exit_code = err.exit_code
        if stats not in self.acct.files:
            self.acct.add_file(stats)
        self.acct.add_error(err.kind)
        self.reporter.file_failed(stats)


def _once(fn):
    """`fn` wrapped to run on the first call only."""
    done = []

    def call() -> None:
        if not done:
            done.append(True)
            fn()
    return call


def _make_dirs(dirs) -> None:
    for store, path in dirs:
        store.makedirs(path)
