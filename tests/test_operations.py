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


def test_operator_fields_survive_new_files_and_new_datasets(tmp_path):
    """An operator sets an embargo, the PI, team and proposal through `domas catalogue ...` while
    `domas up` runs; then a NeXus file arrives in the same dataset (metadata extraction) and a new
    processed/ dataset in the same beamtime. Nothing the operator set is wiped (the old archiver
    re-upserted its cached records: state=open, embargo_end=None, PI/team/proposal gone), and
    `domas catalogue history` shows each change with who and when."""
    import json

    from domas.config import CatalogueConfig
    from domas.catalogue import open_catalogue
    from tests.test_metadata import write_nexus
    from tests.test_up import RAW, Up

    u = Up(tmp_path)
    try:
        rel = f"{RAW}/first.dat"
        u.drop(rel, os.urandom(50_000))
        wait_until(lambda: u.replica(rel, "central") == "verified", timeout=60, what="first file archived")
        (raw,) = json.loads(u.catalogue("find", "--json").stdout)
        for args in (["proposal", "set", "P-1", "--title", "Cathodes", "--pi", "Ada"],
                     ["beamtime", "set", "BT0001", "--proposal", "P-1", "--pi", "Grace", "--team", "Linus,Ken"],
                     ["embargo", raw["pid"], "--until", "2031-01-01"]):
            r = u.catalogue(*args, "--by", "operator1")
            assert r.returncode == 0, r.stderr
        write_nexus(u.beamline / RAW / "scan.nxs")
        (u.beamline / RAW.replace("raw", "processed")).mkdir(parents=True)
        (u.beamline / RAW.replace("raw", "processed") / "p.dat").write_bytes(os.urandom(30_000))
        wait_until(lambda: u.replica(f"{RAW}/scan.nxs", "central") == "verified"
                   and u.replica(f"{RAW.replace('raw', 'processed')}/p.dat", "central") == "verified",
                   timeout=60, what="new file and new dataset archived")
        wait_until(lambda: json.loads(u.catalogue("show", raw["pid"], "--json").stdout)["dataset"]["metadata"],
                   timeout=30, what="NeXus metadata extracted")
        shown = json.loads(u.catalogue("show", raw["pid"], "--json").stdout)["dataset"]
        assert (shown["state"], shown["embargo_end"]) == ("embargoed", 1924992000.0), shown
        assert shown["metadata"].get("format") == "nexus"
        with open_catalogue(CatalogueConfig(), u.data / "state") as cat:
            bt = cat.get_beamtime("BT0001")
            assert (bt.proposal, bt.pi, bt.team) == ("P-1", "Grace", ("Linus", "Ken"))
            assert (cat.get_proposal("P-1").title, cat.get_proposal("P-1").pi) == ("Cathodes", "Ada")
        hist = json.loads(u.catalogue("history", raw["pid"], "--json").stdout)
        assert {(h["who"], h["target"], h["field"], json.dumps(h["new"])) for h in hist} >= {
            ("operator1", "beamtime:BT0001", "pi", '"Grace"'), ("operator1", "proposal:P-1", "title", '"Cathodes"'),
            ("operator1", f"dataset:{raw['pid']}", "state", '"embargoed"')}
    finally:
        u.stop()
