"""`domas submit` against a controller that is away or restarts in the middle of the call.

The client asks again, with backoff and the same request id, so the controller queues the transfer
exactly once: a restart that lost a half-staged submission gets it again; one that had accepted it
answers with that transfer. When the controller stays away the client gives up after --retry-for
seconds in one sentence (exit 69) that names the request id to repeat it with.

Real processes only: `domas controller` from a config file in an empty directory, killed -9 and
started again on the same state; the CLI as a user runs it; the state store is only read.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from pathlib import Path

from tests.fixtures.facility import Facility


def _tree(root: Path, n: int) -> Path:
    root.mkdir(parents=True)
    for i in range(n):
        (root / f"f{i:05d}.h5").write_bytes(b"x%d" % i)
    return root


def _staged(fac: Facility) -> bool:
    try:
        return bool(fac.rows("SELECT COUNT(*) FROM staged")[0][0])
    except sqlite3.Error:
        return False            # not created yet, or busy for a moment


def test_submit_waits_for_a_controller_that_is_not_up_yet(tmp_path):
    fac = Facility(tmp_path)
    src = _tree(tmp_path / "beamline" / "scan", 3)
    try:
        sub = fac.submit(src)                       # nothing listens yet
        time.sleep(1.5)
        assert sub.poll() is None, sub.communicate()     # still asking (old code: gone, exit 69)
        fac.start_controller()
        out, err = sub.communicate(timeout=60)
        assert sub.returncode == 0, err
        assert json.loads(out)["files"] == 3
        assert fac.rows("SELECT COUNT(*) FROM transfers") == [(1,)]
    finally:
        fac.stop()
    assert fac.tracebacks() == {}


def test_controller_killed_mid_submission_queues_it_once(tmp_path):
    fac = Facility(tmp_path)
    n = 20_000                                      # its rows take over a second: the kill lands inside
    src = _tree(tmp_path / "beamline" / "scan", n)
    try:
        fac.start_controller()
        sub = fac.submit(src)
        deadline = time.monotonic() + 60
        while not _staged(fac):                     # a tight poll: the rows are written within ~0.2 s
            assert sub.poll() is None, "the submission ended before its rows were seen being written"
            assert time.monotonic() < deadline, "the submission's rows were never seen being written"
            time.sleep(0.003)
        fac.kill_controller()                       # kill -9 in the middle of the call
        time.sleep(0.5)
        assert sub.poll() is None, sub.communicate()     # the client keeps asking (old code: exit 69 here)
        fac.start_controller()
        out, err = sub.communicate(timeout=120)
        assert sub.returncode == 0 and "Traceback" not in err, err
        got = json.loads(out)
        assert got["files"] == n
        rows = fac.rows("SELECT id, request_id, files_total FROM transfers")
        assert len(rows) == 1 and rows[0][0] == got["transfer_id"] and rows[0][2] == n, rows
        assert fac.rows("SELECT COUNT(*), COUNT(DISTINCT dst) FROM files") == [(n, n)]
        # the same request id again (a client that lost the answer) is the same transfer, not a second
        again = fac.cli("submit", str(src), f"{tmp_path}/central/", "--json", "--request-id", rows[0][1])
        assert again.returncode == 0 and json.loads(again.stdout)["transfer_id"] == got["transfer_id"], again
        assert fac.rows("SELECT COUNT(*) FROM transfers") == [(1,)]
        # and new work after the restart completes (the big one is cancelled: copying it is not the point)
        assert fac.cli("cancel", got["transfer_id"]).returncode == 0
        fac.start_agents(n=1, streams=2)
        new = _tree(tmp_path / "beamline" / "later", 3)
        done = fac.cli("submit", str(new), f"{tmp_path}/central/", "--wait", "--json")
        assert done.returncode == 0 and json.loads(done.stdout)["files_done"] == 3, done.stdout + done.stderr
    finally:
        fac.stop()
    assert fac.tracebacks() == {}


def test_submit_gives_up_in_one_sentence_naming_the_request_id(tmp_path):
    fac = Facility(tmp_path)
    src = _tree(tmp_path / "beamline" / "scan", 1)
    t = time.monotonic()
    r = fac.cli("submit", str(src), f"{tmp_path}/central/", "--retry-for", "1.5")
    took = time.monotonic() - t
    assert r.returncode == 69 and r.stdout == "", r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "did not take the transfer in 1.5 s" in lines[0] and "--request-id " in lines[0], r.stderr
    assert 1.5 <= took < 15, took
    rid = lines[0].split("--request-id ")[1].split(",")[0].split()[0]
    try:
        fac.start_controller()                      # the sentence's advice, followed: queued once
        first = fac.cli("submit", str(src), f"{tmp_path}/central/", "--request-id", rid)
        second = fac.cli("submit", str(src), f"{tmp_path}/central/", "--request-id", rid)
        assert first.returncode == second.returncode == 0 and first.stdout == second.stdout, (first, second)
        assert fac.rows("SELECT request_id FROM transfers") == [(rid,)]
    finally:
        fac.stop()
    bad = fac.cli("submit", str(src), f"{tmp_path}/central/", "--retry-for", "soon")
    assert bad.returncode == 2 and "--retry-for" in bad.stderr
