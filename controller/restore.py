"""Rebuild a Scheduler from the facts its shell persisted (transfers, files, done chunks).

Invariants: file ids of one transfer are contiguous (as TransferAccepted assigned them), else the
records are inconsistent and InvalidMessage is raised. Terminal files stay terminal; a file with
done chunks (or stored as active/verifying) becomes active with exactly those chunks done; a file
with every chunk done is verified again at the first Tick. Leases are not restored. No I/O.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Iterable

from domas.controller import events as ev
from domas.controller import records as rc
from domas.errors import InvalidMessage

if TYPE_CHECKING:
    from domas.controller import scheduler as sc


def rebuild(s: "sc.Scheduler", transfers: Iterable[ev.TransferSpec], files: Iterable[ev.FileRecord],
            done_chunks: Iterable[ev.ChunkRecord], next_file_id: int = 1) -> None:
    by_transfer: dict[str, list[ev.FileRecord]] = {}
    for rec in files:
        by_transfer.setdefault(rec.transfer_id, []).append(rec)
    done: dict[int, list[ev.ChunkRecord]] = {}
    for c in done_chunks:
        done.setdefault(c.file_id, []).append(c)
    last_id = 0
    for spec in transfers:
        records = sorted(by_transfer.pop(spec.transfer_id, []), key=lambda r: r.file_id)
        _check_contiguous(spec.transfer_id, records)
        first = records[0].file_id if records else last_id + 1
        t = s._add_transfer(spec, first)
        t.add_files(first, records)
        for f, rec in zip(t.files, records):
            _restore_file(s, t, f, rec, done.get(rec.file_id, ()))
        last_id = max(last_id, first + len(records) - 1)
        if t.live:
            s.fair.add(t)
        else:
            s._end_transfer(t, [])
    if by_transfer:
        raise InvalidMessage(f"stored files belong to unknown transfers: {', '.join(sorted(by_transfer))}")
    s._next_file_id = max(last_id + 1, next_file_id)


def _check_contiguous(transfer_id: str, records: list[ev.FileRecord]) -> None:
    for i, rec in enumerate(records):
        if rec.file_id != records[0].file_id + i:
            raise InvalidMessage(f"stored file ids of transfer {transfer_id} are not contiguous at {rec.file_id}")


def _restore_file(s: "sc.Scheduler", t: "rc.Transfer", f: "rc.File", rec: ev.FileRecord, chunks) -> None:
    if rec.state not in ev.STATES:
        raise InvalidMessage(f"stored file {rec.file_id} has unknown state {rec.state!r}")
    t.counts[rc.QUEUED] += 1
    s._count(t.beamline, rc.QUEUED, 1)
    state = ev.STATES.index(rec.state)
    if state in rc.TERMINAL:
        s._set_state(f, state)
        return
    t.live += 1
    if not chunks and state == rc.QUEUED:
        return
    s._start(f, s._eps(f))
    p = f.prog
    for c in chunks:
        if not 0 <= c.index < p.n:
            raise InvalidMessage(f"stored chunk {c.index} of file {f.id} is outside its {p.n} chunks")
        if not p.done[c.index]:
            p.done[c.index] = 1
            p.adlers[c.index] = c.adler32
            p.ndone += 1
    if p.ndone == p.n:
        s._set_state(f, rc.VERIFYING)
        heapq.heappush(s._verify_due, (float("-inf"), t.id, f.id))
