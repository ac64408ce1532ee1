"""Storage roots and path safety (domas.transfer.paths), the RPC field checks (transfer/validate.py) and
the roots a controller is given: table-driven over the pure cores, real files for symlinks."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from domas.config import load
from domas.errors import ConfigError, InvalidMessage, UnsafePath
from domas.transfer import validate
from domas.transfer.paths import Confinement, Location, contains, controller_roots, inside, normalise, parse_roots
from domas.v1 import domas_pb2 as pb

ROOTS = parse_roots([("storage.beamline", "/data/beamline"), ("storage.endpoints.eos", "root://EOS.example//heps")])


@pytest.mark.parametrize("text, loc", [
    ("/data/beamline/x", Location("", "/data/beamline/x")),
    ("/data//beamline/./x/", Location("", "/data/beamline/x")),
    ("file:///data/beamline/x", Location("", "/data/beamline/x")),
    ("root://eos.example//heps/a", Location("root://eos.example:1094", "/heps/a")),
    ("root://EOS.example:1094//heps/a", Location("root://eos.example:1094", "/heps/a")),
    ("/data/beamline/odd\nname", Location("", "/data/beamline/odd\nname")),
])
def test_normalise(text, loc):
    assert normalise(text) == loc


@pytest.mark.parametrize("text, sentence", [
    ("", "is empty"),
    ("scan001", "is relative"),
    ("./scan001", "is relative"),
    ("/data/beamline/../../etc/shadow", "contains '..'"),
    ("/data/beamline/a\x00b", "NUL"),
    ("/data/" + "n" * 256, "longer than 255 bytes"),
    ("/d" * 2100, "longer than 4096 bytes"),
    ("/" + "x" * 5000, "characters long"),
    ("file://host/etc/shadow", "not a local file URL"),
    ("file://etc/shadow", "not a local file URL"),
    ("http://example/x", "unsupported scheme"),
    ("root://eos.example/heps", "is relative"),
    ("root://eos.example//heps/a?xrd.cgi=1", "query"),
    ("root://eos.example:99999//heps", "port above 65535"),
    ("root://a/b//heps", "host:port"),
])
def test_normalise_refuses(text, sentence):
    with pytest.raises(UnsafePath, match=sentence.replace("?", r"\?").replace(".", r"\.")):
        normalise(text, "source")


@pytest.mark.parametrize("text, ok", [
    ("/data/beamline", True),
    ("/data/beamline/B1/raw/x.h5", True),
    ("/data/beamline10/x", False),          # a whole-component prefix only
    ("/data", False),
    ("/etc/shadow", False),
    ("root://eos.example:1094//heps/x", True),
    ("root://eos.example//hepsx", False),
    ("root://other.example//heps/x", False),
    ("root://user@eos.example//heps/x", False),
    ("xroot://eos.example//heps/x", False),
])
def test_inside_a_root(text, ok):
    assert (any(contains(r.location, normalise(text)) for r in ROOTS)) is ok
    if not ok:
        with pytest.raises(UnsafePath, match="outside the storage roots"):
            inside(text, ROOTS, "source")


def test_a_symlink_inside_a_root_pointing_outside_is_caught(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "d").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret").write_text("x")
    (root / "file-link").symlink_to(outside / "secret")
    (root / "dir-link").symlink_to(outside)
    (root / "d" / "ok-link").symlink_to(root / "d")
    guard = Confinement(parse_roots([("--root", str(root))]))
    for bad in ("file-link", "dir-link", "dir-link/new-file", "dir-link/new/deeper"):
        with pytest.raises(UnsafePath, match="through a symlink"):
            guard.check_real(guard.lexical(str(root / bad)))
    for good in ("d", "d/new", "d/ok-link/x", "not-yet"):
        guard.check_real(guard.lexical(str(root / good)))


def test_a_root_that_is_itself_a_symlink_still_holds_its_files(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    guard = Confinement(parse_roots([("--root", str(tmp_path / "alias"))]))
    guard.check_real(guard.lexical(str(tmp_path / "alias" / "f")))


def test_roots_come_from_the_tiers_the_endpoints_and_root_flags(tmp_path):
    cfg_file = tmp_path / "domas.toml"
    cfg_file.write_text('[storage]\nbeamline = "/data/beamline"\n'
                        '[storage.endpoints]\neos = "root://eos.example:1094//heps"\nscratch = "/scratch"\n')
    cfg = load(cfg_file, {})
    assert cfg.storage.roots() == (("storage.beamline", "/data/beamline"),
                                   ("storage.endpoints.eos", "root://eos.example:1094//heps"),
                                   ("storage.endpoints.scratch", "/scratch"))
    roots = controller_roots(cfg.storage.roots(), ["/extra"])
    assert [r.key for r in roots] == ["storage.beamline", "storage.endpoints.eos", "storage.endpoints.scratch",
                                      "--root"]
    env = load(None, {"DOMAS_STORAGE_ENDPOINTS": "a=/x,b=root://h//y"})
    assert env.storage.endpoints == (("a", "/x"), ("b", "root://h//y"))


@pytest.mark.parametrize("declared, key", [
    ([("storage.central", "relative/central")], "storage.central"),
    ([("--root", "/data/../etc")], "--root"),
    ([("storage.endpoints.x", "")], "storage.endpoints.x"),
])
def test_a_bad_root_is_a_config_error_naming_its_key(declared, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        controller_roots(declared)


def test_no_root_at_all_is_a_config_error():
    with pytest.raises(ConfigError, match="--root PATH_OR_URL"):
        controller_roots([])


def test_a_bad_endpoint_table_is_a_config_error(tmp_path):
    cfg_file = tmp_path / "domas.toml"
    cfg_file.write_text('[storage.endpoints]\n"bad name" = "/x"\n')
    with pytest.raises(ConfigError, match="storage.endpoints"):
        load(cfg_file, {})


def test_domas_controller_without_a_root_refuses_to_start(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOMAS_")}
    r = subprocess.run([sys.executable, "-m", "domas.cli", "controller", "--listen", "127.0.0.1:0",
                        "--state-dir", str(tmp_path / "c"), "--metrics-listen", "127.0.0.1:0"],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env)
    assert r.returncode == 78 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        "domas: the controller has no storage root to confine transfers to; give --root PATH_OR_URL, "
        "or set storage.beamline/central/tape or [storage.endpoints] in the configuration"]
    assert not (tmp_path / "c").exists()


# -- field checks (pure) ------------------------------------------------------------------------

def _submit(**fields) -> pb.SubmitTransferRequest:
    base = dict(sources=["/data/beamline/B1/raw"], destination="/data/beamline/copy/", beamline="B1")
    return pb.SubmitTransferRequest(**(base | fields))


@pytest.mark.parametrize("req, sentence", [
    (_submit(sources=[]), "at least one source"),
    (_submit(destination=""), "at least one source and a destination"),
    (_submit(sources=[""] * 100_001), "at most 100000 sources"),
    (_submit(sources=["/etc/shadow"]), "outside the storage roots"),
    (_submit(destination="/etc/cron.d/"), "outside the storage roots"),
    (_submit(sources=["scan001"]), "is relative"),
    (_submit(sources=[""]), "is empty"),
    (_submit(sources=["/data/beamline/a\x00"]), "NUL"),
    (_submit(sources=["/data/beamline/x"] * 3), "more than once"),
    (_submit(beamline="b" * 100_000), "at most 64"),
    (_submit(beamline="b1\n"), "control"),
    (_submit(beamline="../b1"), "slash"),
    (_submit(priority=2**31 - 1), "priority"),
    (_submit(options=pb.TransferOptions(chunk_size=1)), "chunk_size is 1 bytes"),
    (_submit(options=pb.TransferOptions(chunk_size=2**63)), "chunk_size"),
    (_submit(options=pb.TransferOptions(chunk_size=(1 << 30) + 1)), "chunk_size"),
    (_submit(options=pb.TransferOptions(verify=7)), "verify"),
    (_submit(options=pb.TransferOptions(max_attempts=10**9)), "max_attempts"),
    (_submit(request_id="r" * 200), "request_id"),
])
def test_submissions_refused(req, sentence):
    with pytest.raises(InvalidMessage, match=sentence.replace("(", r"\(")):
        validate.submit(req, ROOTS, validate.Limits())


def test_a_sane_submission_passes():
    validate.submit(_submit(options=pb.TransferOptions(chunk_size=64 << 10), priority=-5, request_id="central:ab12"),
                    ROOTS, validate.Limits())
    validate.submit(_submit(sources=["root://eos.example//heps/a", "/data/beamline/a", "/data/beamline/a/"]),
                    ROOTS, validate.Limits())


@pytest.mark.parametrize("check, req, sentence", [
    (validate.get_status, pb.GetStatusRequest(transfer_id="t", page_token="\u00b2"), "page token"),
    (validate.get_status, pb.GetStatusRequest(transfer_id="t", page_token="9" * 30), "page token"),
    (validate.get_status, pb.GetStatusRequest(transfer_id="t", file_states=[42]), "file_states"),
    (validate.get_status, pb.GetStatusRequest(transfer_id="t", page_size=10**6), "page_size"),
    (validate.get_status, pb.GetStatusRequest(transfer_id="x" * 65), "transfer_id"),
    (validate.list_transfers, pb.ListTransfersRequest(states=[-1]), "states"),
    (validate.cancel, pb.CancelTransferRequest(transfer_id="t", reason="a\x00"), "NUL"),
    (validate.register, pb.RegisterAgentRequest(name="a" * 129), "name"),
    (validate.heartbeat, pb.HeartbeatRequest(agent_id="a", lease_ids=["l\x00"]), "NUL"),
    (validate.stream_message, pb.LeasesRequest(agent_id="a", lease_request=pb.LeaseRequest(want=2**32 - 1)),
     "want"),
])
def test_other_requests_refused(check, req, sentence):
    with pytest.raises(InvalidMessage, match=sentence):
        check(req)


@pytest.mark.parametrize("changes, sentence", [
    (dict(offset=2**63), "offset"),
    (dict(file_id=2**64 - 1), "file_id"),
    (dict(seconds=float("nan")), "seconds"),
    (dict(seconds=-1.0), "seconds"),
    (dict(error_message="e" * 5000), "error_message"),
    (dict(lease_id=""), "lease_id is empty"),
])
def test_a_bad_chunk_result_has_a_reason(changes, sentence):
    ok = dict(report_id="r", lease_id="l", transfer_id="t", file_id=1, offset=0, length=10, bytes=10, seconds=0.1)
    assert validate.result_problem(pb.ChunkResult(**ok)) == ""
    assert sentence in validate.result_problem(pb.ChunkResult(**(ok | changes)))


# -- the archiver derives every path from a tier root -------------------------------------------

@pytest.mark.parametrize("dataset_path, relpath", [
    ("/B1/202611/Data/BT1/raw", "/etc/shadow"),            # posixpath.join would drop the tier root
    ("/B1/202611/Data/BT1/raw", "../../../../../etc/shadow"),
    ("/../../etc", "shadow"),
    ("/B1/raw", "a\x00b"),
])
def test_the_archiver_never_builds_a_path_outside_its_tier(dataset_path, relpath):
    from domas.archive.archiver import tier_url

    with pytest.raises(UnsafePath, match="would leave the storage tier"):
        tier_url("/data/central", dataset_path, relpath)


def test_the_archiver_keeps_odd_but_inside_names():
    from domas.archive.archiver import tier_url

    assert tier_url("/data/central", "/B1/raw", "a..b/new\nline.h5") == "/data/central/B1/raw/a..b/new\nline.h5"
    assert tier_url("root://t:1094//archive", "/B1/raw", "x.h5") == "root://t:1094//archive/B1/raw/x.h5"
