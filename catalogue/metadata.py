"""Scientific metadata from NeXus/HDF5 files, for the dataset record.

A thin shell (`read_outline`, h5py) turns a file into a plain outline: nested dicts of groups
(attrs, children) and datasets (shape, dtype, small values), bounded in depth and node count so a
huge file costs little. A pure core (`summarise`) picks the NeXus fields from that outline.
Invariants:
- Only JSON types leave this module (str, int, float, bool, None, list, dict); strings are cut at
  MAX_TEXT characters, arrays larger than MAX_VALUES elements are described by shape only.
- A file h5py cannot read never raises: its summary is {"format": "unreadable", "error": reason},
  so the file is still catalogued and the reason recorded.
"""

from __future__ import annotations

import os
from typing import Any, Iterable

MAX_TEXT = 500
MAX_VALUES = 16
MAX_NODES = 2000
MAX_DEPTH = 6
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".nxs", ".nx5", ".nx", ".nexus")

_ENTRY_FIELDS = ("title", "start_time", "end_time", "duration", "experiment_identifier", "entry_identifier",
                 "scan_number", "definition", "program_name")
_SAMPLE_FIELDS = ("name", "chemical_formula", "description", "temperature", "type", "sample_id")
_INSTRUMENT_FIELDS = ("name", "type")


# -- the pure core -------------------------------------------------------------------------------

