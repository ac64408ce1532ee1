"""Publishing to the beamline's message bus with a local spool: nothing is lost while the broker
is unreachable, and everything goes out in the order it was published.

Every message is first appended to a SQLite spool on local disk, then sent oldest first with
publisher confirms; a message leaves the spool only once the broker confirmed it. So a broker that
is down (or a network that is cut) only delays messages, and a crash between the confirm and the
delete sends one message twice at most -- the archiver's consumer is idempotent. Used by the Bluesky
callback (domas.bluesky.Publisher) and by `domas publish`. Wire format: domas.archive.sources.messages.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlsplit

from domas.errors import DomasError
from domas.sqlite import open_db

WINDOW = 256            # messages in flight (awaiting confirms) at once


class BusUnavailable(DomasError):
    """The message bus cannot be reached; the messages are kept in the local spool and sent later."""

    retriable = True
    exit_code = 69


def default_spool(state_dir: str | os.PathLike | None = None) -> Path:
    base = Path(state_dir).expanduser() if state_dir else Path.home() / ".local" / "state" / "domas"
    return base / "publish-spool.sqlite"


class Spool:
    """An ordered, durable queue of (exchange, routing key, body); safe to share between threads."""

    def __init__(self, path: str | os.PathLike) -> None:
        path = Path(path)
        self._db = open_db(path, what="publish spool", busy_timeout=30)
        self._db.execute("CREATE TABLE IF NOT EXISTS spool (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                         "exchange TEXT NOT NULL, routing_key TEXT NOT NULL, body BLOB NOT NULL)")
        self._lock = threading.Lock()

    def put(self, exchange: str, routing_key: str, body: bytes) -> None:
        with self._lock:
            self._db.execute("INSERT INTO spool (exchange, routing_key, body) VALUES (?, ?, ?)",
                             (exchange, routing_key, body))

    def oldest(self, n: int) -> list[tuple[int, str, str, bytes]]:
        with self._lock:
            return self._db.execute("SELECT seq, exchange, routing_key, body FROM spool ORDER BY seq LIMIT ?",
                                    (n,)).fetchall()

    def remove_through(self, seq: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM spool WHERE seq <= ?", (seq,))

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM spool").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()


async def drain(spool: Spool, url: str, *, timeout: float = 5.0, connection=None) -> int:
    """Send everything in the spool, oldest first; returns how many were sent.
    BusUnavailable if the broker cannot be reached or goes away (what is left stays spooled)."""
    import aio_pika

    sent = 0
    try:
        conn = connection or await aio_pika.connect(url, timeout=timeout)
        try:
            channel = await conn.channel()
            exchanges: dict[str, object] = {}
            while rows := spool.oldest(WINDOW):
                for name in {r[1] for r in rows} - set(exchanges):
                    exchanges[name] = await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)
                # Published in order (aiormq sends them under one FIFO lock); confirms awaited together.
                await asyncio.wait_for(asyncio.gather(*(
                    exchanges[ex].publish(aio_pika.Message(body, content_type="application/json",
                                                           delivery_mode=aio_pika.DeliveryMode.PERSISTENT), rk)
                    for _, ex, rk, body in rows)), timeout=max(timeout, 30))
                spool.remove_through(rows[-1][0])
                sent += len(rows)
        finally:
            if connection is None:
                await conn.close()
    except (OSError, RuntimeError, asyncio.TimeoutError, aio_pika.exceptions.AMQPException) as e:
        raise BusUnavailable(f"the message bus at {safe_url(url)} cannot be reached ({why_unreachable(e)}); "
                             f"{len(spool)} message(s) kept in the spool, sent by the next publish") from None
    return sent


def bus_url_problem(url: str) -> str | None:
    """What is wrong with a message bus URL (amqp[s]://user:password@host:port/vhost), or None."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "is not a valid URL (a port outside 1-65535, or a bracket left open)"
    if parts.scheme not in ("amqp", "amqps"):
        return "is not an amqp:// or amqps:// URL"
    if not parts.hostname:
        return "names no host (amqp://user:password@host:5672/)"
    if port == 0:
        return "has port 0; give the broker's port (5672 by default)"
    return None


def why_unreachable(err: BaseException) -> str:
    """Why the broker could not be reached, in a few words (never the library's raw text)."""
    import aio_pika

    if isinstance(err, socket.gaierror) or (isinstance(err, OSError) and (err.errno or 0) < 0):
        return "its host name cannot be resolved"          # getaddrinfo's codes are negative
    if isinstance(err, (asyncio.TimeoutError, TimeoutError)):
        return "no answer in time"
    if isinstance(err, aio_pika.exceptions.ProbableAuthenticationError):
        return "the broker refused the user name or password, or the virtual host"
    if isinstance(err, OSError) and err.errno:
        return os.strerror(err.errno).lower()
    if isinstance(err, aio_pika.exceptions.AMQPException):
        return "the broker closed the connection"
    return type(err).__name__


def file_closed_body(path: str, size: int, adler32: str = "") -> bytes:
    msg = {"path": path, "size": size}
    if adler32:
        msg["adler32"] = adler32.lower()
    return json.dumps(msg).encode()


def safe_url(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://{rest.rsplit('@', 1)[1]}"
    return url
