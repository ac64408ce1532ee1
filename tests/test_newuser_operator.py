"""A control-node operator's first hour, as a new user types it from the README and `--help`: a
configuration file in a directory whose name holds spaces and non-ASCII letters, `domas up
--config FILE --data-dir DIR`, the command the banner prints pasted back into a shell,
and the places it then uses.

Real processes (`python -m domas.cli`) on real files and free loopback ports; no mocks.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.common import stop_process, wait_until

PLAIN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("DOMAS_")}


LOOPBACK = """[controller]
listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
[agent]
metrics_listen = "127.0.0.1:0"
"""


@pytest.fixture
def up_with_data_dir(tmp_path):
    """`domas up --config domas.toml --data-dir "données du jour"` in a directory named with a space
    and accents; the configuration sets a data_dir of its own, which --data-dir replaces."""
    here = tmp_path / "site é 1"
    here.mkdir()
    (here / "domas.toml").write_text('data_dir = "from the file"\n' + LOOPBACK)
    log = open(tmp_path / "up.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "domas.cli", "up", "--config", "domas.toml",
                             "--data-dir", "données du jour"], cwd=here, env=PLAIN_ENV, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "Stop with Ctrl-C." in (tmp_path / "up.log").read_text(), 60, "domas up", proc=proc)
        yield here, (tmp_path / "up.log").read_text()
    finally:
        stop_process(proc, timeout=30)
        log.close()


def test_up_data_dir_moves_every_place_and_the_banner_command_pastes_into_a_shell(up_with_data_dir):
    """Was: --data-dir ('where tiers, catalogue and state live (default: the config's data_dir ...)')
    moved only the instance's domas.toml: tiers and state stayed under the file's data_dir. And the
    banner's `domas --config /path with spaces/domas.toml catalogue find`, pasted into a shell,
    was split at the spaces: 'invalid choice: ...', exit 2."""
    here, banner = up_with_data_dir
    moved = here / "données du jour"
    assert f"central copies     {moved / 'central'}" in banner, banner
    assert f"tape copies        {moved / 'tape'}" in banner, banner
    assert (moved / "state").is_dir() and (moved / "beamline").is_dir()
    assert not (here / "from the file").exists()
    command = next(line.split("catalogue   ", 1)[1].strip() for line in banner.splitlines()
                   if line.strip().startswith("catalogue "))
    out = subprocess.run(["sh", "-c", command.replace("domas ", f"{sys.executable} -m domas.cli ", 1)],
                         capture_output=True, text=True, timeout=60, cwd="/", env=PLAIN_ENV)
    assert out.returncode == 0 and "0 dataset(s)" in out.stderr, (command, out.stdout, out.stderr)


def test_relative_places_in_the_config_count_from_its_directory_even_upwards(tmp_path):
    """README: 'relative paths count from this file's directory'. Was: data_dir = "../data" made
    every tier '<etc>/../data/<tier>', refused as "storage.beamline ... contains '..'" (a key the
    file does not set); a relative tier (central = "../central") was refused as relative after a
    directory of that name had been made under the current directory."""
    (tmp_path / "site" / "etc").mkdir(parents=True)
    (tmp_path / "site" / "etc" / "domas.toml").write_text(
        'data_dir = "../data"\n[storage]\ncentral = "../central"\n' + LOOPBACK)
    run = tmp_path / "elsewhere" / "run"
    run.mkdir(parents=True)
    log = open(tmp_path / "up.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "domas.cli", "up", "--config", "../../site/etc/domas.toml"],
                            cwd=run, env=PLAIN_ENV, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "Stop with Ctrl-C." in (tmp_path / "up.log").read_text(), 60, "domas up", proc=proc)
    finally:
        stop_process(proc, timeout=30)
        log.close()
    banner = (tmp_path / "up.log").read_text()
    assert f"central copies     {tmp_path / 'site' / 'central'}\n" in banner, banner
    assert f"tape copies        {tmp_path / 'site' / 'data' / 'tape'}\n" in banner, banner
    assert (tmp_path / "site" / "data" / "state").is_dir()
    assert not (tmp_path / "elsewhere" / "central").exists()
