"""`domas up`: the whole system on one machine, with no configuration.

Runs in one process: the controller (gRPC, durable state), one transfer agent, the archiver
(discovery, catalogue, data policy) and the data service (REST API, portal, downloads), over an
embedded SQLite catalogue, under ./domas-data/ with beamline/, central/ and tape/ roots.
It writes the effective configuration (real ports) to <data-dir>/domas.toml, which every other
command finds on its own when run from the same directory (or through --config / DOMAS_CONFIG).

With a configuration file, every place comes from it (data_dir, or state_dir and the [storage]
tiers) or from --data-dir: nothing is written to the current directory or to per-user defaults,
so two deployments on one host never share state. With controller.tls_cert set, the agent and
the archiver reach the controller over TLS (CA: agent.tls_ca, else the certificate itself).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import signal
import sys
from dataclasses import replace
from pathlib import Path

from domas.config import Config, default_streams
from domas.errors import ConfigError
from domas.logsafe import setup_logging

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
    p.add_argument("--data-dir", help="where tiers, catalogue and state live (default: the config's data_dir, "
                                      "else ./domas-data)")
    p.set_defaults(handler=run_up)


def effective_config(cfg: Config, data_dir: str | None) -> tuple[Config, Path | None]:
    """This instance's configuration, every place filled, and where its domas.toml goes (None: not
    written, because that file is the configuration given). Without a configuration file (or with
    the one `domas up` wrote here) places default to ./domas-data; with one, they come from it
    (data_dir, state_dir, [storage]) or --data-dir, and a place it leaves open is a ConfigError."""
    from domas.config import UP_CONFIG

    given = Path(cfg.config_file).resolve() if cfg.config_file else None
    explicit = given is not None and given != Path(UP_CONFIG).resolve()
    if data_dir and cfg.data_dir:     # --data-dir moves what the file's data_dir placed, not what it names
        old = Path(cfg.data_dir).expanduser()
        cfg = replace(cfg, state_dir="" if cfg.state_dir == str(old / "state") else cfg.state_dir,
                      storage=replace(cfg.storage, **{t: "" for t in ("beamline", "central", "tape")
                                                      if getattr(cfg.storage, t) == str(old / t)}))
    d = Path(data_dir).resolve() if data_dir else Path(cfg.data_dir) if cfg.data_dir else (
        None if explicit else Path("domas-data").resolve())
    tiers = {t: getattr(cfg.storage, t) or (str(d / t) if d else "") for t in ("beamline", "central", "tape")}
    for tier, where in tiers.items():
        if not where:
            raise ConfigError(f"storage.{tier}: the configuration {cfg.config_file} gives no place for this tier; "
                              "set it, or data_dir (one base directory), or run with --data-dir")
    state = cfg.state_dir if explicit and cfg.state_dir else str(d / "state") if d else ""
    cfg = replace(cfg, storage=replace(cfg.storage, **tiers), state_dir=state)
    cfg.state_path()                  # a ConfigError naming data_dir when there is no place for state
    instance = (d / "domas.toml") if d else Path(state) / "domas.toml"
    return cfg, (None if instance.resolve() == given else instance)


def connect_address(listen: str, port: int) -> str:
    """Where local clients reach a server listening on `listen` (any-address -> loopback)."""
    host = listen.rpartition(":")[0].strip("[]")
    return f"{'127.0.0.1' if host in ('', '0.0.0.0', '::') else host}:{port}"


def shown_host(listen: str) -> str:
    """The host to print in a URL for a server listening on `listen`."""
    import socket

    host = listen.rpartition(":")[0].strip("[]")
    return socket.gethostname() if host in ("0.0.0.0", "::") else host or "127.0.0.1"


def controller_ca(cfg: Config) -> str:
    """The CA local clients trust for the controller: agent.tls_ca, else its own certificate."""
    return (cfg.agent.tls_ca or cfg.controller.tls_cert) if cfg.controller.tls_cert else ""


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
tls_cert = {q(cfg.controller.tls_cert)}
tls_key = {q(cfg.controller.tls_key)}
tls_client_ca = {q(cfg.controller.tls_client_ca)}

[agent]
controller = {q(ports['agent_controller'])}
tls_ca = {q(controller_ca(cfg))}

[source]
scan = {q(cfg.source.scan)}
inotify = {q(cfg.source.inotify)}
full_scan_seconds = {cfg.source.full_scan_seconds}
"""
    a = cfg.source.amqp
    if a.url:       # so `domas publish` run here finds the bus
        text += f"""
[source.amqp]
url = {q(a.url)}
exchange = {q(a.exchange)}
queue = {q(a.queue)}
prefetch = {a.prefetch}
files_grace = {a.files_grace}
"""
    make_place(path.parent, "data_dir")
    tmp = path.with_suffix(".tmp")
    try:
        tmp.unlink(missing_ok=True)
        # the bus URL may hold a password: then only the owner reads the file
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if "@" in a.url else 0o644),
                       "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as e:
        raise ConfigError(f"data_dir: cannot write {path} ({e.strerror or type(e).__name__}); choose another "
                          "--data-dir, or set data_dir in the configuration") from None


