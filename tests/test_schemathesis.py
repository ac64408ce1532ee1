"""A bounded schemathesis run (`--checks all`) against the real data service, anonymous and with
a user's token, and against a private service (one with a facility token: anonymous callers are
refused) with no token, a user's token and the facility token: every check passes, or the test
prints schemathesis's report.

The service runs under uvicorn on a free loopback port over a real SQLite catalogue with files on
its tiers (tests/fixtures/dataservice.py), with a few more datasets so that search has pages.
Known PIDs and file paths are given to the fuzzer as dictionaries (70% of the time; random ones
the rest), so the data-returning routes answer 200 and stream real bytes, not only 404; search
cursors are opaque, so requests meant to be valid get real ones (tests/schemathesis_hooks.py).
DOMAS_SCHEMATHESIS_SEED and DOMAS_SCHEMATHESIS_EXAMPLES run a longer hunt with the same test.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from domas.catalogue import Dataset
from domas.dataservice.app import create_app
from domas.dataservice.users import UserStore

ROOT = Path(__file__).resolve().parent.parent
API = "/api/v1"
MAX_EXAMPLES = int(os.environ.get("DOMAS_SCHEMATHESIS_EXAMPLES", "15"))     # a longer hunt: raise both
SEED = int(os.environ.get("DOMAS_SCHEMATHESIS_SEED", "20261129"))


def _toml_list(values) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def _config(path: Path, pids, files) -> Path:
    path.write_text(f"""\
[dictionaries.pids]
values = {_toml_list(pids)}

[dictionaries.paths]
values = {_toml_list(files)}

