"""The RabbitMQ source: Bluesky documents and "file closed" messages from the beamline's bus.

Topology (declared on every connect, all durable): the topic exchange `[source.amqp] exchange`
(default `domas`); the queue `[source.amqp] queue` (default `domas.archiver`) bound to `bluesky.#`
and `file.#`; the dead-letter queue `<queue>.dead`. Message formats: messages.py.

Invariants:
- Nothing lost: a message is acknowledged only after the archiver committed what it says to the
  catalogue (Source.committed). A malformed one is first published to the dead-letter queue with
  the reason in the header `x-domas-reason` (publisher-confirmed), then acknowledged; it never
  stops the consumer.
- Nothing doubled: every item is idempotent (annotations only fill empty fields; a file already
  catalogued with the same size and mtime is skipped), so a redelivery after a crash or a broker
  restart changes nothing.
- Acks go out per batch as one `multiple` ack of the highest delivery tag: every unacknowledged
  delivery below it is in that batch, because poll() offers every delivery received so far.
- When the connection drops, deliveries not yet acknowledged are forgotten (the broker delivers
  them again) and the consumer reconnects with jittered exponential backoff.
- Runs: the dataset of each start document is kept in `<state_dir>/amqp-runs.sqlite`, so the
  descriptor and stop documents of a run find it after a restart.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from domas.archive.sources.base import Annotation, Batch, Found, Source
from domas.errors import DomasError, InvalidMessage, NotFound
from domas.retry import backoff_delay
from domas.sqlite import open_db
from domas.transfer.storage import resolve

from .messages import (Document, FileClosed, annotation, parse, relative_to_root, run_files, start_dataset,
                       start_prefix)

log = logging.getLogger("domas.archiver.amqp")
RESULTS = ("committed", "dead_letter")


@dataclass
class Delivery:
    generation: int            # the connection it came on; acks on a later one are meaningless
    message: object            # aio_pika IncomingMessage
    item: FileClosed | Document | None
    reason: str = ""           # why it is refused ("" = fine so far)


class RunIndex:
    """Run uid -> dataset path, durable (a stop may arrive after a restart)."""

    def __init__(self, path: Path) -> None:
        self._db = open_db(path, what="message-bus run index")
        self._db.execute("CREATE TABLE IF NOT EXISTS runs (uid TEXT PRIMARY KEY, dataset TEXT NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS file_checks (uid TEXT PRIMARY KEY, dataset TEXT NOT NULL, "
                         "due REAL NOT NULL)")
        self._db.execute("CREATE INDEX IF NOT EXISTS file_checks_due ON file_checks(due)")
        self._cache: dict[str, str] = {}
        self._lock = threading.Lock()

    def _many(self, sql: str, rows) -> None:
        """One transaction for a batch (the connection autocommits: executemany alone commits per row)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(sql, rows)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def put_many(self, runs: dict[str, str]) -> None:
        if runs:
            self._many("INSERT OR IGNORE INTO runs VALUES (?, ?)", list(runs.items()))
            with self._lock:
                self._cache.update(runs)

    def get(self, uid: str) -> str | None:
        with self._lock:
            if uid not in self._cache:
                row = self._db.execute("SELECT dataset FROM runs WHERE uid=?", (uid,)).fetchone()
                if row is None:
                    return None
                self._cache[uid] = row[0]
            return self._cache[uid]

    def add_checks(self, checks: dict[str, tuple[str, float]]) -> None:
        """Runs that stopped: look for their files once `due` has passed."""
        if checks:
            self._many("INSERT OR IGNORE INTO file_checks VALUES (?, ?, ?)",
                       [(uid, ds, due) for uid, (ds, due) in checks.items()])

    def due_checks(self, now: float, limit: int = 100) -> list[tuple[str, str]]:
        with self._lock:
            return self._db.execute("SELECT uid, dataset FROM file_checks WHERE due <= ? ORDER BY due LIMIT ?",
                                    (now, limit)).fetchall()

    def checks_done(self, uids: list[str]) -> None:
        if uids:
            self._many("DELETE FROM file_checks WHERE uid = ?", [(u,) for u in uids])

    def close(self) -> None:
        self._db.close()


