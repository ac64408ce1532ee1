"""Copies that never finish a mix, never share a destination, and never widen permissions
(issue 8, findings 3, 4 and 9): real files on the local disk, `domas copy` in child processes."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import stat
import subprocess
import sys
import time
import zlib

import pytest

from domas.agent.engine import CopyEngine
from domas.transfer.expand import expand
from domas.transfer.storage import PosixStorage
from domas.transfer.storage.base import ReadHandle
from domas.transfer.storage.faulty import Fault, FaultyStorage
from domas.config import Config, CopyConfig
from domas.errors import DestinationBusy, NoSpace

from .fixtures.common import run_domas, state, wait_until  # noqa: F401

KiB, MiB = 1024, 1024 * 1024
CS = 64 * KiB


def rewrite_keeping_mtime(path, new: bytes) -> None:
    """What the hunt did: new bytes at the head and the tail, then the old mtime put back."""
    before = os.stat(path)
    time.sleep(0.02)          # let the coarse kernel clock tick, as any real rewrite would
    with open(path, "r+b") as fh:
        fh.write(new[:CS])
        fh.seek(len(new) - CS)
        fh.write(new[-CS:])
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


class RewritingPosix(PosixStorage):
    """The local disk, with a detector that rewrites the source once `at` has been read."""

    def __init__(self, at: int, rewrite) -> None:
        self.at, self.rewrite, self.fired = at, rewrite, False

    def open_read(self, path: str) -> ReadHandle:
        inner, outer = super().open_read(path), self

        class Reader(ReadHandle):
            def pread(self, offset: int, length: int) -> bytes:
                data = inner.pread(offset, length)
                if offset == outer.at and not outer.fired:
                    outer.fired = True
                    outer.rewrite()
                return data

            def close(self) -> None:
                inner.close()

        return Reader()


def cfg_for(tmp_path, **copy) -> Config:
    base = dict(streams=1, chunk_size=CS, backoff_base=0.001, backoff_max=0.01, retry_budget_seconds=0)
    base.update(copy)
    return Config(state_dir=str(tmp_path / "state"), copy=CopyConfig(**base))


def with_stores(exp, src_store=None, dst_store=None):
    job = exp.jobs[0]
    exp.jobs[0] = type(job)(src_store or job.src_store, job.src_path, job.src_stat,
                            dst_store or job.dst_store, job.dst_path)
    return exp


# -- finding 3: a rewrite that restores the mtime -------------------------------------------------

def test_rewrite_with_restored_mtime_during_copy_restarts_the_file(tmp_path):
    old, new = os.urandom(16 * CS), os.urandom(16 * CS)
    src, dst = tmp_path / "d.bin", tmp_path / "out" / "d.bin"
    src.write_bytes(old)
    store = RewritingPosix(at=4 * CS, rewrite=lambda: rewrite_keeping_mtime(src, new))
    exp = with_stores(expand([str(src)], str(dst)), src_store=store)
    acct = asyncio.run(CopyEngine(cfg_for(tmp_path), rng=random.Random(1)).run(exp))
    f = acct.files[0]
    assert store.fired
    assert f.status == "done", f.error
    assert dst.read_bytes() == src.read_bytes() == new[:CS] + old[CS:-CS] + new[-CS:]
    assert f.retries == 1 and dict(acct.errors) == {"source_changed": 1}     # one restart
    assert f.adler32 == f"{zlib.adler32(src.read_bytes()):08x}"


def test_rewrite_with_restored_mtime_between_runs_is_not_resumed(tmp_path):
    old, new = os.urandom(8 * CS), os.urandom(8 * CS)
    src, dst = tmp_path / "d.bin", tmp_path / "out" / "d.bin"
    src.write_bytes(old)
    full = FaultyStorage(PosixStorage(), [Fault("pwrite", error=NoSpace("disk full"), offset=5 * CS)])
    cfg = cfg_for(tmp_path)
    acct = asyncio.run(CopyEngine(cfg).run(with_stores(expand([str(src)], str(dst)), dst_store=full)))
    assert acct.files[0].error_kind == "no_space"             # a partial copy and its journal remain
    rewrite_keeping_mtime(src, new)
    acct = asyncio.run(CopyEngine(cfg).run(expand([str(src)], str(dst))))
    f = acct.files[0]
    assert f.status == "done" and f.resumed_bytes == 0
    assert dst.read_bytes() == new[:CS] + old[CS:-CS] + new[-CS:]    # the file as it is now, whole


# -- finding 4: one writer per destination --------------------------------------------------------

def test_second_copy_to_the_same_destination_says_another_copy_is_running(tmp_path, state):
    data = os.urandom(48 * MiB)
    src, dst = tmp_path / "big.bin", tmp_path / "out" / "big.bin"
    src.write_bytes(data)
    first = subprocess.Popen([sys.executable, "-m", "domas.cli", "copy", "--chunk-size", "64KiB", "--streams", "1",
                              str(src), str(dst)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    journal = state / "journal"
    wait_until(lambda: journal.exists() and any(p.stat().st_size > 200 for p in journal.glob("*.jsonl")),
               60, "the first copy to journal chunks", first)
    os.kill(first.pid, signal.SIGSTOP)          # hold the first copy mid-way, whatever the disk speed
    try:
        second = run_domas("copy", "--chunk-size", "64KiB", src, dst)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert second.returncode == DestinationBusy.exit_code == 75, second.stderr
    assert f"another copy of {dst} is running" in second.stderr and "Traceback" not in second.stderr
    assert dst.read_bytes() == data
    assert not list(dst.parent.glob(".*.domas-part"))


def test_lock_is_per_open_and_ends_with_its_holder(tmp_path):
    store = PosixStorage()
    part = str(tmp_path / "d" / ".x.domas-part")
    held = store.lock(part)
    with pytest.raises(DestinationBusy):
        store.lock(part)                 # even inside one process: flock is per open file description
    held.release()
    store.lock(part).release()           # free again
    code = "import sys; from domas.transfer.storage import PosixStorage; PosixStorage().lock(sys.argv[1]); print('held')"
    subprocess.run([sys.executable, "-c", code, part], check=True, capture_output=True)
    store.lock(part).release()           # a holder that exited left nothing behind


# -- finding 9: permissions never widen -------------------------------------------------------------

@pytest.mark.parametrize("mode", [0o600, 0o640, 0o444])
def test_copy_keeps_the_source_mode(tmp_path, state, mode):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for name in ("a.bin", "sub/b.bin"):
        (src / name).write_bytes(os.urandom(3 * CS))
        os.chmod(src / name, mode)
    run_domas("copy", "--chunk-size", "64KiB", f"{src}/", tmp_path / "dst", check=True)
    for name in ("a.bin", "sub/b.bin"):
        assert stat.S_IMODE(os.stat(tmp_path / "dst" / name).st_mode) == mode
        assert (tmp_path / "dst" / name).read_bytes() == (src / name).read_bytes()


def test_part_file_is_owner_only_while_it_is_written(tmp_path):
    src, dst = tmp_path / "secret.bin", tmp_path / "out" / "secret.bin"
    src.write_bytes(os.urandom(4 * CS))
    os.chmod(src, 0o600)
    full = FaultyStorage(PosixStorage(), [Fault("pwrite", error=NoSpace("disk full"), offset=2 * CS)])
    asyncio.run(CopyEngine(cfg_for(tmp_path)).run(with_stores(expand([str(src)], str(dst)), dst_store=full)))
    part = tmp_path / "out" / ".secret.bin.domas-part"
    assert part.exists() and stat.S_IMODE(part.stat().st_mode) == 0o600
    r = run_domas("copy", "--json", "--chunk-size", "64KiB", src, dst, check=True,
                  env={**os.environ, "DOMAS_STATE_DIR": str(tmp_path / "state")})
    assert json.loads(r.stdout)["files"][0]["resumed_bytes"] == 2 * CS
    assert stat.S_IMODE(dst.stat().st_mode) == 0o600
