"""Discovery sources: where the archiver learns that files exist and what they are about.

One small interface, one module per source, chosen in the configuration ([source] section):
- `scan` (scan.py): lists the beamline tree every pass and takes a file once it stopped changing
  for the stability window. On by default: the safety net that finds what no one announced.
- `inotify` (inotify.py): filesystem events on the beamline tree, on with `[source] inotify = true`:
  closed and moved-in files are taken at once, and the tree scan runs only every
  `full_scan_seconds` (and when the event queue overflowed).
- `amqp` (amqp.py): a RabbitMQ consumer of Bluesky documents and detector "file closed" messages,
  on when `[source.amqp] url` is set.

Contract of a Source (the archiver calls poll() and committed() from a worker thread, start() and
close() in its event loop):
- `poll(now)` returns a Batch: every item offered since the last `committed()` plus new ones, so
  a batch whose catalogue write failed is offered again. Items are idempotent: applying one twice
  leaves the catalogue as applying it once.
- `committed(batch)` is called only after every item of that batch is in the catalogue; a source
  backed by a queue acknowledges its messages then, never earlier.
- `ready` (an asyncio.Event, or None) is set when the source has news, so the archiver runs a
  pass at once instead of waiting for its interval.
A new source (Kafka) is one module with a class like these and one config section.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from .base import Batch, Source

log = logging.getLogger("domas.archiver")


def from_config(cfg, *, clock=None) -> list[Source]:
    """The sources the configuration turns on, the tree scan first."""
    from .scan import ScanSource

    sources: list[Source] = []
    inotify = cfg.source.inotify
    if inotify and "://" in cfg.storage.beamline:
        log.warning("[source] inotify: the beamline root %r is not a local directory; the tree scan is used",
                    cfg.storage.beamline)
        inotify = False
    scan = None
    if cfg.source.scan:
        scan = ScanSource(cfg.storage.beamline, cfg.policy.stability_seconds,
                          every=cfg.source.full_scan_seconds if inotify else 0.0)
        sources.append(scan)
    if inotify:
        from .inotify import InotifySource

        sources.append(InotifySource(cfg.storage.beamline, cfg.policy.stability_seconds, scan=scan))
    if cfg.source.amqp.url:
        from .amqp import AmqpSource

        sources.append(AmqpSource(cfg.source.amqp, cfg.storage.beamline, cfg.state_path(), catalogue=cfg.catalogue))
    return sources


@contextlib.asynccontextmanager
async def running(sources: list[Source]):
    """Start the sources' background work for the duration of the block."""
    started: list[Source] = []
    try:
        for s in sources:
            await s.start()
            started.append(s)
        yield
    finally:
        for s in reversed(started):
            await s.close()


GATHER_SECONDS = 0.05     # after the first news, let a burst gather: one catalogue write per burst


async def wait_for_news(stop: asyncio.Event, sources: list[Source], interval: float,
                        gather: float = GATHER_SECONDS) -> None:
    """Sleep until `interval` passed, `stop` is set or a source has news (then clear its flag).

    News is taken `gather` seconds after it arrives, so that a burst of messages becomes one pass
    (one dataset write per burst rather than per message): a little latency for much throughput."""
    events = [s.ready for s in sources if s.ready is not None]
    tasks = [asyncio.ensure_future(e.wait()) for e in (stop, *events)]
    try:
        await asyncio.wait(tasks, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
    if not stop.is_set() and any(e.is_set() for e in events) and gather > 0:
        await asyncio.sleep(gather)
    for e in events:
        e.clear()


class SourcesCollector:
    """Serves the metrics of every source (set `sources` once the archiver has them)."""

    def __init__(self) -> None:
        self.sources: list[Source] = []

    def collect(self):
        for source in self.sources:
            for collector in source.collectors():
                yield from collector.collect()
