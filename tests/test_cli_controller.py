"""`domas cancel` against a real controller process, before and after a restart with its history."""

from __future__ import annotations

from domas.errors import AlreadyEnded, NotFound
from tests.fixtures.common import free_port, stop_process, wait_until
from tests.fixtures.controller import _agent, _cli, _controller, _make_tree, _status


def test_cancelling_a_finished_transfer_says_it_already_finished_even_after_a_restart(tmp_path):
    """After a controller restart a finished transfer is history only (not restored into the
    scheduler): `domas cancel` said "unknown transfer" of a transfer `domas status` still showed."""
    src, dst = tmp_path / "run3", tmp_path / "out"
    _make_tree(src)
    port = free_port()
    ctl = _controller(tmp_path, port)
    agent = _agent(tmp_path, port, "a1")
    try:
        out = _cli(tmp_path, "submit", str(src), f"{dst}/", "--wait", "--controller", f"127.0.0.1:{port}")
        assert out.returncode == 0, out.stdout + out.stderr
        tid = out.stdout.split()[0]
        before = _cli(tmp_path, "cancel", tid, "--controller", f"127.0.0.1:{port}")
    finally:
        stop_process(agent)
        stop_process(ctl)
    ctl = _controller(tmp_path, port)
    try:
        wait_until(lambda: _status(tmp_path, port, tid)["state"] == "done", 30, "the history after the restart")
        after = _cli(tmp_path, "cancel", tid, "--controller", f"127.0.0.1:{port}")
        unknown = _cli(tmp_path, "cancel", "nope", "--controller", f"127.0.0.1:{port}")
    finally:
        stop_process(ctl)
    for done in (before, after):
        assert done.returncode == AlreadyEnded.exit_code, done.stdout + done.stderr
        assert done.stderr == f"domas: transfer {tid!r} already finished (done); there is nothing to cancel\n"
        assert done.stdout == ""
    assert unknown.returncode == NotFound.exit_code and unknown.stderr == "domas: unknown transfer 'nope'\n"


def test_an_agent_waiting_for_its_controller_logs_one_sentence(tmp_path):
    """An agent started before its controller logged grpc core's text: "failed to connect to all
    addresses; last error: UNKNOWN: ipv4:127.0.0.1:7400: Failed to connect to remote host: ..."."""
    port = free_port()
    agent = _agent(tmp_path, port, "early")
    log = tmp_path / "agent-early.log"
    try:
        wait_until(lambda: "retrying" in log.read_text(), 30, "the agent to try the controller", agent)
    finally:
        stop_process(agent)
    text = log.read_text()
    assert f"controller 127.0.0.1:{port}: cannot be reached; retrying" in text, text
    assert "failed to connect" not in text.lower() and "ipv4:" not in text, text