[parameters]
"path.pid" = {{ dictionary = "pids", probability = 0.7 }}
"path.path" = {{ dictionary = "paths", probability = 0.7 }}
""", encoding="utf-8")
    return path


@pytest.fixture
def service(data_world, serve_app):
    return serve_app(create_app(data_world.catalogue, data_world.tiers, now=data_world.now)), data_world


FACILITY_TOKEN = "facility-s3cret"


@pytest.fixture
def fuzzed(request, data_world, serve_app, tmp_path):
    """The service with a user store (Grace Hopper: PI of the embargoed beamtime) and more datasets;
    "private": with a facility token, so anonymous callers are refused (401)."""
    for n, title in enumerate(("alpha scan", "beta scan", "gamma scan")):
        data_world.catalogue.upsert_dataset(Dataset(beamtime="2025-0042", path=f"/B1/202611/Data/2025-0042/run{n}",
                                                    metadata={"title": title}, created_at=1.7851e9 + n))
    store = UserStore(tmp_path / "users.sqlite")
    store.add("grace hopper")
    token = store.issue_token("grace hopper")
    facility = FACILITY_TOKEN if request.param == "private" else ""
    base = serve_app(create_app(data_world.catalogue, data_world.tiers, token=facility, users=store,
                                now=data_world.now))
    yield base, data_world, {"anonymous": "", "token": token, "facility": facility}
    store.close()


def _cursors(base: str, headers: dict[str, str]) -> dict[str, str]:
    """A real cursor of each sort order (none when the caller may not search: a private service's
    anonymous caller gets 401 whatever the cursor)."""
    found = {}
    for sort in ("newest", "title"):
        r = httpx.get(f"{base}{API}/datasets", params={"sort": sort, "limit": 1}, headers=headers)
        if r.status_code == 401:
            return {}
        assert r.json()["next"], r.text
        found[sort] = r.json()["next"]
    return found


def run_schemathesis(base: str, config: Path, headers: dict[str, str]) -> subprocess.CompletedProcess:
    workdir = config.parent                  # schemathesis keeps its example database in the working directory
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks", "PYTHONPATH": str(ROOT),
           "DOMAS_ST_CURSORS": json.dumps(_cursors(base, headers)), "NO_COLOR": "1"}
    cmd = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run", f"{base}/openapi.json",
           "--checks", "all", "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED), "--workers", "1",
           "--request-timeout", "10", "--no-color"]
    for name, value in headers.items():
        cmd += ["--header", f"{name}: {value}"]
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=240)


@pytest.mark.slow
@pytest.mark.parametrize("fuzzed,who", [("open", "anonymous"), ("open", "token"), ("private", "anonymous"),
                                        ("private", "token"), ("private", "facility")], indirect=["fuzzed"])
def test_schemathesis_checks_all_find_nothing(fuzzed, tmp_path, who):
    base, world, tokens = fuzzed
    files = sorted(world.data) + ["secret.h5"]
    config = _config(tmp_path / "schemathesis.toml", sorted(world.pids.values()), files)
    headers = {"Authorization": f"Bearer {tokens[who]}"} if tokens[who] else {}
    done = run_schemathesis(base, config, headers)
    assert done.returncode == 0, done.stdout[-12000:] + done.stderr[-3000:]
    assert "Tested: 12" in done.stdout and not re.search(r"\d+ failed", done.stdout), done.stdout[-3000:]
    if headers or not tokens["facility"]:
        assert "No issues found" in done.stdout, done.stdout[-3000:]
    else:                    # a private service refuses anonymous callers everywhere but /healthz
        assert "Authentication failed: 10 operations returned only 401/403" in done.stdout, done.stdout[-3000:]


# -- what the runs above found, each pinned -------------------------------------------------------

def _spec(base: str) -> dict:
    return httpx.get(f"{base}/openapi.json").json()


def _param(spec: dict, path: str, name: str) -> dict:
    return next(p for p in spec["paths"][path]["get"]["parameters"] if p["name"] == name)


def test_openapi_says_a_token_is_optional_unless_the_service_has_a_facility_token(data_world, serve_app):
    """The document declared Bearer as required on a service that serves anonymous callers (ST401)."""
    open_base = serve_app(create_app(data_world.catalogue, data_world.tiers, now=data_world.now))
    guarded = serve_app(create_app(data_world.catalogue, data_world.tiers, token="s3cret", now=data_world.now))
    for base, anonymous in ((open_base, True), (guarded, False)):
        spec = _spec(base)
        assert spec["components"]["securitySchemes"]["HTTPBasic"]["scheme"] == "basic"
        ops = [op for path, ops in spec["paths"].items() if path.startswith(API) for op in ops.values()]
        assert ops and all(({} in op["security"]) == anonymous for op in ops)
        assert all({"HTTPBearer": []} in op["security"] and {"HTTPBasic": []} in op["security"] for op in ops)
        status = httpx.get(f"{base}{API}/datasets").status_code
        assert status == (200 if anonymous else 401)


def test_a_year_out_of_the_calendar_is_400_and_9999_is_searched(service):
    """year=0000 was a 500 (datetime has no year 0) and so was 9999 (its end is year 10000)."""
    base, world = service
    for year, status in (("0000", 400), ("9999", 200), ("0001", 200), ("²⁰²⁵", 400), ("٢٠٢٥", 400)):
        r = httpx.get(f"{base}{API}/datasets", params={"year": year})
        assert r.status_code == status, (year, r.text)
        assert httpx.get(f"{base}/", params={"year": year}).status_code == status, year      # the portal too
    assert httpx.get(f"{base}{API}/datasets", params={"year": "2026"}).json()["total"] == 1


def test_search_choices_are_declared_and_taken_exactly_as_declared(service):
    """sort, access and year were plain strings in the document while the service refused most
    strings (ST202), and took 'OPEN' or '' where the document now lists open and embargoed."""
    base, _ = service
    spec = _spec(base)
    assert _param(spec, f"{API}/datasets", "sort")["schema"]["enum"] == ["newest", "title"]
    assert _param(spec, f"{API}/datasets", "access")["schema"]["enum"] == ["open", "embargoed"]
    year = re.compile(_param(spec, f"{API}/datasets", "year")["schema"]["pattern"])
    assert year.search("2025") and not year.search("0000") and not year.search("25")
    for name in ("from", "to"):
        kinds = _param(spec, f"{API}/datasets", name)["schema"]["anyOf"]
        assert {k.get("format") for k in kinds} == {None, "date", "date-time"}
    for params in ({"access": "open"}, {"access": "embargoed"}, {"sort": "title"}, {"from": "2026-01-01T00:00:00.5Z"},
                   {"to": "1790000000.5"}, {"from": ""}):
        assert httpx.get(f"{base}{API}/datasets", params=params).status_code == 200, params
    for params in ({"access": "OPEN"}, {"access": ""}, {"sort": ""}, {"sort": "size"}, {"from": "1e12"}):
        r = httpx.get(f"{base}{API}/datasets", params=params)
        assert r.status_code == 400 and r.json()["kind"] == "usage", params


def test_the_file_path_pattern_is_what_the_service_serves(service):
    """{path} was any string in the document, but a backslash, NUL, '.' or '..' part is refused
    with 400 (ST202 in a stateful run): the pattern now says so, and agrees with the service."""
    base, world = service
    pid = world.pids["open"]
    spec = _spec(base)
    route = f"{API}/datasets/{{pid}}/files/{{path}}"
    pattern = re.compile(_param(spec, route, "path")["schema"]["pattern"])
    assert _param(spec, route + "/content", "path")["schema"]["pattern"] == pattern.pattern
    for path, served in (("big.bin", True), ("sub/scan ü 1.h5", True), ("a\\b", False), ("./big.bin", False),
                         ("sub/../big.bin", False), ("sub//x", False), ("..x/.y", True), ("a\nb", True)):
        assert bool(pattern.search(path)) == served, path
        sent = quote(path).replace(".", "%2E")          # as sent: httpx would drop a './' part itself
        status = httpx.get(f"{base}{API}/datasets/{quote(pid, safe=':')}/files/{sent}").status_code
        assert status == (400 if not served else 200 if path in world.data else 404), (path, status)
