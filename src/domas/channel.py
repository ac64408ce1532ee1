"""gRPC channels to the controller: keepalive, message size, TLS, and the bearer token metadata."""

from __future__ import annotations

import grpc


def make_channel(address: str, tls_ca: str = "") -> grpc.aio.Channel:
    options = [("grpc.keepalive_time_ms", 10_000), ("grpc.keepalive_timeout_ms", 5_000),
               ("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    if tls_ca:
        from domas.config import read_setting_file

        creds = grpc.ssl_channel_credentials(root_certificates=read_setting_file("agent.tls_ca", tls_ca))
        return grpc.aio.secure_channel(address, creds, options=options)
    return grpc.aio.insecure_channel(address, options=options)


def auth_metadata(token: str) -> tuple:
    return (("authorization", f"Bearer {token}"),) if token else ()
