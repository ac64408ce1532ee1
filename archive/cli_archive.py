"""`domas archive`: discovery + catalogue + data policy on their own (what `domas up` runs with the
controller, an agent and the data service), for a facility that runs each part on its own host.

It needs the controller (agent.controller; TLS with agent.tls_ca), the catalogue (catalogue.url)
and the storage tiers ([storage]). Its catalogue writes wait in a spool under state_dir while the
catalogue is unreachable. SIGTERM/SIGINT stop it after the current pass; a restart continues
(the controller deduplicates copies by request id, the catalogue upserts are idempotent).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from domas.config import Config
from domas.errors import ConfigError
from domas.logsafe import setup_logging

log = logging.getLogger("domas.archiver")

ARCHIVE_HELP = """\
Run discovery, cataloguing and the data policy (copies to central and tape, expiry) on their own,
against a running controller and agents:

  domas archive --config /etc/domas/domas.toml
  domas archive --controller ctl.example:7400 --metrics-listen 0.0.0.0:9403
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("archive", help="run discovery and the data policy alone", description=ARCHIVE_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--controller", help="controller address host:port (default: agent.controller)")
    p.add_argument("--metrics-listen", help="host:port for /metrics (scrubber counters; default: none)")
    p.set_defaults(handler=run_archive)


def prepare_tiers(cfg: Config) -> None:
    """Create the tier roots. A tier that cannot be reached now (a server down) only degrades the
    system: logged, and copies to it are retried later; any other failure is one sentence naming
    the key."""
    from domas.transfer.storage import resolve
    from domas.errors import DomasError

    for tier in ("beamline", "central", "tape"):
        where = getattr(cfg.storage, tier)
        try:
            store, path = resolve(where)
            store.makedirs(path)
        except DomasError as e:
            if not e.retriable:
                raise ConfigError(f"storage.{tier}: {where}: {e}") from None
            log.warning("storage.%s (%s) cannot be reached now (%s); the other tiers go on and this one is "
                        "retried", tier, where, e)


def run_archive(args: argparse.Namespace, cfg: Config) -> int:
    from domas.channel import controller_address
    from domas.loop import run_async

    for tier in ("beamline", "central", "tape"):
        if not getattr(cfg.storage, tier):
            raise ConfigError(f"storage.{tier}: domas archive needs every tier; set it (or data_dir) in the "
                              "configuration")
    setup_logging()       # one line per event: names with a newline are escaped
    controller = controller_address(args.controller, cfg.agent.controller)
    run_async(archive(cfg, controller, args.metrics_listen or ""))
    return 0


async def archive(cfg: Config, controller: str, metrics_listen: str = "",
                  stop: asyncio.Event | None = None) -> None:
    from domas.metrics import serve_metrics

    from .archiver import Archiver
    from domas.catalogue import open_catalogue
    from domas.archive.metrics import ScrubCollector, ScrubStats

    state = Path(cfg.state_path())
    state.mkdir(parents=True, exist_ok=True)
    prepare_tiers(cfg)
    catalogue = open_catalogue(cfg.catalogue, state, spool=True)
    stats, metrics = ScrubStats(), None
    stop = stop or asyncio.Event()
    try:
        if metrics_listen:
            metrics, port = serve_metrics(metrics_listen, ScrubCollector(stats), "--metrics-listen")
        archiver = Archiver(cfg, catalogue, controller, token=cfg.controller.token, scrub_stats=stats,
                            tls_ca=cfg.agent.tls_ca)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print(f"archiving {cfg.storage.beamline} -> {cfg.storage.central} -> {cfg.storage.tape} through the "
              f"controller at {controller}" + (f", metrics on port {port}" if metrics else ""),
              file=sys.stderr, flush=True)
        await archiver.run(stop, interval=max(0.2, min(2.0, cfg.policy.stability_seconds / 4)))
    finally:
        if metrics is not None:
            metrics.shutdown()
        catalogue.close()
