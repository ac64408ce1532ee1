"""Metadata acquisition, pure parts: message parsing, run -> dataset routing, annotations that only
fill empty fields, the [source.amqp] configuration. No broker needed."""

from __future__ import annotations

import json

import pytest

from domas import config
from domas.archive.sources import from_config
from domas.archive.sources.base import fill_empty
from domas.archive.sources.messages import (FileClosed, annotation, parse, relative_to_root, run_files,
                                            start_dataset, start_prefix)
from domas.catalogue.base import Scan
from domas.errors import ConfigError, DomasError, InvalidMessage

ROOT = "/data/beamline"
T = 1_795_000_000.0          # 2026-11-18 UTC


def body(obj) -> bytes:
    return json.dumps(obj).encode()


def test_file_closed_parsed_and_checked():
    m = parse("file.closed", body({"path": f"{ROOT}/B1/202611/Data/BT1/raw/a.h5", "size": 5, "adler32": "0A1B2C3D"}))
    assert m == FileClosed(f"{ROOT}/B1/202611/Data/BT1/raw/a.h5", 5, "0a1b2c3d")
    assert parse("file.closed", body({"path": "x", "size": 0})) == FileClosed("x", 0, "")


@pytest.mark.parametrize("key,raw,reason", [
    ("file.closed", b"\xff\xfe", "not JSON"),
    ("file.closed", b"[1, 2]", "not a JSON object"),
    ("file.closed", body({"size": 1}), "'path'"),
    ("file.closed", body({"path": "a", "size": -1}), "'size'"),
    ("file.closed", body({"path": "a", "size": True}), "'size'"),
    ("file.closed", body({"path": "a", "size": 1, "adler32": "xyz"}), "'adler32'"),
    ("bluesky.start", body({"name": "begin", "doc": {}}), "not a Bluesky document name"),
    ("bluesky.start", body({"name": "start", "doc": {"uid": "u"}}), "no 'time'"),
    ("bluesky.stop", body({"name": "stop", "doc": {"uid": "s"}}), "no 'run_start'"),
    ("weird.key", body({}), "neither file.closed"),
])
def test_malformed_messages_refused_with_a_reason(key, raw, reason):
    with pytest.raises(InvalidMessage, match=reason):
        parse(key, raw)


@pytest.mark.parametrize("doc,expected", [
    ({"data_path": f"{ROOT}/B1/202611/Data/BT7/raw/scan42"}, "B1/202611/Data/BT7/raw"),
    ({"data_path": "ID21/202612/Data/P9/processed"}, "ID21/202612/Data/P9/processed"),
    ({"beamline": "B1", "beamtime_id": "BT7"}, "B1/202611/Data/BT7/raw"),
])
def test_run_dataset_from_start_document(doc, expected):
    assert start_dataset({"uid": "u", "time": T, **doc}, ROOT) == expected


@pytest.mark.parametrize("doc", [
    {"data_path": "/elsewhere/B1/202611/Data/BT7/raw"},
    {"data_path": f"{ROOT}/B1/../../etc/raw"},
    {"data_path": "B1/202611/NotData/BT7/raw"},
    {"beamline": "B1"},
])
def test_start_documents_without_a_dataset_refused(doc):
    with pytest.raises(DomasError):
        start_dataset({"uid": "u", "time": T, **doc}, ROOT)


def test_relative_to_root_refuses_escapes():
    assert relative_to_root(f"{ROOT}/B1/x", ROOT) == "B1/x"
    for bad in (f"{ROOT}/../etc/passwd", "/data/beamline2/x", "a/../../b"):
        with pytest.raises(DomasError):
            relative_to_root(bad, ROOT)


def test_annotations_of_a_run():
    start = {"uid": "r1", "time": T, "scan_id": 3, "plan_name": "scan", "detectors": ["det"],
             "motors": ["motor"], "proposal_id": "P100", "sample": "Ni foil"}
    a = annotation("start", start, "B1/202611/Data/BT7/raw")
    assert a.proposal == "P100"
    assert a.metadata == {"sample": "Ni foil", "proposal": "P100"}, "runs are not kept in the dataset's metadata"
    assert a.scans == {"r1": {"scan_id": 3, "plan_name": "scan", "detectors": ("det",), "motors": ("motor",),
                              "sample": "Ni foil", "start_time": T}}
    stop = annotation("stop", {"uid": "s", "run_start": "r1", "time": T + 5, "exit_status": "success",
                               "num_events": {"primary": 5}}, a.dataset_path)
    assert stop.metadata == {} and stop.scans == {"r1": {"stop_time": T + 5, "exit_status": "success",
                                                        "num_events": {"primary": 5}}}
    desc = annotation("descriptor", {"uid": "d", "run_start": "r1", "name": "primary",
                                     "data_keys": {"motor": {}, "det": {}}}, a.dataset_path)
    assert desc.scans == {"r1": {"streams": {"primary": ["det", "motor"]}}}
    assert annotation("event", {"uid": "e", "descriptor": "d"}, a.dataset_path) is None
    odd = annotation("start", {"uid": "r2", "time": T, "scan_id": True, "plan_name": 7, "detectors": "det"}, "x")
    assert odd.scans == {"r2": {"start_time": T}}, "odd field types are left out, the run is kept"


