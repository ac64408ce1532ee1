"""The web portal on a real port: login and session cookie, search with facets, the dataset page
(people, metadata table, folder tree, selection), manifests and `domas get --manifest`."""

from __future__ import annotations

import re
import subprocess
import sys
from html import unescape

import httpx
import pytest

from domas.catalogue import Beamtime, Dataset
from domas.dataservice import portal
from domas.dataservice.app import create_app
from domas.dataservice.users import UserStore
from tests.fixtures.dataservice import TITLE, portal_login, portal_logout


def test_login_form_sets_a_session_cookie_that_opens_the_portal(private_service):
    base, world, token = private_service
    with httpx.Client(base_url=base) as browser:
        r = browser.get("/")
        assert r.status_code == 401 and 'href="/login"' in r.text and 'form class="login"' in r.text
        assert r.headers.get_list("www-authenticate") == ['Bearer realm="domas data"']
        form = browser.get("/login")
        assert form.status_code == 200 and 'type="password" name="token"' in form.text
        bad = portal_login(browser, "domas_wrong")
        assert bad.status_code == 401 and "not valid" in bad.text and "domas_session" not in bad.headers.get(
            "set-cookie", "")
        r = portal_login(browser, token)
        assert r.status_code == 303 and r.headers["location"] == "/"
        cookie = r.headers["set-cookie"]
        assert "domas_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
        page = browser.get("/")
        assert page.status_code == 200 and "Grace Hopper" in page.text and "Log out" in page.text
        assert world.pids["embargoed"] in page.text                   # her team's dataset, under embargo
        assert browser.get(f"/datasets/{world.pids['embargoed']}").status_code == 200
        assert portal_logout(browser).status_code == 303
        assert browser.get("/").status_code == 401                     # the session is gone


def test_search_box_dates_and_facets(service_open):
    base, world = service_open
    r = httpx.get(base + "/", params={"q": "lysozyme"})
    assert r.status_code == 200 and world.pids["open"] in r.text and "1 dataset" in r.text
    assert 'name="q" value="lysozyme"' in r.text and 'type="date" name="from"' in r.text
    facets = r.text.split('class="facets"')[1].split("</aside>")[0]
    assert "Beamline" in facets and '>B1</a> <span>1</span></li>' in facets
    assert '>open</a> <span>1</span></li>' in facets
    r = httpx.get(base + "/", params={"from": "2026-09-22"})
    assert "No dataset matches" in r.text and "0 datasets" in r.text


def _facet_links(html: str, name: str) -> dict[str, str]:
    facets = html.split('class="facets"')[1].split("</aside>")[0]
    return {text: href.replace("&amp;", "&") for href, text in
            re.findall(r'<a href="([^"]+)" data-facet="' + name + r'">([^<]+)</a>', facets)}


def _titles(html: str) -> list[str]:
    return [unescape(t) for t in re.findall(r'<tr><td><a href="/datasets/[^"]+">([^<]+)</a>', html)]


