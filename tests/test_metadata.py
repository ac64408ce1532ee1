"""NeXus/HDF5 metadata extraction on small real files written with h5py."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from domas.catalogue.base import Dataset
from domas.catalogue.metadata import dataset_metadata, extract_file, plain, read_outline, summarise
from domas.catalogue.sqlite import SQLiteCatalogue


def group(parent, name, nx):
    g = parent.create_group(name)
    g.attrs["NX_class"] = nx
    return g


def write_nexus(path) -> None:
    with h5py.File(path, "w") as fh:
        fh.attrs["creator"] = "heps-daq 2.1"
        entry = group(fh, "entry", "NXentry")
        entry["title"] = "Si powder at 300 K"
        entry["start_time"] = "2025-03-01T10:00:00+08:00"
        entry["scan_number"] = np.int64(42)
        sample = group(entry, "sample", "NXsample")
        sample["name"] = b"Si powder"
        sample["temperature"] = 300.0
        sample["temperature"].attrs["units"] = "K"
        inst = group(entry, "instrument", "NXinstrument")
        inst["name"] = "B1 hard X-ray diffraction"
        source = group(inst, "source", "NXsource")
        source["name"] = "HEPS"
        data = group(entry, "data", "NXdata")
        data.attrs["signal"] = "counts"
        data.attrs["axes"] = np.array([b"x", b"y", b"."])
        data.create_dataset("counts", data=np.zeros((5, 4, 3), dtype="u4"))
        data["x"] = np.arange(5.0)
        group(fh, "entry2", "NXentry")


def test_nexus_fields_are_extracted(tmp_path):
    write_nexus(tmp_path / "scan.nxs")
    meta = extract_file(tmp_path / "scan.nxs")
    assert meta["format"] == "nexus" and meta["entries"] == 2 and meta["entry"] == "entry"
    assert meta["title"] == "Si powder at 300 K"
    assert meta["start_time"] == "2025-03-01T10:00:00+08:00" and meta["scan_number"] == 42
    assert meta["sample"] == {"name": "Si powder", "temperature": 300.0, "temperature_units": "K"}
    assert meta["instrument"] == {"name": "B1 hard X-ray diffraction", "source": {"name": "HEPS"}}
    assert meta["data"] == {"path": "data", "signal": "counts", "shape": [5, 4, 3], "dtype": "uint32",
                            "axes": ["x", "y", "."]}
    assert meta["creator"] == "heps-daq 2.1"
    assert json.loads(json.dumps(meta)) == meta                  # JSON types only


def test_plain_hdf5_lists_dataset_shapes(tmp_path):
    with h5py.File(tmp_path / "plain.h5", "w") as fh:
        fh.create_dataset("images", data=np.ones((2, 8, 8), dtype="f4"))
        fh.create_group("meta")["energy"] = 12.4
    meta = extract_file(tmp_path / "plain.h5")
    assert meta == {"format": "hdf5", "datasets": 2,
                    "shapes": [{"path": "/images", "shape": [2, 8, 8]}, {"path": "/meta/energy", "shape": []}]}


@pytest.mark.parametrize("content", [b"not an hdf5 file at all" * 10, b""])
def test_unreadable_file_gives_a_reason(tmp_path, content):
    (tmp_path / "broken.h5").write_bytes(content)
    meta = extract_file(tmp_path / "broken.h5")
    assert meta["format"] == "unreadable" and meta["error"].startswith("h5py cannot read it:")
    assert extract_file(tmp_path / "missing.h5")["format"] == "unreadable"


def test_large_arrays_are_not_read_and_node_count_is_bounded(tmp_path):
    with h5py.File(tmp_path / "big.h5", "w") as fh:
        fh.create_dataset("big", data=np.arange(10_000))
        for i in range(30):
            fh.create_group(f"g{i:02d}")
    outline = read_outline(tmp_path / "big.h5", max_nodes=10)
    assert len(outline["children"]) == 10
    assert "value" not in outline["children"]["big"] and outline["children"]["big"]["shape"] == [10_000]


def test_dataset_metadata_skips_unreadable_and_records_why(tmp_path):
    (tmp_path / "a_broken.h5").write_bytes(b"junk" * 100)
    write_nexus(tmp_path / "b_scan.nxs")
    (tmp_path / "notes.txt").write_text("hello")
    meta = dataset_metadata(str(tmp_path), ["notes.txt", "b_scan.nxs", "a_broken.h5"])
    assert meta["source"] == "b_scan.nxs" and meta["sample"]["name"] == "Si powder"
    assert [u["file"] for u in meta["unreadable"]] == ["a_broken.h5"]
    assert dataset_metadata(str(tmp_path), ["notes.txt"]) == {}
    only_bad = dataset_metadata(str(tmp_path), ["a_broken.h5"])
    assert only_bad["format"] == "unreadable" and only_bad["unreadable"][0]["error"]


def test_metadata_is_stored_with_the_dataset(tmp_path):
    write_nexus(tmp_path / "scan.nxs")
    meta = dataset_metadata(str(tmp_path), ["scan.nxs"])
    cat = SQLiteCatalogue(tmp_path / "cat.sqlite")
    pid = cat.upsert_dataset(Dataset("bt1", str(tmp_path), metadata=meta)).pid
    assert cat.get_dataset(pid).metadata == meta


def test_summarise_is_pure_over_an_outline():
    outline = {"attrs": {}, "children": {"e": {"attrs": {"NX_class": "NXentry"}, "children": {
        "title": {"attrs": {}, "value": "t"},
        "inst": {"attrs": {"NX_class": "NXinstrument"}, "children": {
            "sample_stage": {"attrs": {"NX_class": "NXsample"}, "children": {"name": {"attrs": {}, "value": "Fe"}}}}},
        "d": {"attrs": {"NX_class": "NXdata"}, "children": {
            "y": {"attrs": {"signal": 1}, "shape": [7], "dtype": "f8"}}}}}}}
    meta = summarise(outline)
    assert meta["title"] == "t" and meta["sample"] == {"name": "Fe"}          # found one level deeper
    assert meta["data"] == {"path": "d", "signal": "y", "shape": [7], "dtype": "f8"}


@pytest.mark.parametrize("value, expected", [
    (np.float32(1.5), 1.5), (np.array([1, 2]), [1, 2]), (b"ab", "ab"), (np.array([b"x"]), "x"),
    (float("nan"), None), ("x" * 1000, "x" * 500), (list(range(40)), list(range(16))),
])
def test_plain_values(value, expected):
    assert plain(value) == expected
