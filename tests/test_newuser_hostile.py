"""Hostile input a new user's first hour throws at the small commands: control and invisible
characters, empty strings. Each is refused in one sentence (exit 2) and nothing is stored that
the next command, typed as the previous one said, cannot find.

Real processes (`python -m domas.cli`) on real files.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PLAIN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("DOMAS_")}


def domas(*args, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "domas.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=PLAIN_ENV)


@pytest.fixture
def deployment(tmp_path):
    (tmp_path / "domas.toml").write_text('data_dir = "data"\n')
    return tmp_path


@pytest.mark.parametrize("name", ["a\x01b", "Ada\x1b[2JLovelace", "zero\u200bwidth", "bell\x07"])
def test_a_user_name_with_a_control_or_invisible_character_is_refused(deployment, name):
    """Was: stored as given while the terminal showed it without the character ('added ab (user);
    `domas user token 'ab'` gives a token'), and that command then said 'there is no user ab'."""
    out = domas("--config", "domas.toml", "user", "add", name, cwd=deployment)
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert out.stderr.startswith("domas: user name ") and "printable characters on one line" in out.stderr
    listed = domas("--config", "domas.toml", "user", "list", cwd=deployment)
    assert name not in listed.stdout


@pytest.mark.parametrize("name, said", [("dtn\x01", "contains a control or separator character"),
                                        ("dtn 01", "contains a space"),
                                        ("a" * 5000, "is 5000 characters long; at most 128 are allowed")])
def test_an_agent_name_the_controller_would_refuse_is_refused_at_start(deployment, name, said):
    """Was: the agent started, printed its banner and asked the controller again every 2 s forever
    ('name ... contains a control or separator character; retrying'); a name of 5000 characters
    was 'File name too long (...)', exit 3 (its spool file)."""
    out = domas("--config", "domas.toml", "agent", "--controller", "127.0.0.1:9", "--name", name,
                "--metrics-listen", "127.0.0.1:0", cwd=deployment, timeout=20)
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert out.stderr.strip().splitlines() == [f"domas: --name {said}" if len(name) > 128 else
                                               f"domas: --name {name!r} {said}"], out.stderr


@pytest.mark.parametrize("listen", ["nonsense", "127.0.0.1:99999", "127.0.0.1:port"])
def test_a_metrics_address_that_is_no_host_port_says_so(deployment, listen):
    """Was: "agent.metrics_listen: cannot serve metrics on 'nonsense': invalid literal for int() with
    base 10: 'nonsense'" (Python's ValueError text). The key is named for the flag too, as the
    controller's is (tests/test_busy_ports.py)."""
    out = domas("--config", "domas.toml", "agent", "--controller", "127.0.0.1:9", "--metrics-listen", listen,
                cwd=deployment, timeout=20)
    assert out.returncode == 78, (out.returncode, out.stderr)
    assert out.stderr.strip().splitlines() == [f"domas: agent.metrics_listen: {listen!r} is not host:port, e.g. "
                                               "127.0.0.1:9400 (port 0: any free port)"], out.stderr


@pytest.mark.parametrize("args, said", [
    (["status", ""], "domas: the transfer id is empty; `domas status` lists the recent ones"),
    (["status", "--files"], "domas: --files needs a transfer id: domas status ID --files"),
    (["catalogue", "show", ""], "argument PID: is empty"),
    (["catalogue", "history", " "], "argument PID: is empty"),
    (["catalogue", "release", ""], "argument PID: is empty"),
])
def test_an_empty_id_is_a_usage_error_not_a_lookup(deployment, args, said):
    """Was: `domas status ""` listed every transfer and `status --files` ignored --files (both
    exit 0, or 69 with no controller); `catalogue show ""` said 'no dataset  in the catalogue'
    (exit 3), history and release alike. The controller here is a closed port: a refusal that
    comes after a call shows as exit 69."""
    (deployment / "domas.toml").write_text('data_dir = "data"\n[agent]\ncontroller = "127.0.0.1:9"\n')
    out = domas("--config", "domas.toml", *args, cwd=deployment, timeout=30)
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert said in out.stderr.strip().splitlines()[-1], out.stderr


@pytest.mark.parametrize("token", ["secret\n", "sécret", "tab\there"])
@pytest.mark.parametrize("command", [["status"], ["agent", "--name", "dtn01", "--metrics-listen", "127.0.0.1:0"]])
def test_a_token_grpc_cannot_carry_is_named_not_blamed_on_the_controller(deployment, token, command):
    """Was: 'the controller at ... failed to answer (internal); its log has the details' (exit 69)
    from `domas status`, and an agent that retried forever: gRPC refuses such a header value on
    the client side. A token pasted with its newline is the common case."""
    env = {**PLAIN_ENV, "DOMAS_TOKEN": token}
    out = subprocess.run([sys.executable, "-m", "domas.cli", "--config", "domas.toml", *command,
                          "--controller", "127.0.0.1:9"], capture_output=True, text=True, timeout=30,
                         cwd=deployment, env=env)
    assert out.returncode == 78, (out.returncode, out.stderr)
    assert out.stderr.strip().splitlines() == ["domas: controller.token (or DOMAS_TOKEN) holds a control character "
                                               "or a non-ASCII letter, which no token has; check it"], out.stderr


@pytest.mark.parametrize("where", [["--config", ""], ["catalogue", "find", "--config", " "]])
def test_an_empty_config_flag_is_refused_not_read_as_no_config(tmp_path, where):
    """`domas --config "$CFG" ...` with CFG unset. Was: the defaults (~/.local/state, or ./domas-data
    for `up`), so an operator's typo ran a demo deployment beside the real one; exit 0 here."""
    env = {**PLAIN_ENV, "HOME": str(tmp_path)}
    args = where if where[0] == "catalogue" else [*where, "catalogue", "find"]
    out = subprocess.run([sys.executable, "-m", "domas.cli", *args], capture_output=True, text=True, timeout=30,
                         cwd=tmp_path, env=env)
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert out.stderr == "domas: --config is empty; give the TOML file, or leave --config out\n"
    assert not (tmp_path / ".local").exists()
