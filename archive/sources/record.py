"""What the archiver writes for its sources beyond file records: dataset and beamtime metadata
and scan records from annotations, and the writer's adler32 of files announced closed.

Invariants: only empty fields are filled (sources.fill_empty), so metadata set by an operator,
a NeXus file or an earlier document is never overwritten and replaying a batch changes nothing;
a dataset is read fresh from the catalogue before it is annotated.
"""

from __future__ import annotations

from dataclasses import replace

from domas.archive.discovery import parse_location
from domas.archive.sources.base import Annotation, fill_empty
from domas.catalogue import Beamtime, Catalogue, Dataset, Proposal
from domas.catalogue.base import Scan

_DATA_TYPE = {"raw": "raw", "processed": "processed"}


def apply_annotations(cat: Catalogue, annotations: list[Annotation]) -> dict[str, Dataset]:
    """Fill datasets' (and their beamtimes') empty metadata and their runs' scan records; returns
    {dataset path: stored dataset}."""
    by_path: dict[str, list[Annotation]] = {}
    for a in annotations:
        by_path.setdefault(a.dataset_path, []).append(a)
    out: dict[str, Dataset] = {}
    scans: list[Scan] = []
    for dataset_path, anns in by_path.items():
        loc = parse_location(dataset_path + "/_")
        if loc is None:
            continue
        _fill_beamtime(cat, loc.beamtime, loc.beamline, next((a.proposal for a in anns if a.proposal), ""))
        path = "/" + dataset_path
        ds = cat.dataset_by_path(path) or Dataset(beamtime=loc.beamtime, path=path,
                                                  data_type=_DATA_TYPE.get(loc.area, "raw"))
        meta = ds.metadata
        for a in anns:
            meta = fill_empty(meta, a.metadata)
        if meta != ds.metadata or not ds.pid:
            ds = cat.upsert_dataset(replace(ds, metadata=meta))
        out[path] = ds
        scans += _scans(ds.pid, anns)
    if scans:
        cat.upsert_scans(scans)          # only the runs these documents name: never the dataset's others
    return out


def _scans(pid: str, annotations: list[Annotation]) -> list[Scan]:
    """The scan records a batch's annotations give, one per run (its documents' fields together)."""
    fields: dict[str, dict] = {}
    for a in annotations:
        for uid, new in a.scans.items():
            fields[uid] = fill_empty(fields.get(uid, {}), new)
    return [Scan(uid=uid, dataset=pid, **f) for uid, f in fields.items()]


def _fill_beamtime(cat: Catalogue, beamtime: str, beamline: str, proposal: str) -> None:
    if proposal and cat.get_proposal(proposal) is None:
        cat.upsert_proposal(Proposal(id=proposal))
    bt = cat.get_beamtime(beamtime)
    if bt is None:
        cat.upsert_beamtime(Beamtime(id=beamtime, beamline=beamline, proposal=proposal))
    elif proposal and not bt.proposal:
        cat.upsert_beamtime(replace(bt, proposal=proposal))


def with_writer_checksums(cat: Catalogue, copies: list, sums: dict[tuple[str, str], str]) -> list:
    """First copies of files whose writer gave an adler32: the catalogue records it, and the copy is
    checked against it (a copy with another adler32 is not counted as verified)."""
    if not sums:
        return copies
    out, records = [], []
    for c in copies:
        adler32 = sums.get((c.dataset_path.strip("/"), c.path))
        if adler32 and not c.f.adler32:
            c = replace(c, f=replace(c.f, adler32=adler32))
            records.append(c.f)
        out.append(c)
    if records:
        cat.upsert_files(records)
    return out
