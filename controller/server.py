"""The controller process: state store, restored scheduler, gRPC server, tick loop."""

from __future__ import annotations

import asyncio
import errno
import logging
import random
import signal
import socket
import sys
from pathlib import Path

import grpc

from domas.channel import check_key_pair, check_token, checked_ca
from domas.config import Config, read_setting_file
from domas.controller.metrics import ControllerCollector
from domas.controller.rpc_errors import ErrorMapping
from domas.controller.scheduler import Scheduler, SchedulerConfig
from domas.controller.service import ControllerService
from domas.controller.state import StateDirLock, StateStore
from domas.errors import ConfigError
from domas.metrics import serve_metrics
from domas.retry import RetryPolicy
from domas.transfer.paths import controller_roots
from domas.transfer.validate import Limits
from domas.v1 import domas_pb2_grpc as pb_grpc

log = logging.getLogger("domas.controller")


def scheduler_config(cfg: Config) -> SchedulerConfig:
    retry = RetryPolicy(max_attempts=cfg.copy.max_retries + 1, base=cfg.copy.backoff_base, cap=cfg.copy.backoff_max)
    return SchedulerConfig(lease_seconds=cfg.controller.lease_seconds, retry=retry)


def open_scheduler(store: StateStore, cfg: Config) -> Scheduler:
    """A scheduler rebuilt from the store (empty on first start), with a new epoch."""
    specs, files, chunks = store.load()
    return Scheduler.restore(specs, files, chunks, config=scheduler_config(cfg), rng=random.Random(),
                             epoch=store.epoch, next_file_id=store.next_file_id())


def _bind(server: grpc.aio.Server, listen: str, cfg: Config) -> int:
    c = cfg.controller
    _, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:     # else read as a taken port below
        raise ConfigError(f"controller.listen: {listen!r} is not host:port, e.g. 127.0.0.1:7400 (port 0: any free one)")
    if c.tls_cert or c.tls_key:
        if not (c.tls_cert and c.tls_key):
            raise ConfigError("controller.tls_cert and controller.tls_key must be given together")
        ca = checked_ca("controller.tls_client_ca", c.tls_client_ca) if c.tls_client_ca else None
        pair = (read_setting_file("controller.tls_key", c.tls_key),
                read_setting_file("controller.tls_cert", c.tls_cert))
        check_key_pair(c.tls_cert, c.tls_key)
        creds = grpc.ssl_server_credentials([pair], root_certificates=ca, require_client_auth=bool(ca))
        port = _add_port(lambda: server.add_secure_port(listen, creds), listen)
    else:
        port = _add_port(lambda: server.add_insecure_port(listen), listen)
    if not port:
        raise ConfigError(f"controller.listen: cannot listen on {listen} (another process holds the port, or the "
                          "address is not local); stop it or choose another with --listen or controller.listen")
    return port


def _add_port(add, listen: str) -> int:
    if _taken(listen):         # asked before gRPC, whose core would log its own line to stderr first
        return 0
    try:
        return add()
    except RuntimeError:        # grpc's "Failed to bind to address": taken, or not an address here
        return 0


def _taken(listen: str) -> bool:
    """True when HOST:PORT is held by another socket or is not an address of this host (port 0 never is)."""
    host, _, port = listen.rpartition(":")
    if not port.isdigit() or int(port) == 0:
        return False
    try:
        infos = socket.getaddrinfo(host.strip("[]") or None, int(port), type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except OSError:
        return False            # not resolvable here: gRPC gives its own answer
    for family, kind, proto, _, addr in infos:
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)     # as gRPC binds
            try:
                s.bind(addr)
            except OSError as e:
                if e.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
                    return True
    return False


class RunningController:
    """A started controller: its gRPC server, tick loop and /metrics; `stop()` ends all three."""

    def __init__(self, service, server, store, metrics, port: int, metrics_port: int,
                 lock: StateDirLock | None = None) -> None:
        self.service, self.server, self.store, self.metrics, self.lock = service, server, store, metrics, lock
        self.port, self.metrics_port = port, metrics_port
        self._stop = asyncio.Event()
        self._ticks = asyncio.create_task(service.run_ticks(self._stop))

    def request_stop(self) -> None:
        self._stop.set()

    async def wait(self) -> None:
        await self._ticks

    async def stop(self) -> None:
        self._stop.set()
        await self._ticks
        self.service.end_streams()       # agents' open streams end with UNAVAILABLE, not a cancellation
        await self.server.stop(grace=2.0)
        self.metrics.shutdown()
        await self.service.close()
        self.store.close()
        if self.lock is not None:
            self.lock.release()


async def start_controller(cfg: Config, listen: str, state_dir: Path, metrics_listen: str = "",
                           extra_collectors: tuple = (), roots: tuple[str, ...] = ()) -> RunningController:
    """Open the state, restore the scheduler, start gRPC, the tick loop and /metrics (with
    `extra_collectors` served on the same /metrics). Transfers stay inside the configured storage
    roots plus `roots` (--root)."""
    check_token(cfg.controller.token)      # else it starts, and every call to it fails
    confined = controller_roots(cfg.storage.roots(), roots)
    lock = StateDirLock(Path(state_dir))
    try:
        return await _start(cfg, listen, state_dir, metrics_listen, extra_collectors, confined, lock)
    except BaseException:
        lock.release()
        raise


async def _start(cfg: Config, listen: str, state_dir: Path, metrics_listen: str, extra_collectors: tuple,
                 confined, lock: StateDirLock) -> RunningController:
    store = StateStore(Path(state_dir) / "controller.sqlite")
    c = cfg.controller
    service = ControllerService(open_scheduler(store, cfg), store, token=cfg.controller.token, roots=confined,
                                default_chunk_size=cfg.copy.chunk_size,
                                limits=Limits(c.max_sources_per_transfer, c.max_files_per_transfer),
                                private=(str(state_dir),))
    server = grpc.aio.server(interceptors=[ErrorMapping()],     # one sentence for every failure
                             options=[("grpc.so_reuseport", 0),     # two controllers never share a port
                                      ("grpc.max_receive_message_length", 64 << 20),
                                      ("grpc.keepalive_permit_without_calls", 1)])
    pb_grpc.add_ControllerServicer_to_server(service, server)
    port = _bind(server, listen, cfg)
    await service.probe_tiers_once()       # no lease into a tier that is not mounted, from the first one
    await server.start()
    try:
        metrics, metrics_port = serve_metrics(metrics_listen or cfg.controller.metrics_listen,
                                              ControllerCollector(lambda: service.latest, extra_collectors),
                                              "controller.metrics_listen")
    except BaseException:
        await server.stop(grace=None)      # a started server left to the GC prints a traceback
        await service.close()
        store.close()
        raise
    return RunningController(service, server, store, metrics, port, metrics_port, lock)


async def serve(cfg: Config, listen: str, state_dir: Path, metrics_listen: str = "", roots: tuple[str, ...] = ()) -> None:
    ctl = await start_controller(cfg, listen, state_dir, metrics_listen, roots=roots)
    host = listen.rsplit(":", 1)[0]
    print(f"controller listening on {host}:{ctl.port} (epoch {ctl.store.epoch}, state in {state_dir}), "
          f"metrics on http://127.0.0.1:{ctl.metrics_port}/metrics", file=sys.stderr, flush=True)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, ctl.request_stop)
    await ctl.wait()
    await ctl.stop()
