"""One gRPC channel setup (domas/channel.py): the agent, the archive daemon and the CLI's controller
commands get the same options (keepalive, a 64 MiB answer limit) and TLS credentials from one place.

Real parts: a gRPC server on a free loopback port answering one method with a 5 MiB message (over
gRPC's default 4 MiB receive limit, which the CLI's own channel had), reached through both channels.
"""

from __future__ import annotations

import ast
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from domas.channel import OPTIONS, make_channel, make_sync_channel
from domas.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
BIG = b"x" * (5 * 1024 * 1024)
METHOD = "/test.Big/Get"


@pytest.fixture
def big_server():
    def get(request, context):
        return BIG

    handler = grpc.method_handlers_generic_handler("test.Big", {"Get": grpc.unary_unary_rpc_method_handler(get)})
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[handler],
                         options=[("grpc.keepalive_permit_without_calls", 1)])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(None)


def test_sync_channel_receives_an_answer_over_4_mib(big_server):
    with make_sync_channel(big_server) as channel:
        call = channel.unary_unary(METHOD)
        assert call(b"", timeout=30, wait_for_ready=True) == BIG
    with grpc.insecure_channel(big_server) as plain:               # what the CLI had: refused
        with pytest.raises(grpc.RpcError) as err:
            plain.unary_unary(METHOD)(b"", timeout=30, wait_for_ready=True)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_aio_channel_has_the_same_options(big_server):
    async with make_channel(big_server) as channel:
        assert await channel.unary_unary(METHOD)(b"", timeout=30, wait_for_ready=True) == BIG
    assert dict(OPTIONS)["grpc.keepalive_time_ms"] > 0


def test_an_unreadable_ca_is_one_config_error_for_both_channels(tmp_path):
    for make in (make_channel, make_sync_channel):
        with pytest.raises(ConfigError, match="agent.tls_ca"):
            make("127.0.0.1:1", str(tmp_path / "missing-ca.pem"))


def test_no_module_but_channel_py_opens_a_grpc_channel():
    makers = {"grpc.insecure_channel", "grpc.secure_channel", "grpc.aio.insecure_channel", "grpc.aio.secure_channel"}
    callers = []
    for folder in ("src", "agent", "archive", "catalogue", "controller", "dataservice", "transfer"):
        for f in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(f.read_text())):
                if isinstance(node, ast.Call) and ast.unparse(node.func) in makers:
                    callers.append(str(f.relative_to(ROOT)))
    assert sorted(set(callers)) == ["src/domas/channel.py"], callers
