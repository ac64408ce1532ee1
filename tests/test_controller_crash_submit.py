"""A controller killed (kill -9) in the middle of a large submission, then restarted from the same
state directory and config: the submission is wholly there or wholly absent, a resubmission and
new work complete, nothing is copied twice, and no log holds a traceback.

Real processes only: `domas controller` and two `domas agent`s started from one config file in an
empty directory, the CLI as a user runs it; the state store is only read (read-only SQLite) to see
when the submission's rows are being written and what a restart left.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.fixtures.facility import Facility

FILES = 20_000      # planning and writing its rows take over a second here: the kill lands inside


def _tree(root: Path, n: int, prefix: str = "f") -> Path:
    root.mkdir(parents=True)
    for i in range(n):
        fd = os.open(root / f"{prefix}{i:06d}.h5", os.O_CREAT | os.O_WRONLY, 0o644)
        os.write(fd, f"{prefix}{i}".encode())
        os.close(fd)
    return root


def _kill_while_staging(fac: Facility, src: Path) -> subprocess.CompletedProcess:
    """Submit `src` and kill -9 the controller once the submission's file rows are being written;
    the client tries once (--retry-for 0), so the cut is seen as the user of one call sees it."""
    sub = fac.submit(src, "--retry-for", "0")
    deadline = time.monotonic() + 60
    while True:             # a tight poll: the rows of 20 000 files are written within ~0.2 s
        assert sub.poll() is None, "the submission ended before its rows were seen being written"
        assert time.monotonic() < deadline, "the submission's rows were never seen being written"
        try:
            if fac.rows("SELECT COUNT(*) FROM staged")[0][0]:
                break
        except sqlite3.Error:
            pass            # the store not created yet, or busy for a moment
        time.sleep(0.003)
    fac.kill_controller()
    out, err = sub.communicate(timeout=60)
    return subprocess.CompletedProcess(sub.args, sub.returncode, out, err)


@pytest.mark.slow
def test_kill_9_mid_submission_then_restart_resubmit_and_new_work(tmp_path):
    fac = Facility(tmp_path)
    src = _tree(tmp_path / "beamline" / "scan", FILES)
    try:
        fac.start_controller()
        # 1. killed while the rows of a 20 000-file submission are being written
        cut = _kill_while_staging(fac, src)
        assert cut.returncode != 0 and "Traceback" not in cut.stderr, cut.stderr
        assert len(cut.stderr.strip().splitlines()) == 1, cut.stderr          # one sentence for the user
        assert fac.rows("SELECT COUNT(*) FROM staged")[0][0] == 1              # the crash left its rows behind
        fac.start_controller()
        # wholly absent: no transfer, no file row, nothing staged, no status line
        assert fac.rows("SELECT COUNT(*) FROM transfers")[0][0] == 0
        assert fac.rows("SELECT COUNT(*) FROM files")[0][0] == 0
        assert fac.rows("SELECT COUNT(*) FROM staged")[0][0] == 0
        listed = fac.cli("status")
        assert (listed.returncode, listed.stdout) == (0, ""), listed

        # 2. the resubmission is accepted whole; a kill -9 right after its answer keeps all of it
        sub = fac.submit(src)
        out, err = sub.communicate(timeout=120)
        assert sub.returncode == 0, err
        big = json.loads(out)
        assert big["files"] == FILES, big
        fac.kill_controller()
        fac.start_controller()
        (tid, total), = fac.rows("SELECT id, files_total FROM transfers")
        assert (tid, total) == (big["transfer_id"], FILES)
        lo, hi, n = fac.rows("SELECT MIN(id), MAX(id), COUNT(*) FROM files WHERE transfer_id=?", tid)[0]
        assert n == FILES and hi - lo + 1 == FILES

        # 3. agents come; new work is accepted and completes, and so does the resubmission
        fac.start_agents()
        new = _tree(tmp_path / "beamline" / "later", 20, prefix="g")
        done = fac.cli("submit", str(new), f"{tmp_path}/central/", "--wait", "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        assert json.loads(done.stdout)["files_done"] == 20
        final = fac.cli("status", tid, "--wait", "--json", timeout=180)
        assert final.returncode == 0, final.stdout + final.stderr
        st = json.loads(final.stdout)
        assert (st["state"], st["files_done"], st["files_failed"]) == ("done", FILES, 0), st

        # nothing doubled: two transfers, one row per file, every destination once with its bytes
        assert fac.rows("SELECT COUNT(*) FROM transfers")[0][0] == 2
        assert fac.rows("SELECT COUNT(*), COUNT(DISTINCT dst) FROM files")[0] == (FILES + 20, FILES + 20)
        copied = sorted(os.listdir(tmp_path / "central" / "scan"))
        assert copied == sorted(os.listdir(src))
        for name in (copied[0], copied[FILES // 2], copied[-1]):
            assert (tmp_path / "central" / "scan" / name).read_bytes() == (src / name).read_bytes()
        assert sorted(os.listdir(tmp_path / "central" / "later")) == sorted(os.listdir(new))
    finally:
        fac.stop()
    assert fac.tracebacks() == {}
    assert not [p for p in (tmp_path / "central").rglob("*") if p.name.endswith(".domas-part")]