def test_facet_links_filter_the_search_and_active_filters_come_off(service_open):
    base, world = service_open
    cat = world.catalogue
    cat.upsert_beamtime(Beamtime("2024-0007", "B2", "P-42", "Ada Lovelace", start=1.71e9, end=1.711e9))
    cat.upsert_dataset(Dataset("2024-0007", "/B2/2024/Data/2024-0007/proc", data_type="processed",
                               metadata={"title": "alpha processed"}, created_at=1.7105e9))
    cat.upsert_dataset(Dataset("2025-0042", "/B1/202611/Data/2025-0042/proc", data_type="processed",
                               metadata={"title": "Zeta processed"}, created_at=1.7855e9))
    with httpx.Client(base_url=base) as browser:
        page = browser.get("/", params={"q": "processed"})
        assert "2 datasets" in page.text
        link = _facet_links(page.text, "beamline")["B2"]
        assert link == "/?q=processed&beamline=B2"
        narrowed = browser.get(link)
        assert "1 dataset" in narrowed.text and _titles(narrowed.text) == ["alpha processed"]
        active = narrowed.text.split('class="active"')[1].split("</ul>")[0]
        assert "Beamline: B2" in active and 'href="/?q=processed" class="remove"' in active
        assert '<input type="hidden" name="beamline" value="B2">' in narrowed.text   # kept by a new search
        assert '<li class="chosen" aria-current="true">B2 <span>1</span></li>' in narrowed.text
        both = _facet_links(narrowed.text, "year")["2024"]
        assert both == "/?q=processed&beamline=B2&year=2024" and "1 dataset" in browser.get(both).text
        assert "2 datasets" in browser.get("/?q=processed").text                   # removed: back to both
        assert _titles(browser.get("/", params={"data_type": "processed", "access": "open"}).text) == \
            ["Zeta processed", "alpha processed"]                                      # newest first
        by_title = browser.get("/", params={"sort": "title"}).text
        assert _titles(by_title) == [TITLE, "alpha processed", "Zeta processed"]     # "<script>…" sorts first
        assert '<option value="title" selected>' in by_title
        assert _facet_links(by_title, "data_type")["processed"] == "/?sort=title&data_type=processed"
        assert browser.get("/", params={"year": "24"}).status_code == 400
    api = httpx.get(base + "/api/v1/datasets", params={"beamline": "b2"}).json()
    assert api["total"] == 1 and api["datasets"][0]["title"] == "alpha processed"
    assert httpx.get(base + "/api/v1/datasets", params={"year": "2026", "data_type": "processed"}).json()["total"] == 1
    assert httpx.get(base + "/api/v1/datasets", params={"access": "embargoed"}).json()["total"] == 0   # anonymous
    seen, cursor = [], None
    while True:
        page = {"sort": "title", "limit": 1, **({"cursor": cursor} if cursor else {})}
        r = httpx.get(base + "/api/v1/datasets", params=page)
        assert r.status_code == 200, r.text
        seen += [d["title"] for d in r.json()["datasets"]]
        if not (cursor := r.json()["next"]):
            break
    assert seen == [TITLE, "alpha processed", "Zeta processed"]
    bad = httpx.get(base + "/api/v1/datasets", params={"access": "secret"})
    assert bad.status_code == 400 and "access: use open or embargoed" in bad.text


def test_dataset_page_shows_people_metadata_table_and_a_folder_tree(service_open):
    base, world = service_open
    world.catalogue.upsert_dataset(Dataset(beamtime="2025-0042", path="/B1/202611/Data/2025-0042/raw",
                                           metadata={"sample": {"name": "hen egg", "temperature": 100}}))
    r = httpx.get(f"{base}/datasets/{world.pids['open']}")
    assert r.status_code == 200
    assert "P-42: Protein crystals" in r.text and "Ada Lovelace, Grace Hopper" in r.text and "(B1)" in r.text
    assert "<th>sample.name</th><td>hen egg</td>" in r.text and "<th>sample.temperature</th><td>100</td>" in r.text
    assert "<summary>raw JSON</summary>" in r.text
    assert re.search(r"<details open><summary>sub/ <span class=\"count\">\(1 file\)</span>", r.text)
    assert 'type="checkbox" name="path" value="sub/scan ü 1.h5"' in r.text
    assert f'action="/datasets/{world.pids["open"]}/manifest"' in r.text
    assert 'class="scroll"' in r.text and "@media (max-width: 700px)" in httpx.get(f"{base}/assets/style.css").text


def test_dataset_page_and_api_show_the_scan_records_of_a_dataset(service_open):
    """Runs are catalogue records of their own (not dataset metadata); the page's metadata table
    and the API's metadata still show them under "scans", and a run's sample finds the dataset."""
    from domas.catalogue.base import Scan

    base, world = service_open
    pid = world.pids["open"]
    world.catalogue.upsert_scans([Scan("run-7f3a", pid, scan_id=12, plan_name="rel_scan", sample="ferritin cage",
                                       start_time=1_795_000_000.0, exit_status="success",
                                       num_events={"primary": 41})])
    assert "scans" not in world.catalogue.get_dataset(pid).metadata
    page = httpx.get(f"{base}/datasets/{pid}").text
    assert "<th>scans.run-7f3a.plan_name</th><td>rel_scan</td>" in page
    assert "<th>scans.run-7f3a.num_events.primary</th><td>41</td>" in page
    assert "<th>scans.run-7f3a.start_time</th><td>2026-11-18T11:06:40.000+00:00</td>" in page
    api = httpx.get(f"{base}/api/v1/datasets/{pid}").json()
    assert api["metadata"]["scans"]["run-7f3a"]["exit_status"] == "success"
    assert pid in httpx.get(base + "/", params={"q": "ferritin"}).text


