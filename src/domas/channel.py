"""gRPC channels to the controller, set up in one place: keepalive, message size, TLS, and the bearer
token metadata. The agent and the archive daemon use `make_channel` (grpc.aio), the `domas` CLI's
controller commands `make_sync_channel`; both get the same options and credentials."""

from __future__ import annotations

import ssl

import grpc

from domas.config import read_setting_file
from domas.errors import ConfigError, UsageError

KIND_KEY = "domas-kind"      # trailing metadata: the domas error kind of a refusal the controller wrote itself
MAX_MESSAGE = 64 * 1024 * 1024     # an answer (a large transfer's file list) may exceed gRPC's default 4 MiB

OPTIONS = (
    ("grpc.keepalive_time_ms", 10_000),       # a dead controller is noticed within ~15 s ...
    ("grpc.keepalive_timeout_ms", 5_000),     # ... (the server permits pings: controller/server.py)
    ("grpc.max_receive_message_length", MAX_MESSAGE),
)


def credentials(tls_ca: str) -> grpc.ChannelCredentials | None:
    """TLS credentials trusting the CA file `tls_ca` (agent.tls_ca); None for a plain channel."""
    if not tls_ca:
        return None
    return grpc.ssl_channel_credentials(root_certificates=checked_ca("agent.tls_ca", tls_ca))


def checked_ca(key: str, path: str) -> bytes:
    """The PEM certificates in the file setting `key` names; one sentence naming the setting if it holds
    none (gRPC would only log a line of its own and report the controller unreachable)."""
    pem = read_setting_file(key, path)
    try:
        if b"-----BEGIN CERTIFICATE-----" not in pem:
            raise ValueError(path)
        ssl.create_default_context(cadata=pem.decode("ascii"))
    except (ssl.SSLError, ValueError):            # UnicodeDecodeError is a ValueError
        raise ConfigError(f"{key}: {path} holds no PEM certificate (-----BEGIN CERTIFICATE-----); give the CA "
                          "certificate that signed the controller's") from None
    return pem


def check_key_pair(cert: str, key: str) -> None:
    """controller.tls_cert and tls_key must be a PEM certificate and its unencrypted private key (gRPC
    would log a line of its own and fail to listen, which reads as a taken port)."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key, password=b"")
    except ssl.SSLError:
        raise ConfigError(f"controller.tls_cert, controller.tls_key: {cert} and {key} are not a PEM certificate "
                          "and its unencrypted private key; give the pair the controller's certificate was "
                          "made with") from None


def address_problem(address: str) -> str | None:
    """What is wrong with a controller address (host:port; gRPC's own unix: and dns: forms pass), or None."""
    if address.startswith(("unix:", "dns:")):
        return None
    if "://" in address:
        return "is a URL; give host:port, e.g. 127.0.0.1:7400"
    host, sep, port = address.strip().rpartition(":")
    if not sep or not host.strip("[]") or not port.isdigit() or not 1 <= int(port) <= 65535:
        return "is not host:port with a port from 1 to 65535, e.g. 127.0.0.1:7400"
    return None


def controller_address(given: str | None, configured: str) -> str:
    """The controller to dial: `--controller` if given, else agent.controller; one sentence naming
    the one at fault if it cannot be an address (instead of retrying it forever)."""
    address = given or configured
    if problem := address_problem(address):
        if given:
            raise UsageError(f"--controller {address!r} {problem}")
        raise ConfigError(f"agent.controller: {address!r} {problem}")
    return address


def make_channel(address: str, tls_ca: str = "") -> grpc.aio.Channel:
    creds = credentials(tls_ca)
    if creds is not None:
        return grpc.aio.secure_channel(address, creds, options=OPTIONS)
    return grpc.aio.insecure_channel(address, options=OPTIONS)


def make_sync_channel(address: str, tls_ca: str = "") -> grpc.Channel:
    creds = credentials(tls_ca)
    if creds is not None:
        return grpc.secure_channel(address, creds, options=OPTIONS)
    return grpc.insecure_channel(address, options=OPTIONS)


def check_token(token: str) -> None:
    """Refuse a token gRPC cannot carry in a header: the client refuses the call (as an "internal"
    error), so a controller started with it could never be called."""
    if token and not (token.isascii() and token.isprintable()):
        raise ConfigError("controller.token (or DOMAS_TOKEN) holds a control character or a non-ASCII letter, "
                          "which no token has; check it")


def auth_metadata(token: str) -> tuple:
    check_token(token)
    return (("authorization", f"Bearer {token}"),) if token else ()


def own_sentence(e: grpc.RpcError) -> str:
    """The controller's own one-sentence refusal carried by a failed call, or "" when the failure
    came from gRPC itself (a connection refused or reset), whose text is never shown to a user."""
    if dict(e.trailing_metadata() or ()).get(KIND_KEY):
        return e.details() or ""
    return ""
