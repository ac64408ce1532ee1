"""`domas publish`: announce to the archiver, over the message bus, that a detector writer closed a
file, so it is taken at once (no stability wait) and checked against the writer's adler32.

Messages go through the local spool (domas.publish): while the bus is unreachable they are kept on
disk and sent, in order, by the next `domas publish` (or `domas publish replay`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import sys

from domas.config import Config
from domas.errors import ConfigError, InvalidMessage, NotFound, UsageError
from domas.rootpath import relative_to_root

HELP = """\
Tell the archiver that a file is closed (taken at once, no stability wait):

  domas publish closed /data/beamline/B1/202611/Data/BT0001/raw/scan_0001.h5 --adler32 0a1b2c3d

The bus is [source.amqp] url in the configuration, or --url. While it is unreachable the message
waits in a local spool and is sent, in order, by the next `domas publish` or `domas publish replay`.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("publish", help="announce closed files on the message bus", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    ps = p.add_subparsers(dest="publish_command", metavar="KIND")
    closed = ps.add_parser("closed", help="a detector writer closed PATH")
    closed.add_argument("path", metavar="PATH")
    closed.add_argument("--size", type=int, help="its size in bytes (default: as on disk)")
    closed.add_argument("--adler32", metavar="HEX", help="its adler32 as the writer computed it (8 hex digits)")
    replay = ps.add_parser("replay", help="send what waits in the spool")
    for q in (closed, replay):
        q.add_argument("--url", help="the bus, amqp://user:password@host:5672/ (default: [source.amqp] url)")
        q.add_argument("--exchange", help="default: [source.amqp] exchange (domas)")
        q.add_argument("--spool", metavar="FILE", help="default: <state_dir>/publish-spool.sqlite")
        q.add_argument("--timeout", type=float, default=5.0, help="seconds to reach the bus (default 5)")
    p.set_defaults(handler=run_publish)


def local_root(beamline: str) -> str:
    """The beamline root as a path on this host ("" if none is configured, or it is a remote store's)."""
    if beamline.startswith("file://"):
        return beamline[len("file://"):]
    return "" if "://" in beamline else os.path.abspath(beamline) if beamline else ""


def run_publish(args: argparse.Namespace, cfg: Config) -> int:
    from domas.publish import (BusUnavailable, Spool, safe_url, bus_url_problem, default_spool, drain,
                               file_closed_body)

    logging.getLogger("aiormq").addHandler(logging.NullHandler())     # its errors become one sentence below

    if args.publish_command not in ("closed", "replay"):
        raise InvalidMessage("say what to publish: domas publish closed PATH (or domas publish replay)")
    url = args.url or cfg.source.amqp.url
    if not url:
        raise ConfigError("source.amqp.url: no message bus configured; give --url amqp://host:5672/ or set "
                          "[source.amqp] url")
    problem = bus_url_problem(url)
    if problem and args.url:
        raise UsageError(f"--url {safe_url(url)!r} {problem}")
    if problem:
        raise ConfigError(f"source.amqp.url: {safe_url(url)!r} {problem}")
    spool = Spool(args.spool or default_spool(cfg.state_dir or None))
    try:
        if args.publish_command == "closed":
            path = os.path.abspath(args.path)
            if os.path.isdir(path):
                raise UsageError(f"{path} is a directory; announce each closed file of it")
            root = local_root(cfg.storage.beamline)
            if root:
                relative_to_root(path, root)        # what the archiver refuses on arrival is refused here
            size = args.size
            if size is None:
                try:
                    size = os.stat(path).st_size
                except FileNotFoundError:
                    raise NotFound(f"{path} does not exist; give --size to announce it anyway") from None
            if size < 0:
                raise InvalidMessage(f"--size must not be negative, got {size}")
            if args.adler32 and not re.fullmatch(r"[0-9a-fA-F]{8}", args.adler32):
                raise InvalidMessage(f"--adler32 must be 8 hex digits, got {args.adler32!r}")
            spool.put(args.exchange or cfg.source.amqp.exchange, "file.closed",
                      file_closed_body(path, size, args.adler32 or ""))
        try:
            sent = asyncio.run(drain(spool, url, timeout=args.timeout))
        except BusUnavailable as e:
            print(f"domas: {e}", file=sys.stderr)
            return 0            # kept on local disk: nothing is lost, the next publish sends it
        what = f"file.closed {path} ({size} bytes)" if args.publish_command == "closed" else "the spool"
        print(f"published {what}; {sent} message(s) sent")
        return 0
    finally:
        spool.close()