def test_titles_fall_back_to_something_readable():
    assert portal.title_of(Dataset("bt", "/B1/2025-0042/raw")) == "2025-0042/raw"
    assert portal.title_of(Dataset("bt", "/B1/x/raw", metadata={"sample": {"name": "Lysozyme"}})) == "Lysozyme"
    assert portal.title_of(Dataset("bt", "/B1/x/raw", metadata={"title": "Run 7"})) == "Run 7"


def test_selected_files_make_a_manifest_that_domas_get_downloads(service_open, tmp_path, monkeypatch):
    base, world = service_open
    pid = world.pids["open"]
    r = httpx.get(f"{base}/datasets/{pid}/manifest", params=[("path", "big.bin"), ("path", "sub/scan ü 1.h5")])
    assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
    urls = [line for line in r.text.splitlines() if not line.startswith("#")]
    assert len(urls) == 2 and all(u.startswith(base + "/api/v1/datasets/") for u in urls)
    every = httpx.get(f"{base}/datasets/{pid}/manifest").text
    assert len([line for line in every.splitlines() if not line.startswith("#")]) == len(world.data)
    assert httpx.get(f"{base}/datasets/{pid}/manifest", params={"path": "../x"}).status_code == 400
    manifest = tmp_path / "chosen.manifest"
    manifest.write_text(r.text)
    monkeypatch.setenv("DOMAS_STATE_DIR", str(tmp_path / "state"))
    done = subprocess.run([sys.executable, "-m", "domas.cli", "get", "-q", "--manifest", str(manifest),
                           str(tmp_path / "dest")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "dest" / "big.bin").read_bytes() == world.data["big.bin"]
    assert (tmp_path / "dest" / "sub" / "scan ü 1.h5").read_bytes() == world.data["sub/scan ü 1.h5"]
    assert not (tmp_path / "dest" / "empty.dat").exists()
    bad = tmp_path / "bad.manifest"
    bad.write_text("not a url\n")
    r = subprocess.run([sys.executable, "-m", "domas.cli", "get", "--manifest", str(bad), str(tmp_path / "d2")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "not an http(s) URL" in r.stderr and "Traceback" not in r.stderr


def test_a_manifest_of_a_file_the_dataset_does_not_have_is_404(service_open):
    """The README's manifest example named a file its dataset did not have, and the service wrote a
    manifest with its URL anyway: the download failed later, with no hint at the manifest."""
    base, world = service_open
    pid = world.pids["open"]
    r = httpx.get(f"{base}/datasets/{pid}/manifest", params=[("path", "big.bin"), ("path", "scan1.h5")])
    assert r.status_code == 404 and "has no file scan1.h5" in r.text and "big.bin" not in r.text


@pytest.fixture
def service_open(data_world, serve_app):
    return serve_app(create_app(data_world.catalogue, data_world.tiers, now=data_world.now)), data_world


def _serve(env: dict, port: int) -> subprocess.Popen:
    from tests.fixtures.common import wait_until

    proc = subprocess.Popen([sys.executable, "-m", "domas.cli", "serve", "--listen", f"127.0.0.1:{port}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def ready() -> bool:
        assert proc.poll() is None, proc.stderr.read()
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, timeout=30, what="domas serve")
    return proc


def test_a_portal_login_survives_a_restart_of_the_service_and_logout_ends_it(data_world, tmp_path):
    import os
    import sqlite3

    from tests.fixtures.common import free_port, stop_process

    state = tmp_path / "state"
    store = UserStore.in_state_dir(state)
    store.add("Grace Hopper")
    token = store.issue_token("Grace Hopper")
    store.close()
    env = {**os.environ, "DOMAS_STATE_DIR": str(state), "DOMAS_TOKEN": "facility",
           "DOMAS_CATALOGUE_URL": f"sqlite://{data_world.catalogue.path}",
           **{f"DOMAS_STORAGE_{tier.upper()}": root for tier, root in data_world.tiers.items()}}
    env.pop("DOMAS_CONFIG", None)
    port = free_port()
    proc = _serve(env, port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as browser:
            assert portal_login(browser, token).status_code == 303
            sid = browser.cookies["domas_session"]
            assert "Grace Hopper" in browser.get("/").text
            stop_process(proc)
            proc = _serve(env, port)                                       # a new process: same session
            page = browser.get("/")
            assert page.status_code == 200 and "Grace Hopper" in page.text
            assert data_world.pids["embargoed"] in page.text                # still her team's view
            with sqlite3.connect(state / "users.sqlite") as db:                # only a hash is stored
                assert sid not in repr(db.execute("SELECT * FROM sessions").fetchall())
            assert portal_logout(browser).status_code == 303
            assert browser.get("/").status_code == 401
            stale = httpx.get(f"http://127.0.0.1:{port}/", cookies={"domas_session": sid})
            assert stale.status_code == 401                                   # the old cookie is dead too
    finally:
        stop_process(proc)


def test_sessions_expire_and_end_when_the_token_is_revoked(tmp_path):
    from domas.dataservice.access import Caller

    store = UserStore(tmp_path / "users.sqlite")
    store.add("Ada")
    sid = store.open_session(Caller("Ada", "user"), expires_at=1000.0, now=900.0)
    assert store.session_caller(sid, 999.0) == Caller("Ada", "user")
    assert store.session_caller(sid, 1000.0) is None                          # expired
    assert store.session_caller("s_" + "x" * 43, 900.0) is None and store.session_caller("", 900.0) is None
    other = store.open_session(Caller("Ada", "user"), expires_at=5000.0, now=1001.0)   # purges the expired one
    assert store._db.execute("SELECT count(*) FROM sessions").fetchone()[0] == 1
    store.revoke("Ada")
    assert store.session_caller(other, 1002.0) is None
    store.close()


def test_a_dataset_of_many_files_says_its_folder_counts_are_per_page(service_open):
    """A dataset of 1 200 files in one folder: its page (500 files) read "d0/ (500 files)", and the
    next page "d0/ (500 files)" again, as if the folder held 500; the pager was only below the
    tree. Now the counts say "on this page" and the pager is above the tree too."""
    from domas.catalogue import FileRecord, Replica

    base, world = service_open
    ds = world.catalogue.upsert_dataset(Dataset(beamtime="2025-0042", path="/B1/202611/Data/2025-0042/many",
                                                metadata={"title": "many"}))
    world.catalogue.upsert_files([FileRecord(ds.pid, f"d0/f{i:05d}.h5", 10, "00000001", mtime=1.7e9,
                                             replicas={"central": Replica("verified", verified_at=world.now())})
                                  for i in range(1200)])
    first = httpx.get(f"{base}/datasets/{ds.pid}").text
    assert '<summary>d0/ <span class="count">(500 files on this page)</span>' in first
    tree_at = first.index('<div class="tree">')
    assert "files 1–500 of 1200" in first[:tree_at] and "files 1–500 of 1200" in first[tree_at:]
    last = httpx.get(f"{base}/datasets/{ds.pid}", params={"offset": 1000}).text
    assert '(200 files on this page)' in last and "files 1001–1200 of 1200" in last
    small = httpx.get(f"{base}/datasets/{world.pids['open']}").text                  # one page: plain counts
    assert '<summary>sub/ <span class="count">(1 file)</span>' in small and "on this page" not in small


def test_a_dataset_with_no_files_offers_no_manifest(service_open, tmp_path):
    """An empty dataset's page offered "manifest of every file", which saved a manifest listing
    nothing, and `domas get --manifest` refuses that file ("lists no file")."""
    base, world = service_open
    ds = world.catalogue.upsert_dataset(Dataset(beamtime="2025-0042", path="/B1/202611/Data/2025-0042/empty",
                                                metadata={"title": "nothing yet"}))
    page = httpx.get(f"{base}/datasets/{ds.pid}").text
    assert "This dataset has no files yet." in page
    assert "manifest of every file" not in page and "Manifest of the selected files" not in page
    r = httpx.get(f"{base}/datasets/{ds.pid}/manifest")
    assert r.status_code == 404 and "has no files yet" in r.text
    assert "manifest of every file" in httpx.get(f"{base}/datasets/{world.pids['open']}").text
