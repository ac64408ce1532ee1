"""A failure the service did not foresee, under a real `domas serve`: a dataset record in the
catalogue file corrupted while the service runs. Every 5xx has the shape of the service's other
errors (JSON {"error", "kind"} under /api, the portal's page elsewhere), names no server path and
no exception text, and the server's log holds each failure once, with its traceback."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from urllib.parse import quote

import httpx
import pytest

from tests.fixtures.common import free_port, stop_process, wait_until
from tests.fixtures.dataservice import build_world

API = "/api/v1"


@pytest.fixture
def served(tmp_path):
    """`domas serve` (a process, its log in a file) over a world's catalogue: (base, world, log path)."""
    world = build_world(tmp_path / "world")
    world.catalogue.close()
    port = free_port()
    tiers = "\n".join(f'{name} = "{root}"' for name, root in world.tiers.items())
    config = tmp_path / "domas.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\n[catalogue]\nurl = "sqlite://{world.root}/catalogue.sqlite"\n'
                      f'[storage]\n{tiers}\n[controller]\nhttp_listen = "127.0.0.1:{port}"\n')
    log_path = tmp_path / "serve.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "domas.cli", "--config", str(config), "serve"],
                                stdout=log, stderr=log, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(base + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, 30, "domas serve", proc)
        yield base, world, log_path
    finally:
        stop_process(proc)


def test_a_corrupt_record_is_a_json_500_logged_once_with_its_traceback(served):
    base, world, log_path = served
    pid = world.pids["open"]
    assert httpx.get(f"{base}{API}/datasets").status_code == 200
    with sqlite3.connect(world.root / "catalogue.sqlite") as db:     # another writer breaks a record
        db.execute("UPDATE datasets SET metadata = '{not json' WHERE pid = ?", (pid,))
    api = [httpx.get(f"{base}{API}/datasets"), httpx.get(f"{base}{API}/datasets/{quote(pid, safe=':')}"),
           httpx.get(f"{base}{API}/datasets", params={"q": "lysozyme"})]
    page = httpx.get(f"{base}/datasets/{quote(pid, safe=':')}")
    head = httpx.head(f"{base}{API}/datasets")
    for r in api:
        assert r.status_code == 500 and r.headers["content-type"] == "application/json", r.text
        assert r.json() == {"error": "the service failed to answer this request; try again later (the service's "
                                     "log says why)", "kind": "error"}
    assert page.status_code == 500 and "Something went wrong" in page.text and "<html" in page.text
    assert head.status_code == 500 and head.content == b"" and "try again later" in head.headers["x-domas-error"]
    for r in (*api, page, head):
        shown = r.text + str(r.headers)
        assert str(world.root) not in shown and "JSONDecodeError" not in shown and "Expecting" not in shown
        assert "Internal Server Error" not in shown
    failed = len(api) + 2
    log = log_path.read_text()
    assert log.count("Traceback (most recent call last)") == failed, log
    assert log.count("json.decoder.JSONDecodeError") == failed
    assert f"GET {API}/datasets failed" in log and "Exception in ASGI application" not in log
    assert httpx.get(base + "/healthz").status_code == 200                # the service goes on
