"""Numbers a careless or hostile hand gives on the command line or in the configuration file:
huge, negative, out of range, not a number (nan, inf). Each is one sentence naming the flag
(exit 2) or the key (exit 78), before anything is called or written, never 'unexpected internal
error' (OverflowError, protobuf's ValueError 'Value out of range').

Real processes (`python -m domas.cli`); the controller named is a closed port, so a check that
comes too late shows as exit 69.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PLAIN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("DOMAS_")}
RAW = ("Traceback", "internal error", "ValueError", "OverflowError", "out of range")
HUGE = "9" * 400                      # float() of it is inf; int(inf) raised OverflowError


def domas(*args, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "domas.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=PLAIN_ENV)


def last_line(out: subprocess.CompletedProcess, code: int) -> str:
    lines = out.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("domas"), out.stderr
    assert not any(t in out.stderr for t in RAW), out.stderr
    assert out.returncode == code, (out.returncode, out.stderr)
    return lines[-1]


@pytest.fixture
def deployment(tmp_path):
    (tmp_path / "domas.toml").write_text('data_dir = "data"\n[agent]\ncontroller = "127.0.0.1:9"\n')
    (tmp_path / "a").write_bytes(b"x")
    return tmp_path


@pytest.mark.parametrize("priority", ["-99999999999999999999", "2147483648", "1001", "-1001"])
def test_a_priority_out_of_range_is_a_usage_error_before_the_controller_is_called(deployment, priority):
    """Was: 'unexpected internal error (ValueError)', exit 70, for a priority past int32, and exit
    69 (the call went out) for one past the controller's range; now argparse names the flag and
    its range, exit 2."""
    data = deployment / "data"
    out = domas("--config", "domas.toml", "submit", f"{data}/beamline", f"{data}/central/", "--priority", priority,
                cwd=deployment)
    line = last_line(out, 2)
    assert "--priority" in line and "between -1000 and 1000" in line, line


@pytest.mark.parametrize("args", [["copy", "a", "b"], ["get", "--server", "http://127.0.0.1:9", "P", "d"],
                                  ["submit", "/a", "/b"]])
def test_a_chunk_size_too_large_to_be_a_number_is_a_usage_error(deployment, args):
    """Was: 'unexpected internal error (OverflowError)', exit 70 (on submit: protobuf's ValueError)."""
    line = last_line(domas("--config", "domas.toml", *args, "--chunk-size", HUGE + "TiB", cwd=deployment), 2)
    assert line.startswith("domas: --chunk-size:") and "too large" in line, line


@pytest.mark.parametrize("args", [["copy", "a", "b"], ["get", "--server", "http://127.0.0.1:9", "P", "d"]])
@pytest.mark.parametrize("size", ["3TiB", "1k"])
def test_a_chunk_size_out_of_range_names_the_flag_not_the_config_key(deployment, args, size):
    """Was: 'copy.chunk_size: must be between 4KiB and 1GiB', exit 78, as if the file were wrong."""
    line = last_line(domas("--config", "domas.toml", *args, "--chunk-size", size, cwd=deployment), 2)
    assert line.startswith("domas: --chunk-size:") and "between 4KiB and 1GiB" in line, line


@pytest.mark.parametrize("setting, key", [
    (f'[policy]\nscrub_rate = "{HUGE}"', "policy.scrub_rate"),
    (f"[copy]\nchunk_size = {HUGE}", "copy.chunk_size"),
    ("[policy]\nstability_seconds = nan", "policy.stability_seconds"),
    ("[policy]\nstability_seconds = inf", "policy.stability_seconds"),
    ("[policy]\ncentral_retention = 1e400", "policy.central_retention"),
    (f'[policy]\nbeamline_retention = "{HUGE}d"', "policy.beamline_retention"),
    (f"[controller]\nlease_seconds = {HUGE}", "controller.lease_seconds"),
], ids=["huge-size", "huge-int-size", "nan", "inf", "1e400", "huge-duration", "huge-int-duration"])
def test_a_number_no_clock_or_disk_can_hold_in_the_config_names_the_key(tmp_path, setting, key):
    """Was: an OverflowError (exit 70) for a size, and for a duration nan or inf were taken: `domas up`
    started and printed 'taken after nan s without change' (nothing was ever taken)."""
    (tmp_path / "domas.toml").write_text(f'data_dir = "data"\n{setting}\n')
    line = last_line(domas("--config", "domas.toml", "up", cwd=tmp_path, timeout=30), 78)
    assert line.startswith(f"domas: {key}:"), line
