"""The README's first walkthrough, as a new user types it: `domas up` with no argument in an empty
directory, then, "in another terminal, in the same directory", every command the README shows next
(catalogue find/show, user add/token/revoke with the API, domas get by PID and by a portal
manifest) WITHOUT --config: they must find the running instance through ./domas-data/domas.toml.

Only what the README leaves to the machine differs: free ports and a 1 s stability window come
from DOMAS_* variables given to `domas up` alone (the README's "overridden by DOMAS_<SECTION>_<KEY>
variables"); the later commands run with no DOMAS_* variable at all, as a second terminal would.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import h5py
import httpx
import pytest

from tests.fixtures.common import stop_process, wait_until

RAW = "domas-data/beamline/B1/202611/Data/BT0001/raw"
PLAIN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("DOMAS_")}


def domas(*args, cwd: Path) -> subprocess.CompletedProcess:
    """A command typed in the second terminal: no --config, no DOMAS_* variable."""
    return subprocess.run([sys.executable, "-m", "domas.cli", *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd, env=PLAIN_ENV)


def write_scan(path: Path) -> None:
    """The README's NeXus file, line for line."""
    with h5py.File(path, "w") as f:
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry["title"], entry["start_time"] = "Ni foil XAS scan", "2026-11-28T17:00:00"
        for group, cls, name in (("sample", "NXsample", "Ni foil"), ("instrument", "NXinstrument", "B1 XAS")):
            entry.create_group(group).attrs["NX_class"] = cls
            entry[group]["name"] = name
        entry["data"] = list(range(2126))


@pytest.fixture
def up_here(tmp_path):
    env = {**PLAIN_ENV, "DOMAS_CONTROLLER_LISTEN": "127.0.0.1:0", "DOMAS_CONTROLLER_METRICS_LISTEN": "127.0.0.1:0",
           "DOMAS_CONTROLLER_HTTP_LISTEN": "127.0.0.1:0", "DOMAS_AGENT_METRICS_LISTEN": "127.0.0.1:0",
           "DOMAS_POLICY_STABILITY_SECONDS": "1"}
    log = open(tmp_path / "up.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "domas.cli", "up"], cwd=tmp_path, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "Stop with Ctrl-C." in (tmp_path / "up.log").read_text(), 60, "domas up", proc=proc)
        yield tmp_path, proc
    finally:
        stop_process(proc, timeout=30)
        log.close()


def test_the_first_walkthrough_from_an_empty_directory(up_here):
    here, proc = up_here
    banner = (here / "up.log").read_text()
    assert "domas is up." in banner and f"{here}/domas-data/central" in banner
    served = tomllib.loads((here / "domas-data" / "domas.toml").read_text())["controller"]["http_listen"]
    portal = re.search(r"portal and API\s+(http://\S+)/", banner).group(1)
    assert portal == f"http://{served}"

    write_scan(here / "scan_0001.h5")
    (here / RAW).mkdir(parents=True)
    (here / RAW / "scan_0001.h5").write_bytes((here / "scan_0001.h5").read_bytes())

    def archived() -> str | None:
        found = domas("catalogue", "find", cwd=here)
        pid = found.stdout.split("\t", 1)[0] if found.returncode == 0 and found.stdout else None
        shown = domas("catalogue", "show", pid, cwd=here).stdout if pid else ""
        return pid if "beamline:verified,central:verified,tape:verified" in shown else None

    wait_until(lambda: archived() is not None, 90, "catalogued, on central and on tape", proc=proc)
    pid = archived()
    assert pid.startswith("CSTR:17058.11.HEPS.BT0001.")              # `domas catalogue find | cut -f1`
    shown = domas("catalogue", "show", pid, cwd=here)
    assert shown.returncode == 0
    for line in ("title: Ni foil XAS scan", "sample: {'name': 'Ni foil'}", "instrument: {'name': 'B1 XAS'}",
                 "format: nexus", "start_time: 2026-11-28T17:00:00"):
        assert line in shown.stdout, shown.stdout

    # People and tokens, run "where domas serve runs": the running service honours them at once.
    assert domas("user", "add", "Ada Lovelace", cwd=here).returncode == 0
    token = domas("user", "token", "Ada Lovelace", cwd=here).stdout.strip()
    query = f"{portal}/api/v1/datasets?q=lysozyme&pi=ada+lovelace&limit=10"
    r = httpx.get(query, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and r.json()["datasets"] == []
    assert domas("user", "revoke", "Ada Lovelace", cwd=here).returncode == 0
    assert httpx.get(query, headers={"Authorization": f"Bearer {token}"}).status_code == 401

    # Downloads: by PID, then the files a portal manifest lists.
    got = domas("get", "--server", portal, pid, "./dl", cwd=here)
    assert got.returncode == 0, got.stderr
    assert "1 downloaded (1 verified, 0 unverified)" in got.stdout + got.stderr
    assert (here / "dl" / "scan_0001.h5").read_bytes() == (here / "scan_0001.h5").read_bytes()
    manifest = httpx.get(f"{portal}/datasets/{pid}/manifest", params={"path": "scan_0001.h5"})
    assert manifest.status_code == 200
    (here / f"{pid}.manifest").write_bytes(manifest.content)
    sel = domas("get", "--manifest", f"{pid}.manifest", "./selected", cwd=here)
    assert sel.returncode == 0, sel.stderr
    assert (here / "selected" / "scan_0001.h5").read_bytes() == (here / "scan_0001.h5").read_bytes()

    # "Stop with Ctrl-C."
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) in (0, 130)
