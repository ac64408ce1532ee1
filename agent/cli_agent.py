"""`domas agent`: run a transfer agent against a controller."""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import sys

from domas.config import Config
from domas.logsafe import setup_logging
from domas.transfer.validate import ident

from .cli_copy import stream_count

AGENT_HELP = """\
Run a transfer agent: it registers with the controller, takes chunk leases in batches over one
gRPC stream, copies and verifies each chunk, and reports its sums. Reports wait in a durable
spool while the controller is unreachable. Metrics for Prometheus on --metrics-listen.

example:
  DOMAS_TOKEN=secret domas agent --controller 10.0.0.5:7400 --name dtn01 --streams 16
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("agent", help="run a transfer agent", description=AGENT_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--controller", help="controller address host:port (default 127.0.0.1:7400)")
    p.add_argument("--name", help="agent name (default: the host name)")
    p.add_argument("--metrics-listen", help="host:port for /metrics (default 127.0.0.1:9401; port 0 = any)")
    p.add_argument("--streams", type=stream_count, help="chunks copied at once")
    p.add_argument("--state-dir", help="where the report spool lives (default: the config's state_dir)")
    p.add_argument("--tls-ca", help="CA certificate to verify the controller's TLS certificate")
    p.set_defaults(handler=run_agent)


def run_agent(args: argparse.Namespace, cfg: Config) -> int:
    from pathlib import Path

    from domas.channel import checked_ca, controller_address
    from domas.loop import run_async
    from .metrics import AgentCollector
    from domas.metrics import serve_metrics
    from .worker import Agent

    setup_logging()       # one line per event: names with a newline are escaped
    name = args.name or cfg.agent.name or socket.gethostname()
    ident(name, "--name" if args.name else "agent.name" if cfg.agent.name else "the host name")   # the controller's rule, now
    controller = controller_address(args.controller, cfg.agent.controller)
    streams = args.streams or cfg.copy.streams
    tls_ca = args.tls_ca or cfg.agent.tls_ca
    if tls_ca:
        checked_ca("--tls-ca" if args.tls_ca else "agent.tls_ca", tls_ca)     # before the banner says it runs

    async def main() -> None:
        agent = Agent(controller=controller, name=name, streams=streams,
                      state_dir=Path(args.state_dir or cfg.state_path()), token=cfg.controller.token,
                      tls_ca=tls_ca)
        server, port = serve_metrics(args.metrics_listen or cfg.agent.metrics_listen,
                                     AgentCollector(agent.acct, lambda: len(agent.spool), lambda: agent.connected),
                                     "agent.metrics_listen")
        print(f"agent {name}: controller {controller}, {streams} streams, "
              f"metrics on http://127.0.0.1:{port}/metrics", file=sys.stderr, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await agent.run(stop)
        finally:
            server.shutdown()

    run_async(main())
    return 0
