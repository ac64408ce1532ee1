"""Raw internals never reach users: a failure inside the controller (sqlite, a bug) reaches the
`domas` CLI as one sentence, with the error's kind, never `Unexpected <class ...>` or sqlite text.

Real processes: `domas controller` on a free port and the CLI; the faults are made in the
controller's own SQLite state from outside (a row in the way, a lock held), as an operator's
mistake or a stuck backup job would.
"""

from __future__ import annotations

import sqlite3

from tests.fixtures.common import free_port, stop_process
from tests.fixtures.controller import _cli, _controller

RAW_TEXT = ("Unexpected", "<class", "sqlite", "UNIQUE constraint", "Traceback", "database is locked")


def _one_sentence(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert not any(t in lines[0] for t in RAW_TEXT), lines[0]
    assert lines[0].startswith("domas: ")
    return lines[0]


def test_a_submission_the_controller_fails_on_prints_one_sentence(tmp_path):
    port = free_port()
    ctl = _controller(tmp_path, port)
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.h5").write_bytes(b"x" * 1000)
    try:
        with sqlite3.connect(tmp_path / "ctl" / "controller.sqlite") as db:   # a row where the next id goes
            db.execute("INSERT INTO files (id, transfer_id, src, dst, size, mtime_ns, state) "
                       "VALUES (1, 'elsewhere', '/a', '/b', 1, 0, 'done')")
        out = _cli(tmp_path, "submit", str(src), f"{tmp_path}/dst/", "--controller", f"127.0.0.1:{port}", "--retry-for", "0")
        assert out.returncode == 7, out.stderr          # refused, retriable: nothing was recorded
        line = _one_sentence(out.stderr)
        assert "could not record this in its state store" in line and "try again" in line
        log = (tmp_path / f"controller-{port}.log").read_text()
        assert log.count("UNIQUE constraint failed: files.id") >= 1, "the details are in the controller's log"
        # the controller rebuilt itself from what is stored, so the retry takes ids above the stray row
        again = _cli(tmp_path, "submit", str(src), f"{tmp_path}/dst/", "--controller", f"127.0.0.1:{port}")
        assert again.returncode == 0, again.stderr
    finally:
        stop_process(ctl)


def test_a_busy_state_store_is_a_retriable_sentence(tmp_path):
    port = free_port()
    ctl = _controller(tmp_path, port)
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.h5").write_bytes(b"x" * 1000)
    db = sqlite3.connect(tmp_path / "ctl" / "controller.sqlite", isolation_level=None)
    try:
        db.execute("BEGIN EXCLUSIVE")
        out = _cli(tmp_path, "submit", str(src), f"{tmp_path}/dst/", "--controller", f"127.0.0.1:{port}", "--retry-for", "0")
        db.execute("ROLLBACK")
        assert out.returncode == 7, out.stderr          # TransientError: try again
        assert "state store (busy or full)" in _one_sentence(out.stderr)
    finally:
        db.close()
        stop_process(ctl)
