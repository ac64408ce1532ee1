"""Copy engine over the in-memory and fault-injecting twins, on asyncio and on uvloop."""

from __future__ import annotations

import os
import random
import zlib

import pytest
import xxhash

from domas.agent.engine import CopyEngine, part_path
from domas.config import Config, CopyConfig
from domas.errors import ConnectionLost, NetworkTimeout, NoSpace, NotFound, PermissionDenied
from domas.transfer.expand import Expansion, FileJob
from domas.transfer.storage import MemoryStorage
from domas.transfer.storage.faulty import Fault, FaultyStorage

KiB = 1024
MiB = 1024 * KiB


def make_cfg(tmp_path, **copy) -> Config:
    base = dict(streams=4, chunk_size=64 * KiB, backoff_base=0.001, backoff_max=0.01, max_retries=3,
                retry_budget_seconds=0)
    base.update(copy)
    return Config(state_dir=str(tmp_path / "state"), copy=CopyConfig(**base))


def jobs_for(src, dst, files: dict[str, bytes]) -> Expansion:
    exp = Expansion()
    for name, data in files.items():
        src_inner = src.inner if isinstance(src, FaultyStorage) else src
        src_inner.put(f"/src/{name}", data)
        exp.jobs.append(FileJob(src, f"/src/{name}", src.stat(f"/src/{name}"), dst, f"/dst/{name}"))
    return exp


def run(event_loop_kind, cfg, exp, **kw):
    return event_loop_kind(CopyEngine(cfg, rng=random.Random(7), **kw).run(exp))


def test_copies_many_files_with_right_sums(event_loop_kind, tmp_path):
    src, dst = MemoryStorage(), MemoryStorage()
    files = {f"f{i}": os.urandom(i * 37_001) for i in range(8)}   # 0 bytes .. several chunks
    acct = run(event_loop_kind, make_cfg(tmp_path), jobs_for(src, dst, files))
    assert {f.status for f in acct.files} == {"done"}
    for f in acct.files:
        data = files[f.source.rsplit("/", 1)[1]]
        assert dst.get(f.destination.removeprefix("mem://")) == data
        assert f.adler32 == f"{zlib.adler32(data):08x}"
        assert f.xxh3 == xxhash.xxh3_64_hexdigest(data)
    assert acct.bytes_verified == sum(len(d) for d in files.values())


def test_transient_errors_are_retried_per_chunk(event_loop_kind, tmp_path):
    src = FaultyStorage(MemoryStorage())
    dst = MemoryStorage()
    src.add(Fault("pread", error=NetworkTimeout("slow server"), offset=64 * KiB, times=2))
    src.add(Fault("pread", error=ConnectionLost("reset"), offset=0, times=1))
    data = os.urandom(300 * KiB)
    acct = run(event_loop_kind, make_cfg(tmp_path), jobs_for(src, dst, {"a": data}))
    f = acct.files[0]
    assert f.status == "done" and f.retries == 3
    assert acct.errors == {"timeout": 2, "connection_lost": 1}
    assert dst.get("/dst/a") == data


def test_corruption_on_write_is_caught_by_readback_and_recopied(event_loop_kind, tmp_path):
    src, dst = MemoryStorage(), FaultyStorage(MemoryStorage())
    dst.add(Fault("pwrite", corrupt=True, offset=128 * KiB))
    data = os.urandom(256 * KiB + 5)
    acct = run(event_loop_kind, make_cfg(tmp_path), jobs_for(src, dst, {"a": data}))
    assert acct.files[0].status == "done"
    assert acct.errors == {"checksum_mismatch": 1}
    assert dst.inner.get("/dst/a") == data


def test_destination_checksum_disagreeing_restarts_the_file(event_loop_kind, tmp_path):
    src, dst = MemoryStorage(), FaultyStorage(MemoryStorage())
    dst.add(Fault("checksum", corrupt=True))
    data = os.urandom(100 * KiB)
    acct = run(event_loop_kind, make_cfg(tmp_path), jobs_for(src, dst, {"a": data}))
    assert acct.files[0].status == "done" and acct.files[0].retries == 1
    assert dst.calls["checksum"] == 2


def test_verify_none_skips_destination_side(event_loop_kind, tmp_path):
    src, dst = MemoryStorage(), FaultyStorage(MemoryStorage())
    dst.add(Fault("pwrite", corrupt=True, offset=0))
    data = os.urandom(100 * KiB)
    acct = run(event_loop_kind, make_cfg(tmp_path, verify="none"), jobs_for(src, dst, {"a": data}))
    assert acct.files[0].status == "done"
    assert "readback" not in dst.calls and "checksum" not in dst.calls
    assert dst.inner.get("/dst/a") != data      # the corruption went through, as asked


