"""A Bluesky callback that ships a RunEngine's documents to domas over the message bus:

    from bluesky import RunEngine
    from domas.bluesky import Publisher
    RE = RunEngine({})
    RE.subscribe(Publisher("amqp://user:password@bus.example:5672/"))

Each document goes to the exchange (default `domas`) with the routing key `bluesky.<name>` as
`{"name": ..., "doc": ...}` (see domas.archive.sources.messages). The callback never blocks the
RunEngine on the network: it appends the document to a local spool (SQLite, on disk) and a
background thread sends the spool in order, so documents published while the broker is down are
kept and replayed, in order, when it returns. `flush(timeout)` waits until the spool is empty;
`close()` stops the thread (what is unsent stays spooled for the next Publisher).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from pathlib import Path

from domas.errors import UsageError
from domas.publish import Spool, bus_url_problem, default_spool, drain, safe_url

log = logging.getLogger("domas.bluesky")


def _jsonable(value):
    """numpy scalars and arrays (ophyd readings) as plain JSON values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return str(value)


class Publisher:
    def __init__(self, url: str, exchange: str = "domas", *, spool: str | Path | None = None,
                 retry_seconds: float = 1.0) -> None:
        if problem := bus_url_problem(url):
            raise UsageError(f"Publisher: the message bus URL {safe_url(url)!r} {problem}")
        self.url, self.exchange = url, exchange
        self.spool_path = Path(spool or default_spool())
        self.spool = Spool(self.spool_path)
        self.retry_seconds = retry_seconds
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._closing = False
        self.connected = False
        self._thread = threading.Thread(target=self._run, name="domas-bluesky-publisher", daemon=True)
        self._thread.start()

    def __call__(self, name: str, doc: dict) -> None:
        body = json.dumps({"name": name, "doc": doc}, default=_jsonable).encode()
        self._idle.clear()
        self.spool.put(self.exchange, f"bluesky.{name}", body)
        self._wake.set()

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every document was confirmed by the broker; False if still spooled at timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.spool) == 0:
                return True
            self._wake.set()
            self._idle.wait(0.05)
        return len(self.spool) == 0

    def close(self) -> None:
        self._closing = True
        self._wake.set()
        self._thread.join(timeout=30)
        self.spool.close()

    # -- the sender thread -----------------------------------------------------------------------
    def _run(self) -> None:
        asyncio.run(self._send_forever())

    async def _send_forever(self) -> None:
        import aio_pika

        conn, warned = None, False
        while not self._closing:
            try:
                if conn is None or conn.is_closed:
                    conn = await aio_pika.connect(self.url, timeout=5)
                    self.connected, warned = True, False
                await drain(self.spool, self.url, connection=conn)
                self._idle.set()
                await asyncio.to_thread(self._wake.wait, 1.0)
                self._wake.clear()
            except Exception as e:          # whatever the broker or network did: keep the spool, retry
                if not warned:
                    log.warning("message bus unreachable (%s): documents are spooled in %s and sent when it "
                                "returns", str(e) or type(e).__name__, self.spool_path)
                    warned = True
                self.connected = False
                if conn is not None:
                    await asyncio.gather(conn.close(), return_exceptions=True)
                conn = None
                self._idle.set()
                await asyncio.to_thread(self._wake.wait, self.retry_seconds)
                self._wake.clear()
        if conn is not None:
            await asyncio.gather(conn.close(), return_exceptions=True)
