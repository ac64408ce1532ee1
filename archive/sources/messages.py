"""The bus messages the archiver understands, and what each one means for the catalogue (pure).

Wire format (exchange `domas`, type topic, durable; bodies are UTF-8 JSON objects):
- routing key `bluesky.<name>`: one Bluesky (event-model) document,
  `{"name": "start" | "descriptor" | "event" | "event_page" | "stop" | ..., "doc": {...}}`.
- routing key `file.closed`: a detector writer closed a file,
  `{"path": "/beamline/B1/202611/Data/BT0001/raw/scan_0001.h5", "size": 1048576, "adler32": "0a1b2c3d"}`
  `path` is absolute under the beamline root (or relative to it); `size` in bytes; `adler32`
  (8 hex digits) is optional. Other keys are ignored.

Which dataset a run belongs to: the start document's `data_path` (a directory in the HEPS layout,
`<Beamline>/<YYYYMM>/Data/<BeamtimeID>/<area>/...`), or else its `beamline` and `beamtime_id` with
the year and month of its `time` (UTC) and the area `raw`. Descriptor and stop documents follow
their run's start document (`run_start`).

Invariants: no I/O and no clock here; every refusal is InvalidMessage (or UnsafePath) with one
sentence that ends up as the dead-letter reason. Annotations only ever fill empty fields.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone

from domas.archive.discovery import parse_location
from domas.archive.sources.base import Annotation
from domas.catalogue.base import Scan
from domas.errors import InvalidMessage
from domas.rootpath import check_relative, relative_to_root

BLUESKY_NAMES = frozenset({"start", "descriptor", "event", "event_page", "stop", "resource", "datum",
                           "datum_page"})
_HEX8 = re.compile(r"[0-9a-fA-F]{8}")


@dataclass(frozen=True)
class FileClosed:
    path: str
    size: int
    adler32: str = ""


@dataclass(frozen=True)
class Document:
    name: str
    doc: dict


def parse(routing_key: str, body: bytes) -> FileClosed | Document:
    """The message a delivery carries, or InvalidMessage saying what is wrong with it."""
    try:
        msg = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise InvalidMessage(f"{routing_key}: the body is not JSON") from None
    if not isinstance(msg, dict):
        raise InvalidMessage(f"{routing_key}: the body is not a JSON object")
    if routing_key == "file.closed":
        return _file_closed(msg)
    if routing_key.startswith("bluesky."):
        return _document(msg)
    raise InvalidMessage(f"routing key {routing_key!r} is neither file.closed nor bluesky.<document>")


def _file_closed(msg: dict) -> FileClosed:
    path, size, adler = msg.get("path"), msg.get("size"), msg.get("adler32") or ""
    if not isinstance(path, str) or not path or "\0" in path:
        raise InvalidMessage("file.closed: 'path' must be a non-empty string")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidMessage(f"file.closed: 'size' must be a byte count, got {size!r}")
    if not isinstance(adler, str) or (adler and not _HEX8.fullmatch(adler)):
        raise InvalidMessage(f"file.closed: 'adler32' must be 8 hex digits, got {adler!r}")
    return FileClosed(path, size, adler.lower())


_REQUIRED = {"start": ("uid", "time"), "descriptor": ("uid", "run_start"), "stop": ("uid", "run_start"),
             "event": ("uid", "descriptor")}


def _document(msg: dict) -> Document:
    name, doc = msg.get("name"), msg.get("doc")
    if name not in BLUESKY_NAMES:
        raise InvalidMessage(f"bluesky: {name!r} is not a Bluesky document name")
    if not isinstance(doc, dict):
        raise InvalidMessage(f"bluesky {name}: 'doc' must be a JSON object")
    for key in _REQUIRED.get(name, ()):
        if key not in doc:
            raise InvalidMessage(f"bluesky {name} document has no {key!r}")
        if key != "time" and not (isinstance(doc[key], str) and 0 < len(doc[key]) <= 200):
            raise InvalidMessage(f"bluesky {name} document: {key!r} must be a string of 1 to 200 characters")
    if name == "start" and not isinstance(doc["time"], (int, float)):
        raise InvalidMessage("bluesky start document: 'time' must be POSIX seconds")
    return Document(name, doc)


def start_dataset(doc: dict, root: str) -> str:
    """The dataset path (<Beamline>/<YYYYMM>/Data/<BeamtimeID>/<area>) of a run's start document."""
    if doc.get("data_path"):
        if not isinstance(doc["data_path"], str):
            raise InvalidMessage("bluesky start document: 'data_path' must be a string")
        rel = relative_to_root(doc["data_path"], root)
    else:
        beamline, beamtime = doc.get("beamline"), doc.get("beamtime_id")
        if not isinstance(beamline, str) or not isinstance(beamtime, str) or not beamline or not beamtime:
            raise InvalidMessage("bluesky start document names neither 'data_path' nor 'beamline' and "
                                 "'beamtime_id': its dataset cannot be told")
        ym = datetime.fromtimestamp(doc["time"], timezone.utc).strftime("%Y%m")
        rel = f"{beamline}/{ym}/Data/{beamtime}/raw"
    loc = parse_location("/".join(check_relative(rel)[:5]) + "/_")
    if loc is None:
        raise InvalidMessage(f"bluesky start document: {rel} is not in the layout "
                             "<Beamline>/<YYYYMM>/Data/<BeamtimeID>/<raw|processed|...>")
    return loc.dataset_path


