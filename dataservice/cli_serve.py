"""`domas serve`: the data service (REST API, web portal, downloads) for the configured catalogue."""

from __future__ import annotations

import argparse
import contextlib
import errno
import ipaddress
import re
import signal
import socket
import sys

from domas.config import Config
from domas.errors import ConfigError, PermissionDenied, UsageError
from domas.logsafe import setup_logging

SERVE_HELP = """\
Serve the data service: the catalogue's datasets as a REST API (/api/v1, described at /docs), a small
web portal to search them (/), and file downloads from verified replicas (byte ranges, adler32 in
the Digest header). Files are read from the configured storage tiers (storage.beamline, central,
tape). Callers identify with personal tokens (`domas user token NAME`): a dataset under embargo
exists only for its team (beamtime/proposal PIs and team) and staff. With controller.token (or
$DOMAS_TOKEN) set, anonymous calls are refused and that token acts as admin.

Listens on loopback by default; put it behind the facility's HTTPS proxy to publish it.

examples:
  domas serve
  domas serve --listen 0.0.0.0:8400        # all interfaces: set a token first
  domas get --server http://127.0.0.1:8400 PID ./here/
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the REST API, web portal and downloads", description=SERVE_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listen", metavar="HOST:PORT",
                   help="address to listen on (default: controller.http_listen, 127.0.0.1:8400; port 0 = any)")
    p.set_defaults(handler=run_serve)
    from . import cli_user

    cli_user.register(sub)                       # `domas user`: who may use the service


_HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")


def listen_host(host: str) -> str | None:
    """The host to bind of a listen address's host part ("" = loopback), or None if it is no address:
    an IPv6 literal in brackets (or bare), an IPv4 address, or a host name."""
    if not host:
        return "127.0.0.1"
    inner = host[1:-1] if host.startswith("[") and host.endswith("]") else None
    try:
        if inner is not None or ":" in host:
            return str(ipaddress.IPv6Address(host if inner is None else inner))
        if re.fullmatch(r"[0-9.]+", host):
            return str(ipaddress.IPv4Address(host))
    except ValueError:
        return None
    return host if len(host) <= 253 and _HOSTNAME.fullmatch(host) else None


def parse_listen(listen: str, given: bool = True) -> tuple[str, int]:
    """(host, port) of --listen (`given`) or else controller.http_listen; one sentence naming it if not."""
    host, sep, port = listen.strip().rpartition(":")
    bound = listen_host(host)
    if not sep or bound is None or not port.isdigit() or int(port) > 65535:
        if not given:
            raise ConfigError(f"controller.http_listen: {listen!r} is not host:port, e.g. 127.0.0.1:8400")
        raise UsageError(f"--listen {listen!r}: give host:port, e.g. 127.0.0.1:8400 or [::1]:8400")
    return bound, int(port)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def bind(host: str, port: int, given: bool = False) -> socket.socket:
    """A listening socket, bound before the server starts so errors are one sentence (naming --listen
    if `given`, else controller.http_listen)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        if e.errno in (errno.EACCES, errno.EPERM):
            raise PermissionDenied(f"cannot listen on {host}:{port}: permission denied; "
                                   "use a port above 1023") from None
        if e.errno == errno.EADDRINUSE:
            raise ConfigError(f"controller.http_listen: {host}:{port} is already in use; stop what holds it, "
                              "or choose another with controller.http_listen (domas serve: --listen)") from None
        why = "no such host" if isinstance(e, socket.gaierror) else (e.strerror or str(e)).lower()
        if given:
            raise UsageError(f"--listen: cannot listen on {host}:{port}: {why}; give a local address, "
                             "e.g. 127.0.0.1:8400") from None
        raise ConfigError(f"controller.http_listen: cannot listen on {host}:{port}: {why}; "
                          "check the address") from None
    sock.listen(512)
    return sock


def _server_class():
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn, but SIGINT/SIGTERM end `run` normally (exit 0) instead of being re-raised after shutdown."""

        @contextlib.contextmanager
        def capture_signals(self):
            old = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in old.items():
                    signal.signal(sig, handler)

    return Server


def tiers_of(cfg: Config) -> dict[str, str]:
    tiers = {"beamline": cfg.storage.beamline, "central": cfg.storage.central, "tape": cfg.storage.tape}
    return {name: root for name, root in tiers.items() if root}


class DataServiceServer:
    """The data service bound and ready: `run()` blocks (the CLI), `await serve()` runs in a loop
    someone else owns (e.g. `domas up`, which then handles the signals and sets `should_exit`)."""

    def __init__(self, cfg: Config, listen: str | None = None, *, own_signals: bool = True) -> None:
        import uvicorn

        from domas.catalogue import open_catalogue
        from .app import create_app

        from .access import MetricsGuard

        guard = MetricsGuard.of(cfg.controller)             # a mistake in it is told before anything opens
        host, port = parse_listen(listen or cfg.controller.http_listen, given=bool(listen))
        self.host, self.tiers = host, tiers_of(cfg)
        self.sock = bind(host, port, given=bool(listen))
        try:
            self.catalogue = open_catalogue(cfg.catalogue, cfg.state_path())
        except BaseException:
            self.sock.close()
            raise
        from .users import UserStore

        try:
            self.users = UserStore.in_state_dir(cfg.state_path())
        except BaseException:
            self.catalogue.close()
            self.sock.close()
            raise
        from .oidc import verifier_from

        app = create_app(self.catalogue, self.tiers, token=cfg.controller.token, users=self.users,
                         oidc=verifier_from(cfg.controller), metrics_guard=guard)
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.sock.getsockname()[1]}/"
        server_class = _server_class() if own_signals else uvicorn.Server
        self.server = server_class(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                                  timeout_graceful_shutdown=5))

    def run(self) -> None:
        try:
            self.server.run(sockets=[self.sock])
        finally:
            self.close()

    async def serve(self) -> None:
        try:
            await self.server.serve(sockets=[self.sock])
        finally:
            self.close()

    def stop(self) -> None:
        self.server.should_exit = True

    def close(self) -> None:
        self.catalogue.close()
        self.users.close()
        self.sock.close()


def run_serve(args: argparse.Namespace, cfg: Config) -> int:
    setup_logging()       # one line per event (a request's failure: its traceback after it)
    served = DataServiceServer(cfg, args.listen)
    print(f"domas data service on {served.url} (API documentation: {served.url}docs); Ctrl-C stops it", flush=True)
    if not served.tiers:
        print("domas serve: no storage tier is configured (storage.beamline, central, tape); "
              "datasets are listed but no file can be downloaded", file=sys.stderr)
    if not is_loopback(served.host) and not cfg.controller.token:
        print(f"domas serve: listening on {served.host} without a token: anyone who can reach it can read the "
              "catalogue; set DOMAS_TOKEN", file=sys.stderr)
    served.run()
    return 0
