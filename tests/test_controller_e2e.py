"""The controller process with real agents: submit, copy, verify, rename, status, restart.

Real servers only: `domas controller` and `domas agent` run as processes on free loopback
ports, found ready by polling, stopped by PID.
"""

from __future__ import annotations

import json
import os
import subprocess
import zlib
from pathlib import Path

import pytest

from tests.fixtures.common import free_port, stop_process, wait_until
from tests.fixtures.controller import DOMAS, _agent, _cli, _controller, _env, _make_tree, _metrics, _status

# an mtime whose float of seconds rounds across a microsecond boundary (…123456896 ns reads back as
# …123457024): the source's mtime went through st_mtime, and 1 run in 3 of this test saw its
# destination a microsecond off
AWKWARD_MTIME_NS = 1764450000_123456896


def test_two_agents_copy_a_tree_verified_and_renamed(tmp_path):
    src, dst = tmp_path / "scan001", tmp_path / "central"
    contents = _make_tree(src)
    os.utime(src / "a.h5", ns=(AWKWARD_MTIME_NS, AWKWARD_MTIME_NS))
    port, metrics_port = free_port(), free_port()
    ctl = _controller(tmp_path, port, metrics_port)
    agents = [_agent(tmp_path, port, "a1"), _agent(tmp_path, port, "a2")]
    try:
        out = _cli(tmp_path, "submit", str(src), f"{dst}/", "--beamline", "b1", "--chunk-size", "64KiB", "--wait",
                   "--json", "--controller", f"127.0.0.1:{port}")
        assert out.returncode == 0, out.stdout + out.stderr
        summary = json.loads(out.stdout)
        assert (summary["state"], summary["files_done"], summary["bytes_done"]) == (
            "done", 5, sum(map(len, contents.values())))
        for rel, data in contents.items():
            assert (dst / "scan001" / rel).read_bytes() == data
        assert not list(dst.rglob("*.domas-part"))
        assert (dst / "scan001" / "a.h5").stat().st_mtime_ns == AWKWARD_MTIME_NS     # to the nanosecond
        again = _cli(tmp_path, "submit", str(src), f"{dst}/", "--json", "--controller", f"127.0.0.1:{port}")
        assert (json.loads(again.stdout)["files"], json.loads(again.stdout)["skipped"]) == (0, 5), again.stderr
        forced = _cli(tmp_path, "submit", str(src), f"{dst}/", "--json", "--force", "--controller", f"127.0.0.1:{port}")
        assert (json.loads(forced.stdout)["files"], json.loads(forced.stdout)["skipped"]) == (5, 0), forced.stderr
        files = _status(tmp_path, port, summary["transfer_id"])["files"]
        by_name = {Path(f["dst"]).relative_to(dst / "scan001").as_posix(): f["adler32"] for f in files}
        assert by_name == {rel: f"{zlib.adler32(data):08x}" for rel, data in contents.items()}
        listing = _cli(tmp_path, "status", summary["transfer_id"], "--files", "--controller", f"127.0.0.1:{port}")
        lines = listing.stdout.splitlines()
        assert listing.returncode == 0 and len(lines) == 6, listing.stdout + listing.stderr
        assert all(line == line.rstrip() for line in lines), lines      # no trailing blanks after a clean file
        # the forced resubmission (5 more files) runs on meanwhile: wait until it is done and both agents idle
        wait_until(lambda: all(m in _metrics(metrics_port) for m in (
            'domas_controller_queue_files{beamline="b1",state="done"} 5.0',
            'domas_controller_queue_files{beamline="",state="done"} 5.0', 'domas_controller_agents{state="idle"} 2.0')),
                   30, "metrics after the forced resubmission is done")
        text = _metrics(metrics_port)
        for name in ("domas_controller_concurrency_limit{endpoint=\"file\"}", "domas_controller_leases_total",
                     'domas_controller_agents{state="idle"} 2.0', "domas_controller_leases_active 0.0"):
            assert name in text, name
    finally:
        for p in agents + [ctl]:
            stop_process(p)


def test_queued_work_survives_a_controller_restart(tmp_path):
    src, dst = tmp_path / "run7", tmp_path / "out"
    contents = _make_tree(src)
    port = free_port()
    ctl = _controller(tmp_path, port)
    try:
        out = _cli(tmp_path, "submit", str(src), f"{dst}/", "--controller", f"127.0.0.1:{port}")
        assert out.returncode == 0, out.stderr
        tid = out.stdout.strip()
    finally:
        stop_process(ctl)
    ctl = _controller(tmp_path, port)
    agent = _agent(tmp_path, port, "a1")
    try:
        wait_until(lambda: _status(tmp_path, port, tid)["state"] == "done", 60, "transfer done after restart")
        for rel, data in contents.items():
            assert (dst / "run7" / rel).read_bytes() == data
    finally:
        stop_process(agent)
        stop_process(ctl)


@pytest.mark.parametrize("args, message", [
    (["status", "nope"], "no transfer 'nope'"),
    (["cancel", "nope"], "unknown transfer 'nope'"),
    (["submit", "{tmp}/does/not/exist", "{tmp}/x/"], "does not exist"),
])
def test_client_errors_are_one_sentence(tmp_path, args, message):
    port = free_port()
    ctl = _controller(tmp_path, port)
    try:
        out = _cli(tmp_path, *(a.format(tmp=tmp_path) for a in args), "--controller", f"127.0.0.1:{port}")
        assert out.returncode != 0 and message in out.stderr and "Traceback" not in out.stderr
    finally:
        stop_process(ctl)


def test_tls_controller_with_a_tls_agent_and_client(tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=IP:127.0.0.1,DNS:localhost"], check=True, capture_output=True)
    env = _env(tmp_path) | {"DOMAS_CONTROLLER_TLS_CERT": str(cert), "DOMAS_CONTROLLER_TLS_KEY": str(key),
                            "DOMAS_AGENT_TLS_CA": str(cert)}
    src, dst = tmp_path / "tls-src", tmp_path / "tls-dst"
    contents = _make_tree(src)
    port = free_port()
    ctl = _controller(tmp_path, port, env=env)
    agent = subprocess.Popen([*DOMAS, "agent", "--controller", f"127.0.0.1:{port}", "--name", "tls1",
                              "--state-dir", str(tmp_path / "tls1"), "--metrics-listen", "127.0.0.1:0",
                              "--tls-ca", str(cert)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        out = subprocess.run([*DOMAS, "submit", str(src), f"{dst}/", "--wait", "--json", "--controller",
                              f"127.0.0.1:{port}"], env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and json.loads(out.stdout)["state"] == "done", out.stderr
        assert all((dst / "tls-src" / rel).read_bytes() == data for rel, data in contents.items())
        plain = _cli(tmp_path, "status", "--controller", f"127.0.0.1:{port}", timeout=90)
        assert plain.returncode != 0 and "Traceback" not in plain.stderr      # no TLS: refused
    finally:
        stop_process(agent)
        stop_process(ctl)


def test_unreachable_controller_is_one_sentence(tmp_path):
    out = _cli(tmp_path, "status", "--controller", f"127.0.0.1:{free_port()}", timeout=90)
    assert out.returncode == 69 and "cannot be reached" in out.stderr and "Traceback" not in out.stderr