def test_run_uids_must_be_strings():
    for doc in ({"uid": 5, "time": T}, {"uid": "", "time": T}, {"uid": "u" * 201, "time": T}):
        with pytest.raises(InvalidMessage, match="'uid' must be a string"):
            parse("bluesky.start", body({"name": "start", "doc": doc}))
    with pytest.raises(InvalidMessage, match="'run_start' must be a string"):
        parse("bluesky.stop", body({"name": "stop", "doc": {"uid": "s", "run_start": ["r"]}}))


def test_fill_empty_never_overwrites_and_is_idempotent():
    operator = {"sample": "set by operator", "scans": {"r1": {"plan_name": "scan"}}, "title": ""}
    new = {"sample": "from bluesky", "title": "T", "scans": {"r1": {"plan_name": "x", "exit_status": "success"},
                                                             "r2": {"plan_name": "count"}}}
    once = fill_empty(operator, new)
    assert once == {"sample": "set by operator", "title": "T",
                    "scans": {"r1": {"plan_name": "scan", "exit_status": "success"}, "r2": {"plan_name": "count"}}}
    assert fill_empty(once, new) == once


def test_source_config(tmp_path):
    p = tmp_path / "domas.toml"
    p.write_text('[source]\nscan = false\n[source.amqp]\nurl = "amqp://guest:guest@127.0.0.1:5672/"\n')
    cfg = config.load(p, {})
    assert (cfg.source.scan, cfg.source.amqp.url, cfg.source.amqp.exchange) == (
        False, "amqp://guest:guest@127.0.0.1:5672/", "domas")
    env = config.load(None, {"DOMAS_SOURCE_AMQP_URL": "amqp://h/", "DOMAS_SOURCE_AMQP_EXCHANGE": "bl"})
    assert (env.source.amqp.url, env.source.amqp.exchange, env.source.scan) == ("amqp://h/", "bl", True)
    with pytest.raises(ConfigError, match="source.amqp.bogus: unknown key"):
        config.load(None, {"DOMAS_SOURCE_AMQP_BOGUS": "1"})
    with pytest.raises(ConfigError, match="source.amqp.url"):
        config.load(None, {"DOMAS_SOURCE_AMQP_URL": "http://h/"})
    assert [s.name for s in from_config(config.load(None, {"DOMAS_STATE_DIR": str(tmp_path)}))] == ["scan"]
    both = config.load(None, {"DOMAS_STATE_DIR": str(tmp_path), "DOMAS_SOURCE_AMQP_URL": "amqp://h/"})
    assert [s.name for s in from_config(both)] == ["scan", "amqp"]


def test_annotations_in_later_batches_reach_the_stored_dataset(tmp_path):
    """A run's stop (a later batch) is added to the scan record its start made; operator keys stay;
    the dataset's metadata holds no runs (a pass writes only the scans it saw)."""
    from domas.config import CatalogueConfig
    from domas.catalogue import Dataset, open_catalogue
    from domas.archive.sources.record import apply_annotations

    path = "B1/202611/Data/BT7/raw"
    with open_catalogue(CatalogueConfig(), tmp_path) as cat:
        cat.upsert_dataset(Dataset(beamtime="BT7", path="/" + path, metadata={"sample": "operator's"}))
        start = {"uid": "r1", "time": T, "scan_id": 1, "plan_name": "scan", "sample": "bluesky's",
                 "proposal_id": "P1"}
        apply_annotations(cat, [annotation("start", start, path)])
        stop = annotation("stop", {"uid": "s1", "run_start": "r1", "time": T + 1, "exit_status": "success",
                                   "num_events": {"primary": 5}}, path)
        apply_annotations(cat, [stop])
        apply_annotations(cat, [annotation("start", {**start, "uid": "r2"}, path)])
        apply_annotations(cat, [stop, annotation("stop", {"uid": "s1", "run_start": "r1", "time": T + 9,
                                                          "exit_status": "abort"}, path)])     # replayed, late
        ds = cat.dataset_by_path("/" + path)
        assert ds.metadata == {"sample": "operator's", "proposal": "P1"}
        r1 = cat.get_scan("r1")
        assert (r1.dataset, r1.plan_name, r1.sample, r1.start_time) == (ds.pid, "scan", "bluesky's", T)
        assert (r1.exit_status, r1.stop_time, r1.num_events) == ("success", T + 1, {"primary": 5})
        assert [s.uid for s in cat.scans_of(ds.pid)] == ["r1", "r2"]
        assert cat.get_beamtime("BT7").proposal == "P1"