class AmqpSource(Source):
    name = "amqp"

    def __init__(self, cfg, root: str, state_dir: Path, *, catalogue=None, rng: random.Random | None = None) -> None:
        self.cfg, self.root, self.state_dir = cfg, root, Path(state_dir)
        self.catalogue_cfg, self._cat = catalogue, None     # read to find the files of finished runs
        self.runs_without_files = 0
        self.dead_queue = f"{cfg.queue}.dead"
        self.runs = RunIndex(Path(state_dir) / "amqp-runs.sqlite")
        self.counts = dict.fromkeys(RESULTS, 0)
        self.connected = False
        self.connects = 0
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._new: list[Delivery] = []
        self._offered: list[Delivery] = []
        self._generation = 0
        self._channel = None
        self._closing = asyncio.Event()
        self._task: asyncio.Task | None = None

    # -- the consumer (event loop) -----------------------------------------------------------------
    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.ready = asyncio.Event()
        logging.getLogger("aiormq").setLevel(logging.CRITICAL)     # outages are logged once, below
        self._task = asyncio.create_task(self._consume_forever())

    async def close(self) -> None:
        self._closing.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        self.runs.close()
        if self._cat is not None:
            self._cat.close()

    async def _consume_forever(self) -> None:
        import aio_pika

        attempt, warned = 0, False
        while not self._closing.is_set():
            conn = None
            try:
                conn = await aio_pika.connect(self.cfg.url, timeout=5)
                lost = asyncio.Event()
                conn.close_callbacks.add(lambda *_: lost.set())
                await self._subscribe(conn, lost)
                attempt, warned = 0, False
                log.info("consuming %s from %s", self.cfg.queue, _safe_url(self.cfg.url))
                await _first(lost.wait(), self._closing.wait())
                if not self._closing.is_set():
                    log.warning("lost the message bus %s; reconnecting (unacknowledged messages come again)",
                                _safe_url(self.cfg.url))
            except (OSError, RuntimeError, asyncio.TimeoutError, aio_pika.exceptions.AMQPException) as e:
                if not warned:
                    log.warning("message bus %s: %s; retrying with backoff", _safe_url(self.cfg.url),
                                str(e) or type(e).__name__)
                    warned = True
            finally:
                self._forget_unacked()
                if conn is not None:
                    await asyncio.gather(conn.close(), return_exceptions=True)
            if not self._closing.is_set():
                attempt += 1
                delay = backoff_delay(attempt, 0.2, 5.0, self._rng)
                await _first(asyncio.sleep(delay), self._closing.wait())

    async def _subscribe(self, conn, lost: asyncio.Event) -> None:
        import aio_pika

        ch = await conn.channel()
        ch.close_callbacks.add(lambda *_: lost.set())
        await ch.set_qos(prefetch_count=self.cfg.prefetch)
        ex = await ch.declare_exchange(self.cfg.exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        await ch.declare_queue(self.dead_queue, durable=True)
        queue = await ch.declare_queue(self.cfg.queue, durable=True)
        for key in ("bluesky.#", "file.#"):
            await queue.bind(ex, key)
        with self._lock:
            self._generation += 1
            self._channel = ch
            generation = self._generation
        await queue.consume(partial(self._on_message, generation))
        self.connected = True
        self.connects += 1

    async def _on_message(self, generation: int, message) -> None:
        try:
            item, reason = parse(message.routing_key or "", message.body), ""
        except DomasError as e:
            item, reason = None, str(e)
        with self._lock:
            self._new.append(Delivery(generation, message, item, reason))
        self.ready.set()

    def _forget_unacked(self) -> None:
        self.connected = False
        with self._lock:
            self._channel = None
            self._new.clear()
            self._offered.clear()

    # -- the archiver's side (worker thread) --------------------------------------------------------
    def poll(self, now: float) -> Batch:
        with self._lock:
            self._offered += self._new
            self._new = []
            deliveries, generation = list(self._offered), self._generation
        batch, settled, runs, checks = Batch(), [], {}, {}
        for d in deliveries:
            if d.generation != generation:
                continue
            reason = d.reason
            if not reason:
                try:
                    self._take(d.item, batch, runs, checks, now)
                except DomasError as e:
                    reason = str(e)
                except (ArithmeticError, ValueError, TypeError, KeyError, OSError) as e:   # e.g. a time in year 10^12
                    reason = f"{d.message.routing_key}: the message could not be read ({type(e).__name__}: {e})"
            settled.append((d, reason))
        self.runs.put_many(runs)
        self.runs.add_checks(checks)
        batch.token = (generation, settled, self._check_files(now, batch))
        return batch

    def _take(self, item, batch: Batch, runs: dict[str, str], checks: dict, now: float) -> None:
        if isinstance(item, FileClosed):
            batch.found.append(self._located(item))
            return
        doc, prefix = item.doc, ""
        if item.name == "start":
            root = resolve(self.root)[1]
            dataset = start_dataset(doc, root)
            prefix = start_prefix(doc, root, dataset)
            runs[doc["uid"]] = dataset
        elif item.name in ("descriptor", "stop"):
            dataset = runs.get(doc["run_start"]) or self.runs.get(doc["run_start"])
            if dataset is None:
                raise InvalidMessage(f"bluesky {item.name} document of run {doc['run_start']}, whose start "
                                     "document never arrived")
            if item.name == "stop":
                stopped = doc.get("time") if isinstance(doc.get("time"), (int, float)) else now
                checks[doc["run_start"]] = (dataset, stopped + self.cfg.files_grace)
        else:
            return                                   # events: their counts come with the stop document
        ann = annotation(item.name, doc, dataset, prefix)
        if ann is not None:
            batch.annotations.append(ann)

    def _check_files(self, now: float, batch: Batch) -> list[str]:
        """Runs stopped more than files_grace ago: record how many files arrived (a warning if none)."""
        checked = []
        try:
            due = self.runs.due_checks(now)
            if due and self._cat is None and self.catalogue_cfg is not None:
                from domas.catalogue import open_catalogue

                self._cat = open_catalogue(self.catalogue_cfg, self.state_dir)
            for uid, dataset in (due if self._cat is not None else ()):
                scan = self._cat.get_scan(uid)
                if scan is None:
                    if self._recorded_in_metadata(uid, dataset):
                        checked.append(uid)          # a run from before scan records: left as it was
                    continue                         # else its start is not committed yet: next time
                n = run_files(scan, ((f.path, f.mtime) for f in self._cat.files_of(scan.dataset)),
                              self.cfg.files_grace)
                if n == 0:
                    log.warning("run %s (scan %s, %s) stopped and no file of it arrived within %g s", uid,
                                "?" if scan.scan_id is None else scan.scan_id, dataset, self.cfg.files_grace)
                    self.runs_without_files += 1
                batch.annotations.append(Annotation(dataset, {}, scans={uid: {"files": n}}))
                checked.append(uid)
        except DomasError as e:
            log.warning("looking for the files of finished runs: %s", e)
        return checked

    def _recorded_in_metadata(self, uid: str, dataset: str) -> bool:
        """The run is one a catalogue from before scan records keeps inside its dataset's metadata
        (its pending check would otherwise wait for a record that never comes)."""
        ds = self._cat.dataset_by_path("/" + dataset)
        return ds is not None and uid in (ds.metadata.get("scans") or {})

    def _located(self, msg: FileClosed) -> Found:
        store, root = resolve(self.root)
        rel = relative_to_root(msg.path, root)
        full = f"{root.rstrip('/')}/{rel}"
        try:
            target = store.realpath(full)
            st = store.stat_follow(full)
        except NotFound:
            raise InvalidMessage(f"file.closed: {msg.path} does not exist") from None
        real_root = store.realpath(root).rstrip("/") + "/"
        if not target.startswith(real_root):
            raise InvalidMessage(f"file.closed: {msg.path} leads outside the beamline root")
        if st.is_dir:
            raise InvalidMessage(f"file.closed: {msg.path} is a directory")
        if st.size != msg.size:
            raise InvalidMessage(f"file.closed: {msg.path} has {st.size} bytes on disk, the writer announced "
                                 f"{msg.size}; left to the tree scan")
        return Found(rel, st.size, st.mtime, msg.adler32, closed=True)

    def committed(self, batch: Batch) -> None:
        generation, settled, checked = batch.token
        self.runs.checks_done(checked)
        done = {id(d) for d, _ in settled}
        with self._lock:
            self._offered = [d for d in self._offered if id(d) not in done]
        if not settled:
            return
        future = asyncio.run_coroutine_threadsafe(self._settle(generation, settled), self.loop)
        try:
            future.result(timeout=60)
        except Exception as e:          # the connection went away: the broker delivers them again
            log.warning("could not acknowledge %d message(s): %s; they will be delivered again", len(settled),
                        str(e) or type(e).__name__)

    async def _settle(self, generation: int, settled: list[tuple[Delivery, str]]) -> None:
        import aio_pika

        ch = self._channel
        if ch is None or generation != self._generation:
            return
        for d, reason in settled:
            if reason:
                log.warning("dead-lettered a %s message: %s", d.message.routing_key, reason)
                headers = {"x-domas-reason": reason, "x-domas-routing-key": d.message.routing_key or ""}
                await ch.default_exchange.publish(
                    aio_pika.Message(d.message.body, headers=headers, content_type=d.message.content_type,
                                     delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key=self.dead_queue)
        last = max(settled, key=lambda s: s[0].message.delivery_tag)[0].message
        await last.ack(multiple=True)
        dead = sum(1 for _, reason in settled if reason)
        self.counts["dead_letter"] += dead
        self.counts["committed"] += len(settled) - dead

    def collectors(self) -> tuple:
        return (AmqpCollector(self),)


class AmqpCollector:
    def __init__(self, source: AmqpSource) -> None:
        self.source = source

    def collect(self):
        msgs = CounterMetricFamily("domas_archiver_bus_messages", "Bus messages acknowledged, by result "
                                   "(committed to the catalogue, or dead-lettered as malformed)", labels=["result"])
        for result in RESULTS:
            msgs.add_metric([result], self.source.counts[result])
        yield msgs
        yield CounterMetricFamily("domas_archiver_runs_without_files", "Bluesky runs that stopped and of which no "
                                  "file arrived within [source.amqp] files_grace", value=self.source.runs_without_files)
        yield GaugeMetricFamily("domas_archiver_bus_connected", "1 while the bus consumer is connected",
                                value=1.0 if self.source.connected else 0.0)


async def _first(*aws) -> None:
    """Wait until the first of these awaitables finishes; cancel the others."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()


def _safe_url(url: str) -> str:
    """The URL without its password, for logs."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://{rest.rsplit('@', 1)[1]}"
    return url


__all__ = ["AmqpSource", "RunIndex"]