def test_permanent_error_fails_one_file_and_others_go_on(event_loop_kind, tmp_path):
    src, dst = MemoryStorage(), FaultyStorage(MemoryStorage())
    dst.add(Fault("open_write", error=PermissionDenied("no write permission"), path="bad"))
    files = {"good": os.urandom(70 * KiB), "bad": os.urandom(10)}
    acct = run(event_loop_kind, make_cfg(tmp_path), jobs_for(src, dst, files))
    by = {f.source.rsplit("/", 1)[1]: f for f in acct.files}
    assert by["good"].status == "done" and by["bad"].status == "failed"
    assert by["bad"].error_kind == "permission_denied" and by["bad"].retries == 0
    assert by["bad"].exit_code == PermissionDenied.exit_code


def test_retries_exhausted_fails_with_the_reason(event_loop_kind, tmp_path):
    src = FaultyStorage(MemoryStorage())
    src.add(Fault("pread", error=NetworkTimeout("server gone"), times=100))
    acct = run(event_loop_kind, make_cfg(tmp_path, max_retries=2), jobs_for(src, MemoryStorage(), {"a": b"x" * 10}))
    f = acct.files[0]
    assert f.status == "failed" and f.error_kind == "timeout" and f.retries == 2
    assert "server gone" in f.error


def test_no_space_keeps_partial_and_journal_then_resumes(event_loop_kind, tmp_path):
    src, dst = MemoryStorage(), FaultyStorage(MemoryStorage())
    dst.add(Fault("pwrite", error=NoSpace("disk full"), offset=5 * 64 * KiB))
    data = os.urandom(10 * 64 * KiB)
    cfg = make_cfg(tmp_path, streams=1)
    acct = run(event_loop_kind, cfg, jobs_for(src, dst, {"a": data}))
    assert acct.files[0].status == "failed" and acct.files[0].error_kind == "no_space"
    assert dst.inner.stat(part_path("/dst/a")).size > 0
    # free space: the same job resumes; the 5 chunks already journaled are not written again
    exp = Expansion(jobs=[FileJob(src, "/src/a", src.stat("/src/a"), dst, "/dst/a")])
    before = dst.calls.get("pwrite", 0), dst.calls.get("readback", 0)
    acct2 = run(event_loop_kind, cfg, exp)
    f = acct2.files[0]
    assert f.status == "done" and f.resumed_bytes == 5 * 64 * KiB
    assert dst.calls["pwrite"] - before[0] == 5
    # the journaled chunks are trusted (durable and read back when they were written): only the
    # 5 new ones are read back; the whole-file xxh3 is unknown, since the resumed bytes were not read
    assert dst.calls["readback"] - before[1] == 5
    assert dst.inner.get("/dst/a") == data
    assert f.adler32 == f"{zlib.adler32(data):08x}" and f.xxh3 is None


def test_source_changed_between_runs_restarts_from_zero(event_loop_kind, tmp_path):
    src, dst = MemoryStorage(), FaultyStorage(MemoryStorage())
    dst.add(Fault("pwrite", error=NoSpace("disk full"), offset=3 * 64 * KiB))
    cfg = make_cfg(tmp_path, streams=1)
    run(event_loop_kind, cfg, jobs_for(src, dst, {"a": os.urandom(6 * 64 * KiB)}))
    new = os.urandom(6 * 64 * KiB)
    notes = []

    class Rec:
        def __getattr__(self, name):
            return lambda *a: notes.append(a[0]) if name == "note" else None

    acct = run(event_loop_kind, cfg, jobs_for(src, dst, {"a": new}), reporter=Rec())
    assert acct.files[0].status == "done" and acct.files[0].resumed_bytes == 0
    assert dst.inner.get("/dst/a") == new
    assert any("changed since the interrupted copy" in n for n in notes)


def test_final_name_appears_only_when_complete(event_loop_kind, tmp_path):
    src, dst = MemoryStorage(), FaultyStorage(MemoryStorage())
    dst.add(Fault("rename", error=PermissionDenied("refused")))
    run(event_loop_kind, make_cfg(tmp_path), jobs_for(src, dst, {"a": os.urandom(1000)}))
    names = [e.path for e in dst.inner.listdir("/dst")]
    assert names == [part_path("/dst/a")]


def test_transient_failure_of_the_final_checksum_query_is_retried_without_recopying(event_loop_kind, tmp_path):
    from domas.errors import ServerRefused

    src, dst = MemoryStorage(), FaultyStorage(MemoryStorage())
    dst.add(Fault("checksum", error=ServerRefused("bad address (3012)"), times=2))
    data = os.urandom(200 * KiB)
    acct = run(event_loop_kind, make_cfg(tmp_path), jobs_for(src, dst, {"a": data}))
    f = acct.files[0]
    assert f.status == "done" and f.retries == 2 and acct.errors == {"server_refused": 2}
    assert dst.calls["pwrite"] == 4                 # the chunks were written once
    assert dst.inner.get("/dst/a") == data


