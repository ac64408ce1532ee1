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


def domas(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "domas.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=60, cwd=cwd, env=PLAIN_ENV)


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
