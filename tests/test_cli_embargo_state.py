"""An embargo whose end has passed reads `released` on the command line as it does in the data
service (README: "When the end date passes it is open to everyone with no action, and its state
reads `released`"). Was: `domas catalogue find` and `show` (table, plain lines and --json) said
`embargoed` for as long as nobody ran `release`, while /api/v1/datasets/PID said `released`; and
`domas catalogue embargo PID --until <a past date>` answered 'embargoed until ...' for a dataset
it had just left open to everyone.

Real processes on the embedded catalogue; the pure rule is catalogue.base.public_state, which the
data service's access policy uses too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from domas.catalogue import Dataset, open_catalogue
from domas.catalogue.base import public_state
from domas.config import CatalogueConfig

PAST, FUTURE = "2020-01-01", "2999-01-01"


def domas(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("DOMAS_")}, "DOMAS_STATE_DIR": str(cwd / "state")}
    return subprocess.run([sys.executable, "-m", "domas.cli", *args], capture_output=True, text=True, timeout=60,
                          cwd=cwd, env=env)


@pytest.fixture
def pid(tmp_path):
    with open_catalogue(CatalogueConfig(), tmp_path / "state") as cat:
        return cat.upsert_dataset(Dataset("BT1", "/B1/202611/Data/BT1/raw", data_type="raw")).pid


def test_an_embargo_set_to_a_past_date_says_released_everywhere(tmp_path, pid):
    out = domas("catalogue", "embargo", pid, "--until", PAST, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"{pid}  released: the embargo's end {PAST} 00:00 UTC has passed"
    assert domas("catalogue", "find", cwd=tmp_path).stdout.split("\t")[3] == "released"
    assert json.loads(domas("catalogue", "find", "--json", cwd=tmp_path).stdout)[0]["state"] == "released"
    assert json.loads(domas("catalogue", "show", pid, "--json", cwd=tmp_path).stdout)["dataset"]["state"] == "released"


def test_an_embargo_still_running_reads_embargoed(tmp_path, pid):
    out = domas("catalogue", "embargo", pid, "--until", FUTURE, cwd=tmp_path)
    assert out.stdout.strip() == f"{pid}  embargoed until {FUTURE} 00:00 UTC"
    assert domas("catalogue", "find", cwd=tmp_path).stdout.split("\t")[3] == "embargoed"


@pytest.mark.parametrize("state, end, now, read", [
    ("embargoed", 100.0, 99.0, "embargoed"), ("embargoed", 100.0, 100.0, "released"), ("open", None, 5.0, "open"),
    ("embargoed", None, 5.0, "embargoed"), ("released", None, 5.0, "released"), ("deleted", 100.0, 5.0, "deleted")])
def test_public_state_table(state, end, now, read):
    assert public_state(state, end, now) == read
