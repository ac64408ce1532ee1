"""Who may read the data service's /metrics: a private service keeps them from anonymous callers and
plain users; Prometheus scrapes with a scrape token (its `authorization` setting) or from an allowed
address; a real Prometheus scrapes a private service with the token and is refused without it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.parse

import httpx
import pytest

from domas.config import ControllerConfig
from domas.dataservice.access import ANONYMOUS, Caller, MetricsGuard, may_read_metrics
from domas.dataservice.app import create_app
from domas.dataservice.users import UserStore
from domas.errors import ConfigError
from tests.fixtures.common import free_port, stop_process, wait_until

SCRAPE = "scrape-secret-0123456789"
METRIC = "domas_dataservice_requests_total"


@pytest.mark.parametrize("caller,private,guarded,scraper,expected", [
    (ANONYMOUS, False, False, False, True),             # a public service with no guard: as before
    (ANONYMOUS, False, True, False, False),             # a guard closes it
    (ANONYMOUS, True, False, False, False),             # a private service: never anonymous
    (Caller("ada", "user"), True, True, False, False),  # nor plain users
    (Caller("ada", "user"), False, False, False, True),
    (Caller("op", "staff"), True, True, False, True),
    (Caller("root", "admin"), True, False, False, True),
    (ANONYMOUS, True, True, True, True),                # the scrape token or an allowed address
])
def test_the_metrics_policy_table(caller, private, guarded, scraper, expected):
    assert may_read_metrics(caller, private=private, guarded=guarded, scraper=scraper) is expected


def test_the_guard_reads_addresses_and_networks_and_names_a_wrong_entry():
    guard = MetricsGuard.of(ControllerConfig(http_metrics_allow=("10.0.0.0/8", "192.0.2.7", "::1")))
    assert [guard.allows_address(a) for a in ("10.1.2.3", "192.0.2.7", "192.0.2.8", "::1", "::ffff:10.0.0.1",
                                                "", None, "testclient")] == [True, True, False, True, True,
                                                                              False, False, False]
    with pytest.raises(ConfigError, match=r"controller.http_metrics_allow: 'prometheus.local' is not an address"):
        MetricsGuard.of(ControllerConfig(http_metrics_allow=("prometheus.local",)))


@pytest.fixture
def users(tmp_path):
    store = UserStore(tmp_path / "users.sqlite")
    store.add("Ada Lovelace")
    store.add("Operator", role="staff")
    yield store, {"user": store.issue_token("Ada Lovelace"), "staff": store.issue_token("Operator")}
    store.close()


def _metrics(base: str, token: str | None = None) -> httpx.Response:
    return httpx.get(base + "/metrics", headers={"Authorization": f"Bearer {token}"} if token else {})


def test_a_private_service_keeps_its_metrics_from_anonymous_callers_and_users(data_world, serve_app, users):
    store, tokens = users
    base = serve_app(create_app(data_world.catalogue, data_world.tiers, token="facility", users=store,
                                metrics_guard=MetricsGuard.parse(SCRAPE, ()), now=data_world.now))
    anonymous = _metrics(base)
    assert anonymous.status_code == 401 and METRIC not in anonymous.text
    assert "scrape token" in anonymous.json()["error"] and anonymous.json()["kind"]
    assert 'Bearer realm="domas data"' in anonymous.headers.get_list("www-authenticate")
    assert _metrics(base, tokens["user"]).status_code == 403
    assert _metrics(base, "wrong").status_code == 401
    for token in (SCRAPE, "facility", tokens["staff"]):
        r = _metrics(base, token)
        assert r.status_code == 200 and METRIC in r.text, token
    assert httpx.get(base + "/healthz").status_code == 200           # liveness stays open


def test_an_allowed_address_scrapes_without_a_token(data_world, serve_app):
    def service(allow: tuple[str, ...]) -> str:
        return serve_app(create_app(data_world.catalogue, data_world.tiers, token="facility",
                                    metrics_guard=MetricsGuard.parse("", allow), now=data_world.now))

    assert _metrics(service(("127.0.0.0/8",))).status_code == 200
    assert _metrics(service(("10.0.0.0/8",))).status_code == 401


def test_a_public_service_is_open_unless_a_guard_is_set(data_world, serve_app):
    open_base = serve_app(create_app(data_world.catalogue, data_world.tiers, now=data_world.now))
    assert _metrics(open_base).status_code == 200
    guarded = serve_app(create_app(data_world.catalogue, data_world.tiers, now=data_world.now,
                                   metrics_guard=MetricsGuard.parse(SCRAPE, ())))
    assert _metrics(guarded).status_code == 401 and _metrics(guarded, SCRAPE).status_code == 200


def _prometheus_up(base: str) -> dict[str, float]:
    try:
        r = httpx.get(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": "up"}), timeout=5)
    except httpx.HTTPError:
        return {}
    if r.status_code != 200:
        return {}
    return {s["metric"]["job"]: float(s["value"][1]) for s in r.json()["data"]["result"]}


def test_a_real_prometheus_scrapes_a_private_service_with_its_token(data_world, serve_app, tmp_path):
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        if os.environ.get("CI") == "true":
            pytest.fail("prometheus is not installed (apt-get install prometheus)")
        pytest.skip("prometheus is not installed")
    base = serve_app(create_app(data_world.catalogue, data_world.tiers, token="facility",
                                metrics_guard=MetricsGuard.parse(SCRAPE, ()), now=data_world.now))
    target = json.dumps([base.removeprefix("http://")])
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(f"""global: {{scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}}
scrape_configs:
  - job_name: with-token
    authorization: {{credentials: {SCRAPE}}}
    static_configs: [{{targets: {target}}}]
  - job_name: without-token
    static_configs: [{{targets: {target}}}]
""")
    port = free_port()
    with open(tmp_path / "prometheus.log", "ab") as log:
        proc = subprocess.Popen([prometheus, f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                 f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=log)
    try:
        up = f"http://127.0.0.1:{port}"
        wait_until(lambda: len(_prometheus_up(up)) == 2, 60, "prometheus to scrape both jobs once", proc)
        assert _prometheus_up(up) == {"with-token": 1.0, "without-token": 0.0}
    finally:
        stop_process(proc)
