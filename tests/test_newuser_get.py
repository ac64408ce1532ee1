"""A scientist's `domas get` typed carelessly: an empty PID or destination, a manifest that is
not text. Each must be one sentence and exit 2 before any request goes out, as `domas copy`
already does for an empty path.

These cases fail on the code of agent/cli_get.py (the lead's file, being changed for speed), so
they are marked xfail(strict=True) and reported to the lead: when cli_get.py says so in one
sentence, the mark turns into an XPASS failure and is to be removed.
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


@pytest.mark.xfail(strict=True, reason="lead (agent/cli_get.py): a manifest that is not UTF-8 is "
                                       "'unexpected internal error (UnicodeDecodeError)', exit 70")
def test_a_manifest_that_is_not_text_is_one_sentence(tmp_path):
    (tmp_path / "scan.manifest").write_bytes(b"\xff\xfe\x00\x81 a spreadsheet, not a manifest")
    line = usage_sentence(domas("get", "--server", CLOSED, "--manifest", "scan.manifest", "dl", cwd=tmp_path))
    assert "scan.manifest" in line and "UTF-8" in line, line
    assert not (tmp_path / "dl").exists()


@pytest.mark.xfail(strict=True, reason="lead (agent/cli_get.py): an empty PID asks the service for "
                                       "/api/v1/datasets/ (exit 7 here, a 404 sentence on a live service)")
def test_an_empty_pid_is_a_usage_error(tmp_path):
    line = usage_sentence(domas("get", "--server", CLOSED, "", "dl", cwd=tmp_path))
    assert "empty" in line, line


@pytest.mark.xfail(strict=True, reason="lead (agent/cli_get.py): an empty DEST downloads into the "
                                       "current directory ('domas copy a \"\"' is a usage error)")
@pytest.mark.parametrize("target", ["CSTR:17058.11.HEPS.BT0001.X", f"{CLOSED}/api/v1/datasets/P/files/a.h5/content"])
def test_an_empty_destination_is_a_usage_error(tmp_path, target):
    line = usage_sentence(domas("get", "--server", CLOSED, target, "", cwd=tmp_path))
    assert "empty" in line, line
