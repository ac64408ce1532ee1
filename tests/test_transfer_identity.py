"""Controller transfers never finish a mix of two versions of a source (issue 8, finding 3, agent
path): a rewrite that restores the mtime still changes the version the leases carry (ctime and
inode), so the agents refuse it and the file is copied again from the start, whole.

A real `domas controller` and one `domas agent` (leases of 3 s); the agent is frozen for the
moment of the rewrite so that it falls between two chunks whatever the disk speed.
"""

from __future__ import annotations

import os
import signal
import time

from tests.fixtures.common import wait_until
from tests.fixtures.controller import _status
from tests.test_controller_faults import Cluster, _chunks_ok, _finished, _progress, _submit, _write

MiB = 1 << 20
CS = 256 * 1024


def test_a_rewrite_that_restores_the_mtime_mid_transfer_restarts_the_file(tmp_path):
    src, dst = tmp_path / "scan", tmp_path / "out"
    old = _write(src, {"d.bin": 64 * MiB})["d.bin"]
    new = os.urandom(len(old))
    c = Cluster(tmp_path, agents=1)
    agent = c.agents[0]
    try:
        tid = _submit(tmp_path, c.port, src, dst, "256KiB")
        wait_until(lambda: _chunks_ok(c.metrics[0]) >= 2, 60, "the agent copying chunks")
        os.kill(agent.pid, signal.SIGSTOP)
        try:
            assert _progress(c.port, tid)[0] < len(old), "every chunk was copied before the rewrite: make it larger"
            before = os.stat(src / "d.bin")
            time.sleep(0.02)                     # let the coarse kernel clock tick, as any rewrite would
            with open(src / "d.bin", "r+b") as fh:    # new head and tail, old mtime put back
                fh.write(new[:CS])
                fh.seek(len(new) - CS)
                fh.write(new[-CS:])
            os.utime(src / "d.bin", ns=(before.st_atime_ns, before.st_mtime_ns))
            assert os.stat(src / "d.bin").st_mtime_ns == before.st_mtime_ns
        finally:
            os.kill(agent.pid, signal.SIGCONT)
        wait_until(lambda: _finished(c.port, tid), 90, "the transfer")
        st = _status(tmp_path, c.port, tid)
        assert st["state"] == "done", st
        now = (src / "d.bin").read_bytes()
        assert now == new[:CS] + old[CS:-CS] + new[-CS:]
        assert (dst / "scan" / "d.bin").read_bytes() == now          # the current version, whole
    finally:
        c.stop()


def test_finalize_refuses_a_source_rewritten_after_its_chunks_were_read(tmp_path):
    """The controller's last look before the rename: the source is no longer the version the
    chunks came from, so the part is not renamed and the verdict restarts the file."""
    import zlib

    from domas.transfer.storage import PosixStorage
    from domas.controller import events as ev
    from domas.controller.service import verify_and_rename

    src, part, final = tmp_path / "d.bin", tmp_path / ".d.bin.domas-part", tmp_path / "d.bin.copy"
    content = os.urandom(3 * CS)
    src.write_bytes(content)
    part.write_bytes(content)
    os.chmod(src, 0o600)
    st = PosixStorage().stat_follow(str(src))
    planned = dict(mtime_ns=src.stat().st_mtime_ns, src_url=str(src), src_version=st.version())
    a = ev.FinalizeFile("t", 1, str(part), str(final), len(content), zlib.adler32(content), True, **planned)
    before = src.stat()
    time.sleep(0.02)
    with open(src, "r+b") as fh:                      # same bytes back, same mtime: only the ctime moves
        fh.write(content[:10])
    os.utime(src, ns=(before.st_atime_ns, before.st_mtime_ns))
    got = verify_and_rename(a)
    assert (got.error_kind, got.retriable) == ("source_changed", True)
    size, mtime_ns, version = got.observed
    assert (size, version) == (len(content), PosixStorage().stat_follow(str(src)).version()) != (size, st.version())
    assert abs(mtime_ns - before.st_mtime_ns) < 1000
    assert part.exists() and not final.exists()
    now = PosixStorage().stat_follow(str(src)).version()
    got = verify_and_rename(ev.FinalizeFile("t", 1, str(part), str(final), len(content), zlib.adler32(content),
                                            True, before.st_mtime_ns, str(src), now))
    assert got.error_kind == "" and final.read_bytes() == content
    assert (final.stat().st_mode & 0o777) == 0o600                     # the source's mode, not the part's


def test_scheduler_restarts_a_file_whose_source_changed_at_finalize_with_its_new_identity():
    from domas.controller import events as ev
    from domas.controller.scheduler import Scheduler, SchedulerConfig

    s = Scheduler(SchedulerConfig(), __import__("random").Random(1))
    files = (ev.FileSpec("/s/a", "/d/a", 2 * CS, 5, "7:42"),)
    s.on_event(ev.TransferSubmitted(ev.TransferSpec("t", chunk_size=CS), files), 0.0)
    s.on_event(ev.AgentRegistered("ag"), 0.0)
    leases = [x for a in s.on_event(ev.LeaseRequested("ag", 2), 0.0) if isinstance(a, ev.GrantLeases)
              for x in a.leases]
    assert {x.version for x in leases} == {"7:42"}
    out = []
    for x in leases:
        out += s.on_event(ev.ChunkReported("ag", ev.ChunkReport(f"r{x.index}", x.lease_id, "t", x.file_id, x.index,
                                                                 x.offset, x.length, 1, 0, x.length)), 1.0)
    fin = [a for a in out if isinstance(a, ev.FinalizeFile)][0]
    assert (fin.src_url, fin.src_version, fin.mtime_ns) == ("/s/a", "7:42", 5)
    out = s.on_event(ev.DestinationVerified("t", 1, None, "source_changed", "changed", True, (2 * CS, 5, "9:42")), 2.0)
    assert [a for a in out if isinstance(a, ev.FileReset)] == [
        ev.FileReset("t", 1, 2 * CS, 5, "source_changed", "9:42")]
    again = [x for a in s.on_event(ev.LeaseRequested("ag", 2), 3.0) if isinstance(a, ev.GrantLeases)
             for x in a.leases]
    assert sorted(x.index for x in again) == [0, 1] and {x.version for x in again} == {"9:42"}
