"""The Grafana dashboards against real metrics: every panel query answers from a real Prometheus.

A controller and two agents run as processes and copy a small tree, and a `domas up` (scrubber,
a bus source whose broker is down, the data service) runs beside them; Debian's `prometheus`
scrapes them every second (jobs "domas-controller", "domas-agent", "domas-up", "domas-http"); each
`expr` of each dashboard panel (the agent dashboard's $instance set to `.*`) must return a
non-empty result from /api/v1/query. A static check needs no Prometheus: every metric a dashboard
names is in a live scrape of the process that serves it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.fixtures.common import free_port, stop_process, up_config, wait_until
from tests.fixtures.controller import _agent, _cli, _controller, _env, _make_tree, _metric_names, _metrics

DASHBOARDS = Path(__file__).resolve().parent.parent / "controller" / "dashboards"
PROMETHEUS = shutil.which("prometheus")


def _panels(panels: list) -> list:
    """Panels, rows' nested panels included."""
    out = []
    for p in panels:
        out.append(p)
        out.extend(_panels(p.get("panels", [])))
    return out


UP_BOARDS = ("archive",)        # served by `domas up` (scrubber, bus source, data service)


def dashboard_exprs(boards: tuple[str, ...] | None = None) -> list[tuple[str, str, str]]:
    """(dashboard, panel title, expr with $instance -> .*) for every target of every panel."""
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        if boards is not None and path.stem not in boards:
            continue
        board = json.loads(path.read_text())
        for panel in _panels(board["panels"]):
            for target in panel.get("targets", []):
                found.append((path.stem, panel["title"], target["expr"].replace("$instance", ".*")))
    return found


def _variable_metrics() -> set[str]:
    names = set()
    for path in DASHBOARDS.glob("*.json"):
        for var in json.loads(path.read_text()).get("templating", {}).get("list", []):
            names |= set(re.findall(r"\bdomas_[a-z0-9_]+", var.get("query", "")))
    return names


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A controller and two agents with known metrics ports, after one finished transfer."""
    tmp = tmp_path_factory.mktemp("monitoring")
    env = _env(tmp, DOMAS_CONTROLLER_LEASE_SECONDS="3")
    port, ctl_metrics, agent_metrics = free_port(), free_port(), [free_port(), free_port()]
    procs = [_controller(tmp, port, ctl_metrics, env=env)]
    try:
        procs += [_agent(tmp, port, f"m{i}", streams=2, metrics_port=m, env=env) for i, m in enumerate(agent_metrics)]
        contents = _make_tree(tmp / "scan")
        out = _cli(tmp, "submit", str(tmp / "scan"), f"{tmp / 'dst'}/", "--beamline", "b1", "--chunk-size",
                   "64KiB", "--wait", "--json", "--controller", f"127.0.0.1:{port}", env=env)
        assert out.returncode == 0 and json.loads(out.stdout)["state"] == "done", out.stdout + out.stderr
        yield {"tmp": tmp, "controller": ctl_metrics, "agents": agent_metrics, "procs": procs,
               "files": len(contents), "bytes": sum(map(len, contents.values()))}
    finally:
        for p in reversed(procs):
            stop_process(p)


def test_every_metric_a_dashboard_names_is_exposed(cluster):
    wait_until(lambda: 'state="done"} 5.0' in _metrics(cluster["controller"]), 10, "the next controller tick")
    exposed = _metric_names(_metrics(cluster["controller"])) | _metric_names(_metrics(cluster["agents"][0]))
    wanted = {name for board, _, expr in dashboard_exprs() if board not in UP_BOARDS
              for name in re.findall(r"\bdomas_[a-z0-9_]+", expr)}
    wanted |= _variable_metrics()
    assert len(wanted) >= 10
    assert sorted(wanted - exposed) == []


@pytest.fixture(scope="module")
def up(cluster):
    """`domas up` with [source.amqp] pointing at a port where no broker listens: its controller
    metrics (scrubber, bus source) and its data service (/metrics), after a few requests."""
    tmp = cluster["tmp"] / "up"
    data, metrics, http = tmp / "domas-data", free_port(), free_port()
    tmp.mkdir()
    config = tmp / "domas.toml"
    config.write_text(up_config(data, metrics=metrics, http=http, extra=f"""[source.amqp]
