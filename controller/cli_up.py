"""`domas up`: the whole system on one machine, with no configuration.

Runs in one process: the controller (gRPC, durable state), one transfer agent, the archiver
(discovery, catalogue, data policy) and the data service (REST API, portal, downloads), over an
embedded SQLite catalogue, under ./domas-data/ with beamline/, central/ and tape/ roots.
It writes the effective configuration to <data-dir>/domas.toml, which every other command finds
on its own when run from the same directory (or through --config / DOMAS_CONFIG).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path

from domas.config import Config, default_streams
from domas.errors import ConfigError

UP_HELP = """\
Run everything on one machine: controller, one agent, discovery, lifecycle, catalogue and the
data service, under ./domas-data/ (--data-dir moves it). Drop files into the beamline tree in the
HEPS layout and watch them get catalogued, copied to central and to tape, verified:

  domas up
  mkdir -p domas-data/beamline/B1/202611/Data/BT0001/raw
  cp scan.h5 domas-data/beamline/B1/202611/Data/BT0001/raw/
  domas catalogue find --beamtime BT0001

For a real deployment give --config domas.toml ([storage], [policy], [catalogue] sections).
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="run everything on one machine", description=UP_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="domas-data", help="where tiers, catalogue and state live (default ./domas-data)")
    p.set_defaults(handler=run_up)


def effective_config(cfg: Config, data_dir: Path, explicit_config: bool) -> Config:
    """Fill what the configuration leaves empty with places under data_dir."""
    d = data_dir.resolve()
    storage = replace(cfg.storage, beamline=cfg.storage.beamline or str(d / "beamline"),
                      central=cfg.storage.central or str(d / "central"), tape=cfg.storage.tape or str(d / "tape"))
    state = cfg.state_dir if explicit_config and cfg.state_dir else str(d / "state")
    return replace(cfg, storage=storage, state_dir=state)


def write_config(cfg: Config, path: Path, ports: dict) -> None:
    """The effective configuration, so `domas catalogue ...` and `domas status` find this instance."""
    def q(v) -> str:
        return json.dumps(v)

    p = cfg.policy
    text = f"""# Written by `domas up`: the configuration of the running instance.
state_dir = {q(cfg.state_dir)}

[storage]
beamline = {q(cfg.storage.beamline)}
central = {q(cfg.storage.central)}
tape = {q(cfg.storage.tape)}

[policy]
beamline_retention = {p.beamline_retention}
central_retention = {p.central_retention}
stability_seconds = {p.stability_seconds}

[catalogue]
url = {q(cfg.catalogue.url)}
pid_prefix = {q(cfg.catalogue.pid_prefix)}

[controller]
listen = {q(ports['controller'])}
http_listen = {q(ports['http'])}

[agent]
controller = {q(ports['controller'])}
"""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def run_up(args: argparse.Namespace, cfg: Config) -> int:
    from domas.agent.cli_copy import run_async

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    data_dir = Path(args.data_dir)
    cfg = effective_config(cfg, data_dir, explicit_config=bool(args.config or os.environ.get("DOMAS_CONFIG")))
    run_async(up(cfg, data_dir))
    return 0


async def up(cfg: Config, data_dir: Path, stop: asyncio.Event | None = None) -> None:
    from domas.agent.metrics import AgentCollector, serve_metrics
    from domas.agent.storage import resolve
    from domas.agent.worker import Agent

    from .archiver import Archiver
    from .catalogue import open_catalogue
    from .metrics import ScrubCollector, ScrubStats
    from .server import start_controller

    for tier in ("beamline", "central", "tape"):
        store, path = resolve(getattr(cfg.storage, tier))
        store.makedirs(path)
    state = Path(cfg.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    catalogue = open_catalogue(cfg.catalogue, state, spool=True)
    scrub_stats = ScrubStats()
    ctl = await start_controller(cfg, cfg.controller.listen, state, cfg.controller.metrics_listen,
                                 extra_collectors=(ScrubCollector(scrub_stats),))
    address = f"127.0.0.1:{ctl.port}"
    stop = stop or asyncio.Event()
    agent_metrics = http = None
    tasks: list[asyncio.Task] = []
    try:
        agent = Agent(controller=address, name="local", streams=cfg.copy.streams or default_streams(),
                      state_dir=state, token=cfg.controller.token)
        agent_metrics, agent_port = serve_metrics(cfg.agent.metrics_listen,
                                                  AgentCollector(agent.acct, lambda: len(agent.spool),
                                                                 lambda: agent.connected), "agent.metrics_listen")
        http, http_port = await start_http(cfg, catalogue)
        write_config(cfg, data_dir / "domas.toml", {"controller": address, "http": f"127.0.0.1:{http_port}"})
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        banner(cfg, data_dir, ctl, agent_port, http_port)
        archiver = Archiver(cfg, catalogue, address, token=cfg.controller.token, scrub_stats=scrub_stats)
        tick = max(0.2, min(2.0, cfg.policy.stability_seconds / 4))
        tasks = [asyncio.create_task(agent.run(stop)), asyncio.create_task(archiver.run(stop, interval=tick))]
        await stop.wait()
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        if http is not None:
            http.should_exit = True
        if agent_metrics is not None:
            agent_metrics.shutdown()
        await ctl.stop()
        catalogue.close()


async def start_http(cfg: Config, catalogue):
    """The data service on uvicorn, started in this event loop; returns (server, port)."""
    import socket

    import uvicorn

    from .dataservice import create_app

    app = create_app(catalogue, {"beamline": cfg.storage.beamline, "central": cfg.storage.central,
                                 "tape": cfg.storage.tape}, token=cfg.controller.token)
    host, _, port = cfg.controller.http_listen.rpartition(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host or "127.0.0.1", int(port)))
    except OSError as e:
        raise ConfigError(f"controller.http_listen: cannot listen on {cfg.controller.http_listen}: {e.strerror}") from None
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    return server, sock.getsockname()[1]


def banner(cfg: Config, data_dir: Path, ctl, agent_port: int, http_port: int) -> None:
    drop = Path(cfg.storage.beamline) / "<Beamline>/<YYYYMM>/Data/<BeamtimeID>/raw/"
    print(f"""domas is up.
  drop files under   {drop}
                     (taken after {cfg.policy.stability_seconds:g} s without change; raw/ and processed/ are archived)
  central copies     {cfg.storage.central}
  tape copies        {cfg.storage.tape}
  catalogue          domas catalogue find      (run here, or with --config {data_dir / 'domas.toml'})
  portal and API     http://127.0.0.1:{http_port}/
  controller         127.0.0.1:{ctl.port}  metrics http://127.0.0.1:{ctl.metrics_port}/metrics
  agent metrics      http://127.0.0.1:{agent_port}/metrics
Stop with Ctrl-C.""", file=sys.stderr, flush=True)
