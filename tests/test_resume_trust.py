"""A rerun trusts journaled chunks without reading them again, but only the part file still holds.

Real files on the local disk; the destination wrapped in the fault twin only to count its calls
(and, in the first run, to stop the copy with a full disk at a chosen chunk).
"""

from __future__ import annotations

import asyncio
import os
import zlib

from domas.agent.engine import CopyEngine
from domas.config import Config, CopyConfig
from domas.errors import NoSpace
from domas.transfer.expand import expand
from domas.transfer.parts import part_path
from domas.transfer.storage import PosixStorage
from domas.transfer.storage.faulty import Fault, FaultyStorage

CS = 64 * 1024


def _cfg(tmp_path) -> Config:
    return Config(state_dir=str(tmp_path / "state"),
                  copy=CopyConfig(streams=1, chunk_size=CS, backoff_base=0.001, backoff_max=0.01,
                                  retry_budget_seconds=0))


def _run(cfg, src, dst, store):
    exp = expand([str(src)], str(dst))
    job = exp.jobs[0]
    exp.jobs[0] = type(job)(job.src_store, job.src_path, job.src_stat, store, job.dst_path)
    return asyncio.run(CopyEngine(cfg).run(exp)).files[0]


def _interrupted(tmp_path, chunks: int, stop_at: int):
    data = os.urandom(chunks * CS)
    src, dst = tmp_path / "scan.h5", tmp_path / "out" / "scan.h5"
    src.write_bytes(data)
    cfg = _cfg(tmp_path)
    full = FaultyStorage(PosixStorage(), [Fault("pwrite", error=NoSpace("disk full"), offset=stop_at * CS)])
    assert _run(cfg, src, dst, full).error_kind == "no_space"     # the part file and its journal remain
    return cfg, data, src, dst


def test_journaled_chunks_are_not_read_back_on_resume(tmp_path):
    cfg, data, src, dst = _interrupted(tmp_path, 12, 8)
    store = FaultyStorage(PosixStorage())
    f = _run(cfg, src, dst, store)
    assert f.status == "done" and f.resumed_bytes == 8 * CS
    assert store.calls.get("readback", 0) == 4 and store.calls.get("pread", 0) == 0   # only the new chunks
    assert dst.read_bytes() == data and f.adler32 == f"{zlib.adler32(data):08x}"


def test_journaled_chunks_beyond_a_truncated_part_file_are_copied_again(tmp_path):
    cfg, data, src, dst = _interrupted(tmp_path, 12, 8)
    os.truncate(part_path(str(dst)), 3 * CS + 100)          # chunks 3..7 no longer all there
    f = _run(cfg, src, dst, FaultyStorage(PosixStorage()))
    assert f.status == "done" and f.resumed_bytes == 3 * CS
    assert dst.read_bytes() == data and f.adler32 == f"{zlib.adler32(data):08x}"
