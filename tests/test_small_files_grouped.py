"""With copy.group_sync, small files are made durable in groups (one syncfs for many) and read
back after that.

Real files on the local disk. The destination backend is the POSIX one, subclassed only to record
the size of each group it is asked to make durable; the fault twin corrupts one read-back.
"""

from __future__ import annotations

import asyncio
import os
import zlib

from domas.agent.engine import CopyEngine
from domas.config import Config, CopyConfig
from domas.transfer.expand import expand
from domas.transfer.storage import PosixStorage
from domas.transfer.storage.faulty import Fault, FaultyStorage

KiB = 1024


class GroupRecordingPosix(PosixStorage):
    def __init__(self) -> None:
        self.groups: list[int] = []

    def sync_many(self, writers) -> None:
        self.groups.append(len(writers))
        super().sync_many(writers)


def _tree(tmp_path, n: int) -> dict[str, bytes]:
    src = tmp_path / "scan"
    src.mkdir()
    data = {f"f{i:03d}.tif": os.urandom(16 * KiB + i) for i in range(n)}
    for name, content in data.items():
        (src / name).write_bytes(content)
    return data


def _copy(tmp_path, store):
    exp = expand([str(tmp_path / "scan")], str(tmp_path / "out") + "/")
    exp.jobs[:] = [type(j)(j.src_store, j.src_path, j.src_stat, store, j.dst_path) for j in exp.jobs]
    cfg = Config(state_dir=str(tmp_path / "state"), copy=CopyConfig(streams=4, backoff_base=0.001, backoff_max=0.01,
                                                                    group_sync=True))
    return asyncio.run(CopyEngine(cfg).run(exp))


def test_small_files_are_synced_in_groups_then_verified(tmp_path):
    data = _tree(tmp_path, 60)
    store = GroupRecordingPosix()
    acct = _copy(tmp_path, store)
    assert sum(store.groups) == 60 and len(store.groups) < 60 // 4, store.groups   # not one sync per file
    assert all(f.status == "done" and f.adler32 == f"{zlib.adler32(data[os.path.basename(f.source)]):08x}"
               for f in acct.files)
    for name, content in data.items():
        assert (tmp_path / "out" / "scan" / name).read_bytes() == content
    assert not [p for p in (tmp_path / "out" / "scan").iterdir() if p.name not in data]   # no part files


def test_a_small_file_that_reads_back_wrong_after_its_group_sync_is_copied_again(tmp_path):
    data = _tree(tmp_path, 20)
    store = FaultyStorage(PosixStorage(), [Fault("readback", corrupt=True, path="f007.tif")])
    acct = _copy(tmp_path, store)
    by_name = {os.path.basename(f.source): f for f in acct.files}
    assert by_name["f007.tif"].status == "done" and by_name["f007.tif"].retries == 1
    assert sum(f.retries for f in acct.files) == 1
    assert store.calls["readback"] == 21
    for name, content in data.items():
        assert (tmp_path / "out" / "scan" / name).read_bytes() == content
