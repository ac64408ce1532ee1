"""The systemd units in deploy/systemd: valid for systemd (`systemd-analyze verify`, where it is
installed) and each ExecStart a command line `domas` accepts."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from domas.cli import build_parser

UNITS = Path(__file__).resolve().parent.parent / "deploy" / "systemd"


def _exec_start(unit: Path) -> list[str]:
    (line,) = [ln for ln in unit.read_text().splitlines() if ln.startswith("ExecStart=")]
    return shlex.split(line[len("ExecStart="):])


def test_every_part_has_a_unit_and_its_command_line_parses():
    names = sorted(p.name for p in UNITS.glob("*.service"))
    assert names == ["domas-agent@.service", "domas-archive.service", "domas-controller.service",
                     "domas-serve.service"]
    for unit in UNITS.glob("*.service"):
        argv = [a.replace("%i", "dtn01") for a in _exec_start(unit)]
        assert argv[0] == "/usr/local/bin/domas"       # where scripts/install links it
        args = build_parser().parse_args(argv[1:])
        assert args.handler and args.config == "/etc/domas/domas.toml", unit.name


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_accepts_the_units(tmp_path):
    domas = shutil.which("domas")
    assert domas, "domas is installed (pip install -e .)"
    paths = []
    for unit in UNITS.glob("*.service"):
        name = unit.name.replace("@.service", "@dtn01.service")      # verify an instance of the template
        (tmp_path / name).write_text(unit.read_text().replace("/usr/local/bin/domas", domas))
        paths.append(str(tmp_path / name))
    r = subprocess.run(["systemd-analyze", "verify", *paths], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), r.stdout + r.stderr