url = "amqp://guest:guest@127.0.0.1:{free_port()}/"
"""))
    env = {**os.environ}
    env.pop("DOMAS_CONFIG", None)
    log = open(tmp / "up.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "domas.cli", "--config", str(config), "up", "--data-dir", str(data)],
                            stdout=log, stderr=log, cwd=tmp, env=env)
    try:
        wait_until(lambda: _get(f"http://127.0.0.1:{http}/healthz") is not None, 60, "domas up", proc)
        wait_until(lambda: _get(f"http://127.0.0.1:{metrics}/metrics") is not None, 30, "domas up metrics", proc)
        for path in ("/", "/api/v1/datasets", "/api/v1/datasets/CSTR:none.0"):      # 200s and a 404
            _get(f"http://127.0.0.1:{http}{path}")
        yield {"metrics": metrics, "http": http}
    finally:
        stop_process(proc, timeout=30)
        log.close()


def test_the_scrubber_bus_and_data_service_panels_name_metrics_domas_up_exposes(up):
    exposed = _metric_names(_metrics(up["metrics"])) | _metric_names(_metrics(up["http"]))
    wanted = {name for _, _, expr in dashboard_exprs(UP_BOARDS) for name in re.findall(r"\bdomas_[a-z0-9_]+", expr)}
    assert {n for n in wanted if n.startswith("domas_scrub_")} >= {"domas_scrub_bytes_total", "domas_scrub_files_total"}
    assert {"domas_archiver_bus_messages_total", "domas_dataservice_requests_total",
            "domas_dataservice_response_bytes_total", "domas_dataservice_request_seconds_bucket"} <= wanted
    assert sorted(wanted - exposed) == []


def _write_config(tmp: Path, controller: int, agents: list[int], up: dict | None = None) -> Path:
    cfg = tmp / "prometheus.yml"
    targets = ", ".join(f'"127.0.0.1:{p}"' for p in agents)
    cfg.write_text(f"""global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: domas-controller
    static_configs:
      - targets: ["127.0.0.1:{controller}"]
  - job_name: domas-agent
    static_configs:
      - targets: [{targets}]
""")
    if up:
        with cfg.open("a") as fh:
            fh.write(f"""  - job_name: domas-up
    static_configs:
      - targets: ["127.0.0.1:{up['metrics']}"]
  - job_name: domas-http
    static_configs:
      - targets: ["127.0.0.1:{up['http']}"]
""")
    return cfg


def _get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.read() if resp.status == 200 else None
    except OSError:
        return None


@pytest.fixture(scope="module")
def prometheus(cluster, up):
    """Debian's prometheus on a free loopback port scraping the cluster every second; its base URL."""
    if PROMETHEUS is None:
        if os.environ.get("CI") == "true":
            pytest.fail("prometheus is not installed (apt-get install prometheus)")
        pytest.skip("prometheus is not installed")
    tmp, port = cluster["tmp"], free_port()
    cfg = _write_config(tmp, cluster["controller"], cluster["agents"], up)
    log = open(tmp / "prometheus.log", "ab")
    proc = subprocess.Popen([PROMETHEUS, f"--config.file={cfg}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _get(f"{base}/-/ready") is not None, 60, "prometheus ready", proc)
        yield base
    finally:
        stop_process(proc)


def query(base: str, expr: str) -> list:
    body = _get(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    if body is None:
        return []
    doc = json.loads(body)
    assert doc["status"] == "success", doc
    return doc["data"]["result"]


def _value(base: str, expr: str) -> float:
    result = query(base, expr)
    return float(result[0]["value"][1]) if result else float("nan")


def test_every_dashboard_query_answers_from_prometheus(cluster, prometheus):
    up = 'count(up{job=~"domas-controller|domas-agent"} == 1)'
    wait_until(lambda: _value(prometheus, up) == 3, 30, "three targets up")
    exprs = dashboard_exprs()
    assert len(exprs) >= 15
    # rate() over [1m] needs two samples of each series: poll until every panel answers
    empty = lambda: [(board, title, e) for board, title, e in exprs if not query(prometheus, e)]  # noqa: E731
    try:
        wait_until(lambda: not empty(), 30, "every dashboard query answering")
    except TimeoutError:
        pass                                                # the assertion names the empty ones
    assert empty() == []
    agents = query(prometheus, 'count by (instance) (domas_agent_inflight_chunks{job="domas-agent"})')
    assert len(agents) == 2                                 # the $instance variable has both agents
    assert _value(prometheus, 'sum(domas_controller_queue_files{state="done",beamline="b1"})') == cluster["files"]
    assert _value(prometheus, 'sum(domas_agent_bytes_total{direction="write"})') >= cluster["bytes"]
    assert _value(prometheus, 'sum(domas_agent_chunks_total{result="ok"})') > 0
