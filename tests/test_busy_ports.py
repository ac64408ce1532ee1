"""A port someone else holds is one sentence naming the key, never a traceback."""

from __future__ import annotations

import socket
import subprocess
import sys

from tests.fixtures.common import free_port


def _hold(port: int) -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", port))
    s.listen()
    return s


def _domas(tmp_path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "domas.cli", *args], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)


def test_controller_on_a_taken_port(tmp_path):
    port = free_port()
    with _hold(port):
        r = _domas(tmp_path, "controller", "--listen", f"127.0.0.1:{port}", "--state-dir", str(tmp_path / "c"),
                   "--metrics-listen", "127.0.0.1:0", "--root", str(tmp_path))
    assert r.returncode == 78 and "Traceback" not in r.stderr
    assert f"controller.listen: cannot listen on 127.0.0.1:{port}" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr      # no gRPC core log line (add_port.cc) before it


def test_up_with_the_metrics_port_taken(tmp_path):
    port = free_port()
    cfg = tmp_path / "domas.toml"
    cfg.write_text(f'[controller]\nlisten = "127.0.0.1:0"\nmetrics_listen = "127.0.0.1:0"\nhttp_listen = "127.0.0.1:0"\n'
                   f'[agent]\nmetrics_listen = "127.0.0.1:{port}"\n')
    with _hold(port):
        r = _domas(tmp_path, "--config", str(cfg), "up", "--data-dir", str(tmp_path / "d"))
    assert r.returncode == 78 and "Traceback" not in r.stderr
    assert "agent.metrics_listen: cannot serve metrics" in r.stderr


def test_agent_and_controller_metrics_ports_taken_name_their_keys(tmp_path):
    port, ctl_port = free_port(), free_port()
    with _hold(port):
        agent = _domas(tmp_path, "agent", "--controller", f"127.0.0.1:{ctl_port}", "--name", "a1",
                       "--state-dir", str(tmp_path / "a"), "--metrics-listen", f"127.0.0.1:{port}")
        ctl = _domas(tmp_path, "controller", "--listen", f"127.0.0.1:{ctl_port}", "--state-dir", str(tmp_path / "c"),
                     "--metrics-listen", f"127.0.0.1:{port}", "--root", str(tmp_path))
    assert agent.returncode == 78 and "agent.metrics_listen: cannot serve metrics" in agent.stderr, agent.stderr
    assert ctl.returncode == 78 and "controller.metrics_listen: cannot serve metrics" in ctl.stderr, ctl.stderr