def test_files_of_a_run_by_data_path_or_time_window():
    doc = {"uid": "r", "time": T, "data_path": f"{ROOT}/B1/202611/Data/BT7/raw/scan42"}
    assert start_prefix(doc, ROOT, "B1/202611/Data/BT7/raw") == "scan42"
    assert start_prefix({"uid": "r", "time": T}, ROOT, "B1/202611/Data/BT7/raw") == ""
    files = [("scan42/a.h5", T + 1), ("scan42/sub/b.h5", T + 2), ("scan420/c.h5", T + 1), ("d.h5", T + 50)]
    by_path = Scan("r", "pid", **annotation("start", doc, "B1/202611/Data/BT7/raw", "scan42").scans["r"])
    assert run_files(by_path, files, grace=10) == 2
    start = annotation("start", {"uid": "r", "time": T}, "B1/202611/Data/BT7/raw").scans["r"]
    stop = annotation("stop", {"uid": "s", "run_start": "r", "time": T + 5}, "x").scans["r"]
    assert run_files(Scan("r", "pid", **start, **stop), files, grace=10) == 3       # written from start to stop + 10 s
    assert run_files(Scan("r", "pid", **start, **stop), files, grace=100) == 4
    assert run_files(Scan("r", "pid", **start, **stop), [("e.h5", T - 30)], grace=10) == 0


def test_catalogue_show_prints_one_line_per_scan(tmp_path):
    from domas.config import CatalogueConfig
    from domas.catalogue import Dataset, open_catalogue
    from tests.fixtures.common import run_domas

    with open_catalogue(CatalogueConfig(), tmp_path / "state") as cat:
        ds = cat.upsert_dataset(Dataset(beamtime="BT7", path="/B1/202611/Data/BT7/raw", metadata={
            "sample": {"name": "Ni foil"}, "scans": {"r0": {"plan_name": "count", "scan_id": 0}}}))   # kept before
        cat.upsert_scans([Scan("r1", ds.pid, scan_id=1, plan_name="scan", start_time=T),
                          Scan("r2", ds.pid, scan_id=2, plan_name="count", exit_status="success")])
    cfg = tmp_path / "domas.toml"
    cfg.write_text(f'state_dir = "{tmp_path}/state"\n')
    out = run_domas("--config", cfg, "catalogue", "show", ds.pid, check=True).stdout
    assert "  sample: {'name': 'Ni foil'}" in out and "  scans:\n" in out
    assert "    r0: plan_name=count, scan_id=0\n" in out
    assert "    r1: plan_name=scan, scan_id=1, start_time=2026-11-18T11:06:40.000+00:00\n" in out
    assert "    r2: exit_status=success, plan_name=count, scan_id=2\n" in out


def test_run_index_writes_a_batch_in_one_transaction(tmp_path):
    """The run index's connection autocommits: executemany alone committed (and appended to the WAL)
    once per run, ~4 ms of the archiver's pass per 100 runs; a batch is one transaction now."""
    from domas.archive.sources.amqp import RunIndex

    index = RunIndex(tmp_path / "runs.sqlite")
    try:
        runs = {f"run-{i:05d}-{'x' * 30}": "B1/202611/Data/BT7/raw" for i in range(2000)}
        index.put_many(runs)
        index.add_checks({uid: (ds, T) for uid, ds in runs.items()})
        index.checks_done(list(runs)[:1000])
        wal = (tmp_path / "runs.sqlite-wal").stat().st_size
        assert wal < 1 << 20, f"the WAL grew to {wal} bytes: one commit per row"
        assert index.get("run-01999-" + "x" * 30) == "B1/202611/Data/BT7/raw"
        assert len(index.due_checks(T + 1, limit=5000)) == 1000
    finally:
        index.close()


def test_pending_file_checks_of_runs_kept_the_old_way_are_closed(tmp_path):
    """A catalogue from before scan records holds a run inside its dataset's metadata: its pending
    file check is closed (not retried every pass, nor blocking the 100 oldest checks for good);
    a run whose start is not committed yet is retried; a run with a record is checked."""
    from domas.archive.sources.amqp import AmqpSource
    from domas.archive.sources.base import Batch
    from domas.catalogue import Dataset, open_catalogue
    from domas.config import AmqpSourceConfig, CatalogueConfig

    path = "B1/202611/Data/BT7/raw"
    with open_catalogue(CatalogueConfig(), tmp_path) as cat:
        ds = cat.upsert_dataset(Dataset(beamtime="BT7", path="/" + path, metadata={
            "scans": {"old-run": {"plan_name": "scan", "exit_status": "success"}}}))
        cat.upsert_scans([Scan("new-run", ds.pid, start_time=T, stop_time=T + 1)])
    source = AmqpSource(AmqpSourceConfig(url="amqp://127.0.0.1:1/"), str(tmp_path / "beamline"), tmp_path,
                        catalogue=CatalogueConfig())
    try:
        source.runs.add_checks({uid: (path, T) for uid in ("old-run", "new-run", "unstarted")})
        batch = Batch()
        assert sorted(source._check_files(T + 1, batch)) == ["new-run", "old-run"]
        assert [a.scans for a in batch.annotations] == [{"new-run": {"files": 0}}]
    finally:
        source.runs.close()
        source._cat.close()