def plain(value: Any) -> Any:
    """A value read from HDF5 (numpy scalar/array, bytes) as a JSON type, bounded in size."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value[:MAX_TEXT]
    if isinstance(value, (list, tuple)):
        items = [plain(v) for v in value[:MAX_VALUES]]
        return items[0] if len(items) == 1 else items
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    return str(value)[:MAX_TEXT]


def nx_class(node: dict) -> str:
    return str(node.get("attrs", {}).get("NX_class", ""))


def _children_of_class(group: dict, cls: str) -> list[tuple[str, dict]]:
    return [(name, child) for name, child in sorted(group.get("children", {}).items()) if nx_class(child) == cls]


def _fields(group: dict, names: Iterable[str]) -> dict:
    out = {}
    for name in names:
        child = group.get("children", {}).get(name)
        if child is not None and "value" in child:
            out[name] = child["value"]
            units = child.get("attrs", {}).get("units")
            if units:
                out[f"{name}_units"] = units
    return out


def _first_of_class(group: dict, cls: str, depth: int = 2) -> tuple[str, dict] | None:
    """The first group of NX class `cls` at most `depth` levels below `group` (breadth first)."""
    level = [("", group)]
    for _ in range(depth):
        nxt = []
        for prefix, node in level:
            for name, child in sorted(node.get("children", {}).items()):
                path = f"{prefix}/{name}" if prefix else name
                if nx_class(child) == cls:
                    return path, child
                nxt.append((path, child))
        level = nxt
    return None


def _data_summary(group: dict) -> dict:
    attrs = group.get("attrs", {})
    children = group.get("children", {})
    signal = attrs.get("signal") or next((n for n, c in sorted(children.items())
                                         if c.get("attrs", {}).get("signal") in (1, "1")), None)
    if signal is None:
        signal = next((n for n, c in sorted(children.items()) if "shape" in c), None)
    out: dict = {"signal": signal}
    if signal in children and "shape" in children[signal]:
        out["shape"] = children[signal]["shape"]
        out["dtype"] = children[signal].get("dtype")
    axes = attrs.get("axes")
    if axes is not None:
        out["axes"] = axes if isinstance(axes, list) else [axes]
    return out


def _entry_summary(name: str, entry: dict) -> dict:
    out: dict = {"entry": name, **_fields(entry, _ENTRY_FIELDS)}
    sample = _first_of_class(entry, "NXsample")
    if sample:
        out["sample"] = _fields(sample[1], _SAMPLE_FIELDS)
    instrument = _first_of_class(entry, "NXinstrument")
    if instrument:
        out["instrument"] = _fields(instrument[1], _INSTRUMENT_FIELDS)
        source = _first_of_class(instrument[1], "NXsource", depth=1)
        if source:
            out["instrument"]["source"] = _fields(source[1], ("name", "probe", "type"))
    data = _first_of_class(entry, "NXdata")
    if data:
        out["data"] = {"path": data[0], **_data_summary(data[1])}
    return out


def summarise(outline: dict) -> dict:
    """The dataset-record metadata of one file, from its outline (see read_outline)."""
    entries = _children_of_class(outline, "NXentry")
    if not entries:
        shapes = [(path, node["shape"]) for path, node in _walk(outline) if "shape" in node]
        return {"format": "hdf5", "datasets": len(shapes),
                "shapes": [{"path": path, "shape": shape} for path, shape in shapes[:20]]}
    out = {"format": "nexus", "entries": len(entries), **_entry_summary(*entries[0])}
    creator = outline.get("attrs", {}).get("creator")
    if creator:
        out["creator"] = creator
    return out


def _walk(node: dict, prefix: str = ""):
    for name, child in sorted(node.get("children", {}).items()):
        path = f"{prefix}/{name}"
        yield path, child
        yield from _walk(child, path)


# -- the h5py shell ------------------------------------------------------------------------------

def _attrs(obj) -> dict:
    out = {}
    for key in list(obj.attrs.keys())[:50]:
        try:
            out[str(key)] = plain(obj.attrs[key])
        except (OSError, TypeError, ValueError) as e:
            out[str(key)] = f"<unreadable: {e}>"[:MAX_TEXT]
    return out


def read_outline(path: str | os.PathLike, *, max_nodes: int = MAX_NODES, max_depth: int = MAX_DEPTH) -> dict:
    """The file as plain nested dicts (see module docstring); raises OSError if h5py cannot open it."""
    import h5py

    budget = [max_nodes]

    def visit(obj, depth: int) -> dict:
        node: dict = {"attrs": _attrs(obj)}
        if isinstance(obj, h5py.Dataset):
            node["shape"] = list(obj.shape)
            node["dtype"] = str(obj.dtype)
            if obj.size <= MAX_VALUES and obj.dtype.kind in "biufSUO":
                node["value"] = plain(obj[()])
            return node
        node["children"] = {}
        if depth >= max_depth:
            return node
        for name in obj:
            if budget[0] <= 0:
                break
            budget[0] -= 1
            child = obj.get(name)
            if child is not None:
                node["children"][name] = visit(child, depth + 1)
        return node

    with h5py.File(path, "r") as fh:
        return visit(fh, 0)


def extract_file(path: str | os.PathLike) -> dict:
    """Summary of one HDF5/NeXus file; for a file h5py cannot read, the reason instead."""
    try:
        return summarise(read_outline(path))
    except (OSError, KeyError, ValueError, RuntimeError, TypeError) as e:
        return {"format": "unreadable", "error": f"h5py cannot read it: {e}"[:MAX_TEXT]}


def is_hdf5_name(path: str) -> bool:
    return path.lower().endswith(HDF5_SUFFIXES)


def dataset_metadata(root: str, relpaths: Iterable[str], *, max_tries: int = 5) -> dict:
    """Metadata for a dataset: the summary of its first readable HDF5/NeXus file (by path), plus
    the files tried before it that could not be read, with the reasons. {} without HDF5 files."""
    unreadable = []
    for rel in sorted(p for p in relpaths if is_hdf5_name(p))[:max_tries]:
        summary = extract_file(os.path.join(root, rel))
        if summary["format"] != "unreadable":
            return {"source": rel, **summary, **({"unreadable": unreadable} if unreadable else {})}
        unreadable.append({"file": rel, "error": summary["error"]})
    return {"format": "unreadable", "unreadable": unreadable} if unreadable else {}
