"""Operations: the system as a facility runs it, stopped, killed and restarted with history in its
state, then given new work (after every restart, something new is submitted).

Real processes only (`domas controller`, `domas agent`, `domas up`), on free loopback ports, found
ready by polling, stopped by PID or SIGKILLed (the fault).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.fixtures.common import free_port, stop_process, wait_until
from tests.fixtures.controller import _agent, _cli, _controller, _status


def _write(root: Path, n: int, size: int = 150_000) -> dict[str, bytes]:
    root.mkdir(parents=True, exist_ok=True)
    data = {f"f{i}.h5": os.urandom(size + i) for i in range(n)}
    for name, content in data.items():
        (root / name).write_bytes(content)
    return data


def _submit_wait(tmp: Path, port: int, src: Path, dst: Path) -> dict:
    out = _cli(tmp, "submit", str(src), f"{dst}/", "--chunk-size", "64KiB", "--wait", "--controller",
               f"127.0.0.1:{port}")
    assert out.returncode == 0, out.stdout + out.stderr
    tid = out.stdout.split()[0]
    return _status(tmp, port, tid)


def test_controller_restarted_with_finished_history_takes_new_work(tmp_path):
    """SIGTERM and kill -9 on a state dir whose transfers all finished, then a new submission each
    time: it is accepted and copied (the old code refused it: UNIQUE constraint failed: files.id)."""
    port = free_port()
    ctl = _controller(tmp_path, port)
    agent = _agent(tmp_path, port, "dtn01")
    try:
        _write(tmp_path / "src0", 3)
        first = _submit_wait(tmp_path, port, tmp_path / "src0", tmp_path / "dst")
        assert first["state"] == "done", first
        for run, how in enumerate(("term", "kill", "term"), start=1):
            if how == "term":
                stop_process(ctl)
            else:
                os.kill(ctl.pid, signal.SIGKILL)
                ctl.wait(timeout=10)
            ctl = _controller(tmp_path, port)
            data = _write(tmp_path / f"src{run}", 3)
            st = _submit_wait(tmp_path, port, tmp_path / f"src{run}", tmp_path / "dst")
            assert (st["state"], st["files_done"]) == ("done", 3), st
            for name, content in data.items():
                assert (tmp_path / "dst" / f"src{run}" / name).read_bytes() == content
            ids = [f["file_id"] for f in st["files"]]
            assert min(ids) > max(f["file_id"] for f in first["files"])
    finally:
        stop_process(agent)
        stop_process(ctl)



def test_domas_up_keeps_copying_new_files_after_restarts(tmp_path):
    """`domas up` stopped (SIGTERM) and killed (kill -9) with finished copies in its state: files
    dropped after each restart still reach central and tape (the old code never copied again)."""
    from tests.test_up import RAW, Up

    u = Up(tmp_path)
    try:
        for run, how in enumerate(("first", "term", "kill")):
            if how != "first":
                if how == "term":
                    u.stop()
                else:
                    os.kill(u.proc.pid, signal.SIGKILL)
                    u.proc.wait(timeout=10)
                    u.log.close()
                (u.data / "domas.toml").unlink()
                u = Up(tmp_path)
            rel = f"{RAW}/scan_{run:04d}.h5"
            data = os.urandom(200_000 + run)
            u.drop(rel, data)
            wait_until(lambda: u.replica(rel, "tape") == "verified", timeout=90, what=f"tape copy after {how}")
            assert (u.data / "central" / rel).read_bytes() == data
    finally:
        u.stop()


def test_status_wait_ends_with_the_transfer_and_its_exit_code(tmp_path):
    """`domas status ID --wait` returns when the transfer ends, prints the final line, and exits 0
    only when it is done (the option did not exist)."""
    import subprocess

    from tests.fixtures.controller import DOMAS, _env

    port = free_port()
    ctl = _controller(tmp_path, port)
    agent = None
    addr = ("--controller", f"127.0.0.1:{port}")
    try:
        _write(tmp_path / "good", 2)
        _write(tmp_path / "bad", 1)
        ids = {}
        for name in ("good", "bad"):
            out = _cli(tmp_path, "submit", str(tmp_path / name), f"{tmp_path}/dst/", *addr)
            assert out.returncode == 0, out.stderr
            ids[name] = out.stdout.strip()
        (tmp_path / "bad" / "f0.h5").unlink()            # gone before any agent runs: not_found, permanent
        waiter = subprocess.Popen([*DOMAS, "status", ids["good"], "--wait", *addr], env=_env(tmp_path),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert waiter.poll() is None
        agent = _agent(tmp_path, port, "dtn01")
        out, err = waiter.communicate(timeout=60)
        assert waiter.returncode == 0, err
        (line,) = out.strip().splitlines()
        assert line.startswith(f"{ids['good']}  done ") and "files 2/2" in line
        bad = _cli(tmp_path, "status", ids["bad"], "--wait", *addr)
        assert bad.returncode == 1 and f"{ids['bad']}  failed " in bad.stdout, bad.stdout + bad.stderr
        assert _cli(tmp_path, "status", "--wait", *addr).returncode == 2
    finally:
        if agent:
            stop_process(agent)
        stop_process(ctl)
