"""The committed generated modules of the wire contract match what scripts/gen-proto makes now."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc_tools

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ("domas_pb2.py", "domas_pb2_grpc.py", "domas_pb2.pyi")


def _committed_tools_version() -> str:
    text = (ROOT / "proto/domas/v1/domas_pb2_grpc.py").read_text()
    return text.split("GRPC_GENERATED_VERSION = '", 1)[1].split("'", 1)[0]


def test_generated_modules_match_the_proto(tmp_path: Path) -> None:
    installed = getattr(grpc_tools, "__version__", None) or _tools_version()
    committed = _committed_tools_version()
    assert installed == committed, (
        f"grpcio-tools {installed} is installed but the committed code was made by {committed}: "
        f"install grpcio-tools=={committed} or run scripts/gen-proto and commit the result")
    subprocess.run(["bash", str(ROOT / "scripts/gen-proto"), str(tmp_path)], check=True,
                   env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable})
    for name in GENERATED:
        fresh = (tmp_path / "domas/v1" / name).read_text()
        committed_text = (ROOT / "proto/domas/v1" / name).read_text()
        assert fresh == committed_text, f"proto/domas/v1/{name} is stale: run scripts/gen-proto and commit"


def test_grpc_module_imports_the_package_not_a_top_level_module() -> None:
    from domas.v1 import domas_pb2, domas_pb2_grpc

    assert domas_pb2_grpc.domas_dot_v1_dot_domas__pb2 is domas_pb2
    assert domas_pb2.DESCRIPTOR.package == "domas.v1"
    assert set(domas_pb2.DESCRIPTOR.services_by_name["Controller"].methods_by_name) == {
        "RegisterAgent", "Heartbeat", "Leases", "ReportResults", "SubmitTransfer", "GetStatus",
        "ListTransfers", "CancelTransfer"}
    leases = domas_pb2.DESCRIPTOR.services_by_name["Controller"].methods_by_name["Leases"]
    assert leases.client_streaming and leases.server_streaming


def test_chunk_result_round_trips_full_width_checksums() -> None:
    from domas.v1 import domas_pb2

    msg = domas_pb2.ChunkResult(report_id="r1", lease_id="l1", file_id=2**40, chunk_index=7,
                                adler32=0xFFFFFFFF, xxh3=2**64 - 1, error_kind="timeout", retriable=True)
    back = domas_pb2.ChunkResult.FromString(msg.SerializeToString())
    assert (back.adler32, back.xxh3, back.file_id, back.error_kind) == (0xFFFFFFFF, 2**64 - 1, 2**40, "timeout")


def _tools_version() -> str:
    from importlib.metadata import version

    return version("grpcio-tools")
