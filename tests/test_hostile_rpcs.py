"""Issue 8 finding 8: a client holding the token must not copy anything anywhere.

One real controller (a `domas controller` process confined with --root to one directory) takes
the hostile submissions the fault hunt made; each is refused with INVALID_ARGUMENT and one
sentence, quickly, without growing the controller, and nothing is written outside the root.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest

from domas.controller.service import _plan_files
from domas.errors import InvalidMessage
from domas.transfer.paths import parse_roots
from domas.v1 import domas_pb2 as pb
from domas.v1 import domas_pb2_grpc as pb_grpc
from tests.fixtures.common import free_port, stop_process
from tests.fixtures.controller import _controller

MD = (("authorization", "Bearer s3cret"),)


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc status")


@pytest.fixture(scope="module")
def ctl(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    root, outside = tmp / "root", tmp / "outside"
    (root / "src").mkdir(parents=True)
    outside.mkdir()
    (root / "src" / "a.bin").write_bytes(b"a" * 1000)
    (outside / "secret").write_bytes(b"secret")
    port = free_port()
    proc = _controller(tmp, port, roots=(root,))
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield SimpleNamespace(stub=pb_grpc.ControllerStub(channel), root=root, outside=outside, proc=proc,
                          log=tmp / f"controller-{port}.log")
    channel.close()
    stop_process(proc)
    log = (tmp / f"controller-{port}.log").read_text()
    assert "Traceback" not in log and "Unexpected" not in log, log[-3000:]


def _refused(ctl, timeout: float = 20, **fields) -> str:
    """Submit; assert INVALID_ARGUMENT and return its sentence."""
    base = dict(sources=[str(ctl.root / "src" / "a.bin")], destination=f"{ctl.root}/dst/", beamline="B1")
    with pytest.raises(grpc.RpcError) as info:
        ctl.stub.SubmitTransfer(pb.SubmitTransferRequest(**(base | fields)), metadata=MD, timeout=timeout)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value
    sentence = info.value.details()
    assert "\n" not in sentence and len(sentence) < 400 and "Traceback" not in sentence
    return sentence


def test_a_submission_inside_the_root_is_accepted(ctl):
    resp = ctl.stub.SubmitTransfer(pb.SubmitTransferRequest(
        sources=[str(ctl.root / "src")], destination=f"{ctl.root}/ok/", beamline="B1",
        options=pb.TransferOptions(chunk_size=64 << 10)), metadata=MD, timeout=20)
    assert resp.files == 1 and resp.bytes == 1000


def test_etc_shadow_as_a_source_is_refused(ctl):
    assert "outside the storage roots" in _refused(ctl, sources=["/etc/shadow"])
    assert "outside the storage roots" in _refused(ctl, sources=["file:///etc/shadow"])


def test_a_destination_under_etc_is_refused(ctl):
    assert "outside the storage roots" in _refused(ctl, destination="/etc/domas-hostile.bin")
    assert "outside the storage roots" in _refused(ctl, destination="/etc/cron.d/")
    assert not Path("/etc/domas-hostile.bin").exists()


def test_relative_and_dotted_paths_are_refused(ctl):
    assert "is relative" in _refused(ctl, sources=["src/a.bin"])
    assert "is relative" in _refused(ctl, destination="dst/")
    assert "'..'" in _refused(ctl, sources=[f"{ctl.root}/../outside/secret"])
    assert "not a local file URL" in _refused(ctl, sources=["file://etc/shadow"])


def test_the_empty_string_is_refused(ctl):
    assert "is empty" in _refused(ctl, sources=[""])
    assert "is empty" in _refused(ctl, sources=[str(ctl.root / "src" / "a.bin"), ""])


def test_a_million_empty_sources_are_refused_quickly_and_small(ctl):
    start = time.monotonic()
    sentence = _refused(ctl, sources=[""] * 1_000_000, timeout=15)
    took = time.monotonic() - start
    assert "at most 100000 sources" in sentence
    assert took < 5, took
    assert _peak_rss_kib(ctl.proc.pid) < 400_000      # the old controller grew to 2 GB


def test_one_source_copied_100000_times_to_one_destination_is_refused(ctl):
    src = str(ctl.root / "src" / "a.bin")
    assert "more than once" in _refused(ctl, sources=[src] * 100_000)


def test_two_sources_landing_on_one_destination_are_refused(ctl):
    for d in ("x", "y"):
        (ctl.root / d).mkdir(exist_ok=True)
        (ctl.root / d / "same.bin").write_bytes(b"1")
    sentence = _refused(ctl, sources=[str(ctl.root / "x" / "same.bin"), str(ctl.root / "y" / "same.bin")],
                        destination=f"{ctl.root}/dup/")
    assert "same destination" in sentence


@pytest.mark.parametrize("size", [1, 4096, (1 << 30) + 1, 2**63, 2**64 - 1])
def test_chunk_sizes_out_of_range_are_refused(ctl, size):
    assert "chunk_size" in _refused(ctl, options=pb.TransferOptions(chunk_size=size))


def test_a_nul_in_a_path_is_refused(ctl):
    assert "NUL" in _refused(ctl, sources=[f"{ctl.root}/src/a\x00.bin"])
    assert "NUL" in _refused(ctl, destination=f"{ctl.root}/d\x00st/")


def test_a_100_kb_beamline_name_is_refused(ctl):
    assert "at most 64" in _refused(ctl, beamline="b" * 100_000)


def test_a_symlink_inside_the_root_pointing_outside_is_refused(ctl):
    (ctl.root / "leak").symlink_to(ctl.outside / "secret")
    (ctl.root / "escape").symlink_to(ctl.outside)
    assert "through a symlink" in _refused(ctl, sources=[str(ctl.root / "leak")])
    assert "through a symlink" in _refused(ctl, sources=[f"{ctl.root}/escape/"])
    assert "through a symlink" in _refused(ctl, destination=f"{ctl.root}/escape/new/")
    assert sorted(p.name for p in ctl.outside.iterdir()) == ["secret"]


def test_a_symlinked_directory_below_the_destination_is_refused(ctl):
    """The source tree `tree` would land in dst2/tree, which is a link out of the root."""
    (ctl.root / "tree").mkdir()
    (ctl.root / "tree" / "f").write_bytes(b"f")
    (ctl.root / "dst2").mkdir()
    (ctl.root / "dst2" / "tree").symlink_to(ctl.outside)
    assert "through a symlink" in _refused(ctl, sources=[str(ctl.root / "tree")], destination=f"{ctl.root}/dst2/")
    assert sorted(p.name for p in ctl.outside.iterdir()) == ["secret"]


@pytest.mark.parametrize("request_", [
    pb.GetStatusRequest(transfer_id="t", include_files=True, page_token="\u00b2"),
    pb.GetStatusRequest(transfer_id="t" * 100_000),
    pb.ListTransfersRequest(page_token="9" * 40),
    pb.ListTransfersRequest(states=[99]),
])
def test_hostile_queries_are_invalid_argument(ctl, request_):
    call = ctl.stub.GetStatus if isinstance(request_, pb.GetStatusRequest) else ctl.stub.ListTransfers
    with pytest.raises(grpc.RpcError) as info:
        call(request_, metadata=MD, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_tree_larger_than_the_file_limit_is_refused_before_anything_is_created(tmp_path):
    root = tmp_path / "root"
    (root / "many").mkdir(parents=True)
    for i in range(20):
        (root / "many" / f"f{i}").write_bytes(b"")
    with pytest.raises(InvalidMessage, match="more than 10 files and directories"):
        _plan_files([str(root / "many")], f"{root}/out/", False, parse_roots([("--root", str(root))]), 10)
    assert not (root / "out").exists()
    files, _ = _plan_files([str(root / "many")], f"{root}/out/", False, parse_roots([("--root", str(root))]), 21)
    assert len(files) == 20


def test_the_controllers_own_state_is_never_a_destination_or_source(tmp_path):
    """A root that holds the controller's state directory (here: the whole tmp dir) still does not
    let a client overwrite or read the controller's SQLite state."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_bytes(b"f")
    port = free_port()
    proc = _controller(tmp_path, port)            # root: tmp_path; state: tmp_path/ctl
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.ControllerStub(channel)
            for sources, destination in (([str(tmp_path / "src" / "f")], str(tmp_path / "ctl" / "controller.sqlite")),
                                         ([str(tmp_path / "src")], f"{tmp_path}/ctl/"),
                                         ([str(tmp_path / "ctl")], f"{tmp_path}/stolen/")):
                with pytest.raises(grpc.RpcError) as info:
                    stub.SubmitTransfer(pb.SubmitTransferRequest(sources=sources, destination=destination),
                                        metadata=MD, timeout=20)
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "own state directory" in info.value.details()
    finally:
        stop_process(proc)
    assert not (tmp_path / "stolen").exists() and not (tmp_path / "ctl" / "src").exists()