def start_prefix(doc: dict, root: str, dataset_path: str) -> str:
    """Where inside its dataset a run writes (its `data_path` below the dataset), or "" when the
    start document does not say: then the run's files are those written during it."""
    if not doc.get("data_path"):
        return ""
    rel = relative_to_root(doc["data_path"], root)
    return rel[len(dataset_path):].strip("/")


def run_files(scan: Scan, files, grace: float) -> int:
    """How many of a dataset's files ((path, mtime) pairs) belong to a run: below its data_path, or
    else written between its start and `grace` seconds after its stop."""
    prefix = scan.data_path
    if prefix:
        return sum(1 for path, _ in files if path == prefix or path.startswith(prefix + "/"))
    start, stop = scan.start_time, scan.stop_time
    if start is None:
        return 0
    stop = start if stop is None else stop
    return sum(1 for _, mtime in files if start - 1 <= mtime <= stop + grace)


def _present(d: dict) -> dict:
    return {k: v for k, v in d.items() if v not in (None, "", [], {}, ())}


def _of(value, kind, default=None):
    """`value` when it is a `kind` (a bool is no number), else `default`: a document's odd field is
    left out of its scan record rather than refusing the run."""
    ok = isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool)
    return value if ok else default


def _names(value) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def _time(value) -> float | None:
    t = _of(value, (int, float))
    if t is not None:
        datetime.fromtimestamp(t, timezone.utc)     # a time no calendar holds: refused (dead letter)
    return t


def start_scan(doc: dict, prefix: str) -> dict:
    """The scan-record fields a start document gives (catalogue.Scan names)."""
    return _present({"scan_id": _of(doc.get("scan_id"), int), "plan_name": _of(doc.get("plan_name"), str),
                     "sample": doc.get("sample"), "detectors": _names(doc.get("detectors")),
                     "motors": _names(doc.get("motors")), "start_time": _time(doc.get("time")),
                     "data_path": prefix})


def stop_scan(doc: dict) -> dict:
    """The scan-record fields a stop document gives."""
    num = _of(doc.get("num_events"), dict, {})
    return _present({"stop_time": _time(doc.get("time")), "exit_status": _of(doc.get("exit_status"), str),
                     "reason": _of(doc.get("reason"), str),
                     "num_events": {str(k): v for k, v in num.items() if _of(v, int) is not None}})


def annotation(name: str, doc: dict, dataset_path: str, prefix: str = "") -> Annotation | None:
    """What a document says about its dataset and its run (None: nothing the catalogue keeps, e.g.
    an event); `prefix`: where inside the dataset a run writes (start_prefix)."""
    if name == "start":
        meta = _present({"proposal": doc.get("proposal_id"), "sample": doc.get("sample")})
        proposal = doc.get("proposal_id")
        return Annotation(dataset_path, meta, proposal if isinstance(proposal, str) else "",
                          scans={doc["uid"]: start_scan(doc, prefix)})
    if name == "descriptor":
        keys = doc.get("data_keys")
        stream = doc.get("name") or "primary"
        if not isinstance(keys, dict) or not isinstance(stream, str):
            return None
        return Annotation(dataset_path, {}, scans={doc["run_start"]: {"streams": {stream: sorted(keys)}}})
    if name == "stop":
        return Annotation(dataset_path, {}, scans={doc["run_start"]: stop_scan(doc)})
    return None
