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
