"""A scientist's `domas get` typed carelessly: an empty PID or destination, a manifest that is
not text. Each must be one sentence and exit 2 before any request goes out, as `domas copy`
already does for an empty path. (Each failed on the code before 2026-11-30 03:20: a manifest that
is not UTF-8 was 'unexpected internal error', an empty PID asked for /api/v1/datasets/, an empty
destination downloaded into the current directory.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PLAIN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("DOMAS_")}
RAW = ("Traceback", "internal error", "UnicodeDecodeError", "connection", "Connection")
CLOSED = "http://127.0.0.1:9"      # nothing listens: a request that goes out is exit 7, not 2


def domas(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "domas.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=60, cwd=cwd, env=PLAIN_ENV)


def usage_sentence(out: subprocess.CompletedProcess) -> str:
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("domas: "), out.stderr
    assert not any(t in lines[0] for t in RAW), lines[0]
    assert out.returncode == 2, (out.returncode, out.stderr)
    return lines[0]


def test_a_manifest_that_is_not_text_is_one_sentence(tmp_path):
    (tmp_path / "scan.manifest").write_bytes(b"\xff\xfe\x00\x81 a spreadsheet, not a manifest")
    line = usage_sentence(domas("get", "--server", CLOSED, "--manifest", "scan.manifest", "dl", cwd=tmp_path))
    assert "scan.manifest" in line and "UTF-8" in line, line
    assert not (tmp_path / "dl").exists()


def test_an_empty_pid_is_a_usage_error(tmp_path):
    line = usage_sentence(domas("get", "--server", CLOSED, "", "dl", cwd=tmp_path))
    assert "empty" in line, line


@pytest.mark.parametrize("target", ["CSTR:17058.11.HEPS.BT0001.X", f"{CLOSED}/api/v1/datasets/P/files/a.h5/content"])
def test_an_empty_destination_is_a_usage_error(tmp_path, target):
    line = usage_sentence(domas("get", "--server", CLOSED, target, "", cwd=tmp_path))
    assert "empty" in line, line
