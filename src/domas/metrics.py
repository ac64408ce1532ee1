"""Serving Prometheus /metrics for any part, and the error kinds every storage counter starts with."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, start_http_server

from domas.errors import KINDS, ConfigError, StorageError


STORAGE_KINDS = tuple(k for k, cls in KINDS.items() if issubclass(cls, StorageError))


def serve_metrics(listen: str, collector, key: str = "metrics_listen") -> tuple[object, int]:
    """Start /metrics on host:port (port 0 picks a free one); returns (server, port)."""
    host, _, port = listen.rpartition(":")
    if not (port.isascii() and port.isdigit() and int(port) <= 65535):
        raise ConfigError(f"{key}: {listen!r} is not host:port, e.g. 127.0.0.1:9400 (port 0: any free port)")
    registry = CollectorRegistry()
    registry.register(collector)
    try:
        server, _thread = start_http_server(int(port), addr=host or "127.0.0.1", registry=registry)
    except (OSError, ValueError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise ConfigError(f"{key}: cannot serve metrics on {listen!r}: {reason}") from None
    return server, server.server_port