class TripCounter(CopyEngine):
    """The engine as it is, counting its trips to a worker thread."""

    trips = 0

    async def _io(self, fn, *args):
        self.trips += 1
        return await super()._io(fn, *args)


def test_a_one_chunk_file_takes_one_trip_to_a_worker_thread(event_loop_kind, tmp_path):
    """Small files: prepare, copy and finalize in one call (was three trips, ~1/3 of the loop's CPU)."""
    files = {f"f{i}": os.urandom(1000 + i) for i in range(5)}
    engine = TripCounter(make_cfg(tmp_path), rng=random.Random(7))
    acct = event_loop_kind(engine.run(jobs_for(MemoryStorage(), MemoryStorage(), files)))
    assert {f.status for f in acct.files} == {"done"}
    assert engine.trips == len(files) + 2           # + the run's makedirs and directory sync


# One one-chunk file, one fault at each of its steps: the one-trip path goes on from the step that
# failed exactly as the step-by-step path does (same retries, same restarts, same outcome).
@pytest.mark.parametrize("side, fault, status, retries", [
    ("dst", lambda: Fault("open_write", error=NetworkTimeout("slow")), "done", 1),         # prepare
    ("src", lambda: Fault("pread", error=ConnectionLost("reset")), "done", 1),            # the chunk
    ("dst", lambda: Fault("pwrite", corrupt=True), "done", 1),                            # read back
    ("dst", lambda: Fault("checksum", corrupt=True), "done", 1),                          # final verdict: restart
    ("dst", lambda: Fault("rename", error=NetworkTimeout("slow")), "done", 1),            # finalize
    ("dst", lambda: Fault("set_mode", error=PermissionDenied("no")), "failed", 0),
    ("src", lambda: Fault("pread", error=NetworkTimeout("gone"), times=100), "failed", 3),
])
def test_a_fault_at_each_step_of_a_one_chunk_file(event_loop_kind, tmp_path, side, fault, status, retries):
    src, dst = FaultyStorage(MemoryStorage()), FaultyStorage(MemoryStorage())
    (src if side == "src" else dst).add(fault())
    data = os.urandom(10 * KiB)
    acct = run(event_loop_kind, make_cfg(tmp_path), jobs_for(src, dst, {"a": data}))
    f = acct.files[0]
    assert (f.status, f.retries) == (status, retries), f.error
    if status == "done":
        assert dst.inner.get("/dst/a") == data and f.adler32 == f"{zlib.adler32(data):08x}"
    else:
        assert f.error_kind == fault().error.kind
        with pytest.raises(NotFound):
            dst.inner.stat("/dst/a")


def test_a_large_file_is_made_durable_per_group_of_chunks_not_per_chunk(event_loop_kind, tmp_path):
    """One fdatasync per group of chunks (8 MiB, or an eighth of the file: 3 MiB here; the last
    group's chunks one by one), not one per chunk (24 here), and every chunk still read back once; a chunk that fails keeps the records of the chunks written
    before it (made durable first), so a rerun resumes from them."""
    src, dst = MemoryStorage(), FaultyStorage(MemoryStorage())
    data = os.urandom(24 * MiB)
    cfg = make_cfg(tmp_path, chunk_size=MiB)
    acct = run(event_loop_kind, cfg, jobs_for(src, dst, {"a": data}))
    f = acct.files[0]
    assert f.status == "done" and dst.inner.get("/dst/a") == data
    assert 1 <= dst.calls["sync"] <= 11, dst.calls                # was 24: one per 1 MiB chunk
    assert dst.calls["readback"] == 24 and acct.bytes_verified == len(data)
    assert f.xxh3 == xxhash.xxh3_64_hexdigest(data)
    dst2 = FaultyStorage(MemoryStorage())
    dst2.add(Fault("pwrite", error=NoSpace("disk full"), offset=11 * MiB))
    cfg1 = make_cfg(tmp_path / "one", chunk_size=MiB, streams=1)
    assert run(event_loop_kind, cfg1, jobs_for(src, dst2, {"b": data})).files[0].status == "failed"
    acct2 = run(event_loop_kind, cfg1, Expansion(jobs=[FileJob(src, "/src/b", src.stat("/src/b"), dst2, "/dst/b")]))
    assert acct2.files[0].status == "done" and acct2.files[0].resumed_bytes == 11 * MiB     # 3 groups + 2 chunks
    assert dst2.inner.get("/dst/b") == data
