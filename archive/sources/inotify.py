"""The filesystem-events source: Linux inotify (through `inotify_simple`) on the beamline tree.

Every directory below the root is watched (new ones as they appear). A file closed after writing
(IN_CLOSE_WRITE) or moved in (IN_MOVED_TO) is reported at once, without the stability wait: its
writer is done with it. A directory that appears (created or moved in) is watched and listed; its
files that were moved in with it are reported at once, files created in it before its watch
existed are kept "settling" (re-stat each pass) until they close or stay unchanged for the
stability window. So a huge tree is not listed every pass; the tree scan (scan.py) stays as the
safety net and runs every [source] full_scan_seconds, and at once when the kernel's event queue
overflowed (IN_Q_OVERFLOW: events were lost).

When a watch cannot be added (the watch limit, fs.inotify.max_user_watches, is reached: ENOSPC),
that directory and everything below it is "unwatched": this source lists that part every pass and
takes its files once they stayed unchanged for the stability window (the tree scan's rule), while
the watched part goes on by events. It is said once in the log; the metrics
domas_archiver_fs_unwatched_dirs (subtrees listed instead) and domas_archiver_fs_watch_failures
count it. This holds with or without the tree-scan source ([source] scan = false).

Symbolic links are never reported here (the scan applies its rule: links leaving the root are
refused); nor are part files. The event
loop reads the events as they come (so a new directory is watched at once) and sets `ready`; the
archiver's worker thread polls (a lock keeps the two apart).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import stat
import threading
import time

import inotify_simple
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from domas.archive.discovery import StabilityTracker
from domas.archive.sources.base import Batch, Found, Source
from domas.transfer.parts import PART_SUFFIX

from .scan import ScanSource

log = logging.getLogger("domas.archiver")

F = inotify_simple.flags
DIR_MASK = F.CLOSE_WRITE | F.MOVED_TO | F.CREATE | F.DELETE_SELF | F.MOVE_SELF | F.ONLYDIR


class InotifySource(Source):
    name = "inotify"

    def __init__(self, root: str, stability_seconds: float, scan: ScanSource | None = None) -> None:
        self.root = os.path.abspath(root)
        self.window = stability_seconds
        self.scan = scan                         # the safety net to wake on lost events
        self.inotify: inotify_simple.INotify | None = None
        self.dirs: dict[int, str] = {}           # watch descriptor -> directory (absolute)
        self.settling: dict[str, tuple[int, float, float]] = {}   # relpath -> size, mtime, since
        self.offered: dict[str, Found] = {}      # reported, not committed yet
        self.events = 0
        self.overflows = 0
        self.watch_failed = False
        self.watch_failures = 0                  # directories whose watch could not be added
        self.unwatched: set[str] = set()         # tops of the subtrees no watch covers (listed instead)
        self.fallback = StabilityTracker(stability_seconds)    # the tree-scan rule for that part
        self._loop: asyncio.AbstractEventLoop | None = None
        self.lock = threading.Lock()             # the loop reads events, the archiver's thread polls

    # -- lifecycle -----------------------------------------------------------------------------
    def open(self) -> None:
        """Create the inotify instance and watch the tree (blocking; start() runs it in a thread)."""
        self.inotify = inotify_simple.INotify(nonblocking=True)
        os.makedirs(self.root, exist_ok=True)
        self._watch_tree(self.root, report=None)

    async def start(self) -> None:
        await asyncio.to_thread(self.open)
        self._loop = asyncio.get_running_loop()
        self.ready = asyncio.Event()
        self._loop.add_reader(self.inotify.fileno(), self._readable)

    async def close(self) -> None:
        if self.inotify is not None:
            if self._loop is not None:
                self._loop.remove_reader(self.inotify.fileno())
            with self.lock:
                self.inotify.close()
                self.inotify = None

    def _readable(self) -> None:
        """Read events as they come (in the event loop): a new directory is watched within
        milliseconds, before its writer has finished a file in it."""
        with self.lock:
            if self.inotify is not None:
                self._drain(time.time())
        self.ready.set()

    # -- watches -------------------------------------------------------------------------------
    def _watch(self, path: str) -> bool:
        try:
            wd = self.inotify.add_watch(path, DIR_MASK)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR):
                return False                     # gone (or replaced) meanwhile
            if not self.watch_failed:
                log.warning("inotify cannot watch %r (%s): from now on the directories without a watch are "
                            "listed every pass instead (said once; the metric domas_archiver_fs_unwatched_dirs "
                            "counts them); raise fs.inotify.max_user_watches", path, os.strerror(e.errno or 0))
            self.watch_failed = True
            self.watch_failures += 1
            self.unwatched.add(path)
            return False
        self.dirs[wd] = path
        return True

    def _watch_tree(self, top: str, report: str | None, now: float = 0.0) -> None:
        """Watch `top` and every directory below it. With `report`, its files are reported:
        "moved" (moved in whole: at once) or "created" (may still be written: settling)."""
        for dirpath, dirnames, filenames in os.walk(top):
            if not self._watch(dirpath):
                dirnames[:] = []
                continue
            if report is not None:
                for name in filenames:
                    self._file(os.path.join(dirpath, name), now, closed=(report == "moved"))

    # -- events --------------------------------------------------------------------------------
    def _rel(self, path: str) -> str:
        return os.path.relpath(path, self.root)

    def _file(self, path: str, now: float, closed: bool) -> None:
        if path.endswith(PART_SUFFIX):
            return
        try:
            st = os.lstat(path)
        except OSError:
            return
        if not stat.S_ISREG(st.st_mode):
            return                               # links are the scan's to judge
        rel = self._rel(path)
        if closed:
            self.settling.pop(rel, None)
            self.offered[rel] = Found(rel, st.st_size, st.st_mtime, closed=True)
        else:
            prev = self.settling.get(rel)
            if prev is None or prev[:2] != (st.st_size, st.st_mtime):
                self.settling[rel] = (st.st_size, st.st_mtime, now)

    def _drain(self, now: float) -> None:
        while True:
            try:
                events = self.inotify.read(timeout=0)
            except BlockingIOError:
                events = []
            if not events:
                return
            for ev in events:
                self.events += 1
                self._event(ev, now)

    def _event(self, ev, now: float) -> None:
        if ev.mask & F.Q_OVERFLOW:
            self.overflows += 1
            log.warning("inotify event queue overflowed (fs.inotify.max_queued_events): the tree is "
                        "scanned in full")
            if self.scan is not None:
                self.scan.request_rescan()
            return
        if ev.mask & F.IGNORED:
            self.dirs.pop(ev.wd, None)
            return
        parent = self.dirs.get(ev.wd)
        if parent is None or not ev.name:
            return
        path = os.path.join(parent, ev.name)
        if ev.mask & F.ISDIR:
            if ev.mask & (F.CREATE | F.MOVED_TO):
                self._watch_tree(path, "moved" if ev.mask & F.MOVED_TO else "created", now)
            return
        if ev.mask & (F.CLOSE_WRITE | F.MOVED_TO):
            self._file(path, now, closed=True)

    def _settled(self, now: float) -> None:
        for rel, (size, mtime, since) in list(self.settling.items()):
            try:
                st = os.lstat(os.path.join(self.root, rel))
            except OSError:
                del self.settling[rel]
                continue
            if (st.st_size, st.st_mtime) != (size, mtime):
                self.settling[rel] = (st.st_size, st.st_mtime, now)
            elif now - since >= self.window:
                del self.settling[rel]
                self.offered[rel] = Found(rel, size, mtime)

    def _unwatched_listing(self, tops: list[str]) -> dict[str, tuple[int, float]]:
        """The tree scan of the part no watch covers: {relpath: (size, mtime)} of its regular files
        (links are the tree scan's to judge, part files are not data)."""
        listing: dict[str, tuple[int, float]] = {}
        for top in tops:
            for dirpath, _, filenames in os.walk(top):
                for name in filenames:
                    if name.endswith(PART_SUFFIX):
                        continue
                    path = os.path.join(dirpath, name)
                    try:
                        st = os.lstat(path)
                    except OSError:
                        continue
                    if stat.S_ISREG(st.st_mode):
                        listing[self._rel(path)] = (st.st_size, st.st_mtime)
        return listing

    # -- the Source contract -------------------------------------------------------------------
    def poll(self, now: float) -> Batch:
        with self.lock:
            self.unwatched = {top for top in self.unwatched if os.path.isdir(top)}
            tops = sorted(self.unwatched)
        listing = self._unwatched_listing(tops) if tops else {}   # outside the lock: events go on meanwhile
        with self.lock:
            if self.inotify is not None:
                self._drain(now)
                self._settled(now)
            for ready in self.fallback.observe(listing, now):
                self.offered[ready.relpath] = Found(ready.relpath, ready.size, ready.mtime)
            return Batch(found=list(self.offered.values()), token=dict(self.offered))

    def committed(self, batch: Batch) -> None:
        with self.lock:
            for rel, found in (batch.token or {}).items():
                if self.offered.get(rel) == found:
                    del self.offered[rel]

    def collectors(self) -> tuple:
        return (InotifyCollector(self),)


class InotifyCollector:
    def __init__(self, source: InotifySource) -> None:
        self.source = source

    def collect(self):
        yield CounterMetricFamily("domas_archiver_fs_events", "inotify events read from the beamline tree",
                                  value=self.source.events)
        yield CounterMetricFamily("domas_archiver_fs_overflows", "inotify queue overflows (each one triggers "
                                  "a full tree scan)", value=self.source.overflows)
        yield GaugeMetricFamily("domas_archiver_fs_watched_dirs", "directories watched with inotify",
                                value=len(self.source.dirs))
        yield GaugeMetricFamily("domas_archiver_fs_unwatched_dirs", "subtrees no inotify watch covers (the watch "
                                "limit was reached): listed every pass instead", value=len(self.source.unwatched))
        yield CounterMetricFamily("domas_archiver_fs_watch_failures", "directories whose inotify watch could not "
                                  "be added (fs.inotify.max_user_watches)", value=self.source.watch_failures)