def run_up(args: argparse.Namespace, cfg: Config) -> int:
    from domas.loop import run_async

    setup_logging()       # one line per event: names with a newline are escaped
    cfg, instance = effective_config(cfg, args.data_dir)
    make_place(Path(cfg.state_dir), "state_dir")
    if instance is not None:
        make_place(instance.parent, "data_dir")        # before anything starts (writing it may still fail)
    run_async(up(cfg, instance))
    return 0


def make_place(path: Path, key: str) -> None:
    """Create a directory `domas up` keeps its own files in; one sentence naming `key` if it cannot be."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        why = "not a directory" if path.exists() else (e.strerror or type(e).__name__).lower()
        raise ConfigError(f"{key}: cannot create {path} ({why}); choose another --data-dir, or set {key} in the "
                          "configuration") from None


async def up(cfg: Config, instance: Path | None, stop: asyncio.Event | None = None) -> None:
    from domas.agent.metrics import AgentCollector
    from domas.metrics import serve_metrics
    from domas.agent.worker import Agent

    from .archive.archiver import Archiver
    from .catalogue import open_catalogue
    from domas.archive.metrics import ScrubCollector, ScrubStats
    from .controller.server import start_controller

    from .archive.cli_archive import prepare_tiers

    prepare_tiers(cfg)                # a tier down now is logged and retried, never fatal
    state = Path(cfg.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    catalogue = open_catalogue(cfg.catalogue, state, spool=True)
    scrub_stats = ScrubStats()
    from .archive.sources import SourcesCollector
    sources_metrics = SourcesCollector()          # the archiver's sources, once it has them
    ctl = await start_controller(cfg, cfg.controller.listen, state, cfg.controller.metrics_listen,
                                 extra_collectors=(ScrubCollector(scrub_stats), sources_metrics))
    address, tls_ca = connect_address(cfg.controller.listen, ctl.port), controller_ca(cfg)
    stop = stop or asyncio.Event()
    agent_metrics = http = None
    tasks: list[asyncio.Task] = []
    try:
        agent = Agent(controller=address, name="local", streams=cfg.copy.streams or default_streams(),
                      state_dir=state, token=cfg.controller.token, tls_ca=tls_ca)
        agent_metrics, agent_port = serve_metrics(cfg.agent.metrics_listen,
                                                  AgentCollector(agent.acct, lambda: len(agent.spool),
                                                                 lambda: agent.connected), "agent.metrics_listen")
        http, http_listen = await start_http(cfg, catalogue)
        listen = f"{cfg.controller.listen.rpartition(':')[0]}:{ctl.port}"
        if instance is not None:
            write_config(cfg, instance, {"controller": listen, "agent_controller": address, "http": http_listen})
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        banner(cfg, instance, ctl, agent_port, http_listen)
        archiver = Archiver(cfg, catalogue, address, token=cfg.controller.token, scrub_stats=scrub_stats,
                            tls_ca=tls_ca)
        sources_metrics.sources = archiver.sources
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
    """The data service on uvicorn, started in this event loop; returns (server, "host:port" bound)."""
    import uvicorn

    from .dataservice.access import MetricsGuard
    from .dataservice.app import create_app
    from .dataservice.cli_serve import bind, parse_listen
    from .dataservice.oidc import verifier_from
    from .dataservice.users import UserStore

    app = create_app(catalogue, {"beamline": cfg.storage.beamline, "central": cfg.storage.central,
                                 "tape": cfg.storage.tape}, token=cfg.controller.token,
                     users=UserStore.in_state_dir(cfg.state_path()), oidc=verifier_from(cfg.controller),
                     metrics_guard=MetricsGuard.of(cfg.controller))
    host, port = parse_listen(cfg.controller.http_listen, given=False)      # what `domas serve` binds, alike
    sock = bind(host, port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    return server, f"{f'[{host}]' if ':' in host else host}:{sock.getsockname()[1]}"


def banner(cfg: Config, instance: Path | None, ctl, agent_port: int, http_listen: str) -> None:
    drop = Path(cfg.storage.beamline) / "<Beamline>/<YYYYMM>/Data/<BeamtimeID>/raw/"
    if instance is not None and instance.parent == Path("domas-data").resolve():
        cat = f"domas catalogue find      (run here, or with --config {shlex.quote(str(instance))})"
    else:
        cat = f"domas --config {shlex.quote(str(instance or cfg.config_file))} catalogue find"
    c = cfg.controller
    tls = " (TLS)" if c.tls_cert else ""
    metrics = f"http://{shown_host(c.metrics_listen)}:{ctl.metrics_port}/metrics"
    print(f"""domas is up.
  drop files under   {drop}
                     (taken after {cfg.policy.stability_seconds:g} s without change; raw/ and processed/ are archived)
  central copies     {cfg.storage.central}
  tape copies        {cfg.storage.tape}
  catalogue          {cat}
  portal and API     http://{shown_host(http_listen)}:{http_listen.rpartition(':')[2]}/
  controller         {shown_host(c.listen)}:{ctl.port}{tls}  metrics {metrics}
  agent metrics      http://{shown_host(cfg.agent.metrics_listen)}:{agent_port}/metrics
Stop with Ctrl-C.""", file=sys.stderr, flush=True)
