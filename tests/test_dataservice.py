"""The data service on a real port: API queries, ranged downloads, Digest, embargo, token, traversal, portal."""

from __future__ import annotations

import base64
import http.client
import json
import os
import tracemalloc
import zlib
from urllib.parse import quote, urlsplit

import httpx
import pytest

from domas.dataservice import delivery
from domas.dataservice.app import create_app
from domas.errors import ImpossibleRange, UnsafePath
from tests.fixtures.dataservice import TITLE

API = "/api/v1"


def content_url(base: str, pid: str, rel: str) -> str:
    return f"{base}{API}/datasets/{quote(pid, safe=':')}/files/{quote(rel)}/content"


@pytest.fixture
def service(data_world, serve_app):
    app = create_app(data_world.catalogue, data_world.tiers, now=data_world.now)
    return serve_app(app), data_world


def raw_get(base: str, path: str, headers: dict | None = None) -> tuple[int, bytes]:
    """A request with the path sent exactly as written (httpx would normalise '..')."""
    u = urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


# -- the pure core -------------------------------------------------------------------------------

@pytest.mark.parametrize("header,size,expected", [
    (None, 100, None), ("bytes=0-9", 100, (0, 10)), ("bytes=90-", 100, (90, 100)), ("bytes=-10", 100, (90, 100)),
    ("bytes=-500", 100, (0, 100)), ("bytes=95-200", 100, (95, 100)), ("bytes=0-0", 1, (0, 1)),
    ("bytes=5-2", 100, None), ("items=0-9", 100, None), ("bytes=0-1,5-6", 100, None), ("bytes=x-y", 100, None),
    ("BYTES = 1 - 2", 100, (1, 3)),
])
def test_parse_range_table(header, size, expected):
    assert delivery.parse_range(header, size) == expected


@pytest.mark.parametrize("header,size", [("bytes=100-", 100), ("bytes=150-160", 100), ("bytes=-0", 100),
                                         ("bytes=0-", 0), ("bytes=-5", 0)])
def test_unsatisfiable_ranges(header, size):
    with pytest.raises(ImpossibleRange):
        delivery.parse_range(header, size)


@pytest.mark.parametrize("path", ["../x", "a/../../x", "/etc/passwd", "a//b", "a/./b", "a\0b", "a\\..\\b", "", ".."])
def test_request_paths_that_could_escape_are_refused(path):
    with pytest.raises(UnsafePath):
        delivery.check_request_path(path)


# -- the API ---------------------------------------------------------------------------------------

def test_find_datasets_by_beamtime_proposal_pi_time_and_limit(service):
    base, world = service

    def pids(**params) -> set[str]:
        r = httpx.get(f"{base}{API}/datasets", params=params)
        assert r.status_code == 200, r.text
        return {d["pid"] for d in r.json()["datasets"]}

    world.clock[0] += 400 * 86400                                   # the embargo is over: both are open
    both = {world.pids["open"], world.pids["embargoed"]}
    assert pids() == both
    assert pids(beamtime="2025-0042") == {world.pids["open"]}
    assert pids(proposal="P-42") == both
    assert pids(pi="Grace Hopper") == both and pids(pi="Ada Lovelace") == both
    assert pids(pi="Nobody") == set()
    # experiment time: beamtime 2025-0042 ran 2026-05-28..2026-09-21; 2025-0099 has no dates, so its
    # dataset's creation (2026-08-06) stands for it
    assert pids(**{"from": "2026-09-21"}) == {world.pids["open"]} and pids(**{"from": "2026-09-22"}) == set()
    assert pids(to="2026-08-01") == {world.pids["open"]}
    assert pids(**{"from": "2026-08-06", "to": "2026-08-06"}) == both       # a bare 'to' date is the whole day
    assert pids(**{"from": str(1.7861e9)}) == {world.pids["open"]}
    assert len(pids(limit=1)) == 1
    r = httpx.get(f"{base}{API}/datasets", params={"limit": 0})
    assert r.status_code == 400 and r.json()["error"].startswith("limit")
    r = httpx.get(f"{base}{API}/datasets", params={"from": "last tuesday"})
    assert r.status_code == 400 and "ISO date" in r.json()["error"]


def test_dataset_record_lists_its_files_in_pages(service):
    base, world = service
    pid = world.pids["open"]
    r = httpx.get(f"{base}{API}/datasets/{pid}", params={"limit": 3})
    doc = r.json()
    assert r.status_code == 200 and doc["title"] == TITLE and doc["file_count"] == 4
    assert doc["bytes"] == sum(len(d) for d in world.data.values())
    assert not doc["embargoed"] and doc["downloadable"]
    paths = [f["path"] for f in doc["files"]]
    assert len(paths) == 3 and doc["next"]
    rest = httpx.get(base + doc["next"]).json()
    assert rest["next"] is None
    paths += [f["path"] for f in rest["files"]]
    assert sorted(paths) == sorted(world.data)
    big = next(f for f in doc["files"] if f["path"] == "big.bin")
    assert big["adler32"] == f"{zlib.adler32(world.data['big.bin']):08x}" and big["served_from"] == "central"
    assert big["replicas"]["central"]["state"] == "verified" and big["available"]
    r = httpx.get(f"{base}{API}/datasets/{pid}/files/sub/scan ü 1.h5")
    assert r.status_code == 200 and r.json()["served_from"] == "beamline"


def test_unknown_dataset_or_file_is_404_with_a_sentence(service):
    base, world = service
    r = httpx.get(f"{base}{API}/datasets/CSTR:17058.11.HEPS.nope.0000")
    assert r.status_code == 404 and r.json()["error"].startswith("there is no dataset with PID")
    r = httpx.get(content_url(base, world.pids["open"], "missing.h5"))
    assert r.status_code == 404 and "has no file missing.h5" in r.json()["error"]
    r = httpx.get(f"{base}/api/v2/whatever")
    assert r.status_code == 404 and "error" in r.json()


def test_whole_file_with_digest_etag_and_length(service):
    base, world = service
    data = world.data["big.bin"]
    r = httpx.get(content_url(base, world.pids["open"], "big.bin"))
    assert r.status_code == 200 and r.content == data
    assert r.headers["content-length"] == str(len(data))
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["digest"] == f"adler32={zlib.adler32(data):08x}"
    assert r.headers["etag"].startswith('"') and r.headers["x-domas-tier"] == "central"
    assert "last-modified" in r.headers


def test_byte_ranges_206_and_416(service):
    base, world = service
    data = world.data["big.bin"]
    url = content_url(base, world.pids["open"], "big.bin")
    for header, (start, end) in [("bytes=10-19", (10, 20)), ("bytes=-7", (len(data) - 7, len(data))),
                                 (f"bytes={len(data) - 3}-", (len(data) - 3, len(data))),
                                 (f"bytes=1000-{10 * len(data)}", (1000, len(data)))]:
        r = httpx.get(url, headers={"Range": header})
        assert r.status_code == 206, header
        assert r.content == data[start:end]
        assert r.headers["content-range"] == f"bytes {start}-{end - 1}/{len(data)}"
        assert r.headers["content-length"] == str(end - start)
    r = httpx.get(url, headers={"Range": f"bytes={len(data)}-"})
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{len(data)}"
    assert "end of the file" in r.json()["error"]
    r = httpx.get(url, headers={"Range": "bytes=0-1,5-6"})
    assert r.status_code == 200 and r.content == data                  # multi-range: ignored, whole file
    r = httpx.get(content_url(base, world.pids["open"], "empty.dat"), headers={"Range": "bytes=0-"})
    assert r.status_code == 416


def test_head_gives_the_headers_without_a_body(service):
    base, world = service
    data = world.data["big.bin"]
    r = httpx.head(content_url(base, world.pids["open"], "big.bin"))
    assert r.status_code == 200 and r.content == b""
    assert r.headers["content-length"] == str(len(data)) and r.headers["digest"].startswith("adler32=")
    r = httpx.head(content_url(base, world.pids["open"], "big.bin"), headers={"Range": "bytes=0-9"})
    assert r.status_code == 206 and r.headers["content-length"] == "10"


def test_if_match_detects_a_changed_file(service):
    base, world = service
    url = content_url(base, world.pids["open"], "big.bin")
    tag = httpx.head(url).headers["etag"]
    assert httpx.get(url, headers={"Range": "bytes=0-9", "If-Match": tag}).status_code == 206
    r = httpx.get(url, headers={"Range": "bytes=0-9", "If-Match": '"0000-1"'})
    assert r.status_code == 412 and "changed" in r.json()["error"]


def test_download_is_streamed_not_held_in_memory(service):
    base, world = service
    from tests.fixtures.dataservice import _put

    data = os.urandom(24 * 1024 * 1024)
    _put(world, world.pids["open"], "/B1/202611/Data/2025-0042/raw", "huge.bin", data, {"central": "verified"})
    url = content_url(base, world.pids["open"], "huge.bin")
    h = zlib.adler32(b"")
    tracemalloc.start()
    try:
        with httpx.stream("GET", url) as r:
            for block in r.iter_bytes(256 * 1024):
                h = zlib.adler32(block, h)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert h == zlib.adler32(data)
    assert peak < 16 * 1024 * 1024, f"peak {peak} bytes: the 24 MiB file was held in memory"


def test_tiers_are_tried_in_order_and_only_verified_replicas_serve(service):
    base, world = service
    pid = world.pids["open"]
    r = httpx.get(content_url(base, pid, "sub/scan ü 1.h5"))
    assert r.headers["x-domas-tier"] == "beamline" and r.content == world.data["sub/scan ü 1.h5"]
    r = httpx.get(content_url(base, pid, "old/archived.h5"))           # beamline copy deleted: from tape
    assert r.headers["x-domas-tier"] == "tape" and r.content == world.data["old/archived.h5"]
    world.on_tier("beamline", "sub/scan ü 1.h5").unlink()              # verified in the catalogue, gone on disk
    r = httpx.get(content_url(base, pid, "sub/scan ü 1.h5"))
    assert r.headers["x-domas-tier"] == "central" and r.content == world.data["sub/scan ü 1.h5"]
    world.catalogue.set_replica(pid, "big.bin", "central", "failed")
    r = httpx.get(content_url(base, pid, "big.bin"))
    assert r.status_code == 404 and "no verified copy" in r.json()["error"]
    assert httpx.get(f"{base}{API}/datasets/{pid}/files/big.bin").json()["available"] is False


def test_embargoed_dataset_does_not_exist_for_outsiders_until_its_end(service):
    base, world = service
    pid = world.pids["embargoed"]
    for path in (f"{API}/datasets/{pid}", f"{API}/datasets/{pid}/files", f"{API}/datasets/{pid}/files/secret.h5",
                 f"{API}/datasets/{pid}/files/secret.h5/content", f"/datasets/{pid}"):
        r = httpx.get(base + path)
        assert r.status_code == 404, path                     # never 403: a refusal would tell it exists
        assert "embargoed bytes" not in r.text and "Embargoed scan" not in r.text and "secret" not in r.text
        assert "there is no dataset with PID" in r.text
    found = httpx.get(f"{base}{API}/datasets").json()
    assert [d["pid"] for d in found["datasets"]] == [world.pids["open"]]
    assert found["total"] == 1 and found["facets"]["access"] == {"open": 1}
    assert httpx.get(f"{base}{API}/datasets", params={"q": "embargoed"}).json()["total"] == 0
    assert "Embargoed scan" not in httpx.get(base + "/").text
    world.clock[0] += 366 * 86400                             # the end date passes: open, with no action
    doc = httpx.get(f"{base}{API}/datasets/{pid}").json()
    assert doc["state"] == "released" and not doc["embargoed"] and doc["downloadable"]
    r = httpx.get(content_url(base, pid, "secret.h5"))
    assert r.status_code == 200 and r.content == b"embargoed bytes" * 100
    assert httpx.get(f"{base}{API}/datasets").json()["total"] == 2


def test_token_guards_every_call_but_healthz_and_opens_embargo(data_world, serve_app):
    base = serve_app(create_app(data_world.catalogue, data_world.tiers, token="s3cret", now=data_world.now))
    pid = data_world.pids["embargoed"]
    for path in (f"{API}/datasets", f"{API}/datasets/{pid}", f"{API}/datasets/{pid}/files/secret.h5/content", "/"):
        r = httpx.get(base + path)
        assert r.status_code == 401, path
        # one challenge per header field (Chromium ignores a field packing Bearer and Basic together);
        # a portal page answers with its login form and no Basic challenge (no browser dialog)
        assert r.headers.get_list("www-authenticate") == ['Bearer realm="domas data"'] + (
            [] if path == "/" else ['Basic realm="domas data", charset="UTF-8"']), path
    r = httpx.get(f"{base}{API}/datasets", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and "token" in r.json()["error"]
    assert httpx.get(base + "/healthz").status_code == 200
    good = {"Authorization": "Bearer s3cret"}
    assert httpx.get(f"{base}{API}/datasets", headers=good).json()["count"] == 2
    r = httpx.get(content_url(base, pid, "secret.h5"), headers=good)
    assert r.status_code == 200 and r.content == b"embargoed bytes" * 100
    basic = {"Authorization": "Basic " + base64.b64encode(b"anyone:s3cret").decode()}
    assert httpx.get(base + "/", headers=basic).status_code == 200


@pytest.fixture
def with_users(data_world, serve_app, tmp_path):
    """The service with a user store: Grace Hopper (PI of the embargoed beamtime), an outsider, staff."""
    from domas.dataservice.users import UserStore

    store = UserStore(tmp_path / "users.sqlite")
    tokens = {}
    for name, role in (("grace hopper", "user"), ("Eve Outsider", "user"), ("Sam", "staff"), ("Ada Lovelace", "user")):
        store.add(name, role)
        tokens[name] = store.issue_token(name)
    base = serve_app(create_app(data_world.catalogue, data_world.tiers, users=store, now=data_world.now))
    yield base, data_world, store, tokens
    store.close()


def test_team_members_and_staff_see_an_embargoed_dataset_others_do_not(with_users):
    base, world, store, tokens = with_users
    pid = world.pids["embargoed"]

    def as_(name):
        return {"Authorization": f"Bearer {tokens[name]}"}

    for name in ("grace hopper", "Sam", "Ada Lovelace"):      # beamtime PI (case ignored), staff, proposal PI
        found = httpx.get(f"{base}{API}/datasets", headers=as_(name)).json()
        assert found["total"] == 2 and found["facets"]["access"] == {"open": 1, "embargoed": 1}, name
        r = httpx.get(content_url(base, pid, "secret.h5"), headers=as_(name))
        assert r.status_code == 200 and r.content == b"embargoed bytes" * 100
        doc = httpx.get(f"{base}{API}/datasets/{pid}", headers=as_(name)).json()
        assert doc["state"] == "embargoed" and doc["embargoed"] and doc["downloadable"]
        assert "Embargoed scan" in httpx.get(f"{base}/datasets/{pid}", headers=as_(name)).text
    outsider = as_("Eve Outsider")
    assert httpx.get(f"{base}{API}/datasets", headers=outsider).json()["total"] == 1
    assert httpx.get(content_url(base, pid, "secret.h5"), headers=outsider).status_code == 404
    store.revoke("grace hopper")                              # a revoked token is nobody's: 401
    r = httpx.get(f"{base}{API}/datasets", headers=as_("grace hopper"))
    assert r.status_code == 401 and len(r.headers.get_list("www-authenticate")) == 2
    new = store.issue_token("Sam")                            # a new token replaces the old one
    assert httpx.get(f"{base}{API}/datasets", headers=as_("Sam")).status_code == 401
    assert httpx.get(f"{base}{API}/datasets", headers={"Authorization": f"Bearer {new}"}).json()["total"] == 2


def test_tokens_are_stored_hashed(with_users):
    import sqlite3

    _, _, store, tokens = with_users
    raw = sqlite3.connect(store.path).execute("SELECT group_concat(token_sha256) FROM users").fetchone()[0]
    assert all(t not in raw for t in tokens.values()) and all(t.startswith("domas_") for t in tokens.values())


def test_search_free_text_case_insensitive_ids_cursor_facets_and_unknown_parameters(service):
    base, world = service
    world.clock[0] += 400 * 86400

    def get(**params):
        r = httpx.get(f"{base}{API}/datasets", params=params)
        assert r.status_code == 200, r.text
        return r.json()

    assert [d["pid"] for d in get(q="lysozyme")["datasets"]] == [world.pids["open"]]
    assert [d["pid"] for d in get(q="SCAN ü")["datasets"]] == [world.pids["open"]]   # a file name, accent or not
    assert get(q="scan")["total"] == 2                        # a file name or a title ("Embargoed scan")
    assert get(q="archived")["total"] == 1                    # a file name: old/archived.h5
    assert get(q="protein crystals lovelace")["total"] == 2   # proposal title and PI
    assert get(beamtime="2025-0042".upper(), pi="grace HOPPER")["total"] == 1
    assert get(proposal="p-42")["total"] == 2
    first = get(limit=1)
    assert first["count"] == 1 and first["total"] == 2 and first["next"]
    second = get(limit=1, cursor=first["next"])
    assert second["next"] is None and second["datasets"][0]["pid"] != first["datasets"][0]["pid"]
    assert first["facets"] == {"beamline": {"B1": 2}, "data_type": {"raw": 2}, "year": {"2026": 2},
                               "access": {"open": 2}}
    for bad in ({"until": "2026-01-01"}, {"since": "2026-01-01"}, {"pid": "x"}, {"cursor": "garbage!"}):
        r = httpx.get(f"{base}{API}/datasets", params=bad)
        assert r.status_code == 400 and r.json()["kind"] == "usage", bad
    r = httpx.get(f"{base}{API}/datasets/{world.pids['open']}", params={"ofset": 3})
    assert r.status_code == 400 and "ofset" in r.json()["error"]


@pytest.mark.parametrize("path", [
    "/files/../../../../etc/passwd/content",
    "/files/%2E%2E/%2E%2E/%2E%2E/outside.txt/content",
    "/files//etc/passwd/content",
    "/files/big.bin%00.txt/content",
    "/files/sub/./scan/content",
])
def test_path_traversal_is_400_and_never_served(service, path):
    base, world = service
    (world.root / "outside.txt").write_bytes(b"SECRET OUTSIDE")
    status, body = raw_get(base, f"{API}/datasets/{world.pids['open']}{path}")
    assert status == 400, body
    assert b"not a plain relative path" in body and b"SECRET" not in body


def test_symlink_on_a_tier_leading_outside_is_not_followed(service):
    base, world = service
    from tests.fixtures.dataservice import _put

    _put(world, world.pids["open"], "/B1/202611/Data/2025-0042/raw", "link.dat", b"x" * 14, {"central": "verified"})
    (world.root / "outside.txt").write_bytes(b"SECRET OUTSIDE")
    target = world.on_tier("central", "link.dat")
    target.unlink()
    target.symlink_to(world.root / "outside.txt")
    r = httpx.get(content_url(base, world.pids["open"], "link.dat"))
    assert r.status_code >= 400 and b"SECRET" not in r.content
    assert "outside the tier root" in r.json()["error"]


# -- the portal ------------------------------------------------------------------------------------

def test_portal_lists_datasets_with_titles_escaped(service):
    base, world = service
    r = httpx.get(base + "/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "<script>alert" not in r.text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; Lysozyme &amp; friends" in r.text
    assert world.pids["open"] in r.text and world.pids["embargoed"] not in r.text    # hidden from anonymous
    r = httpx.get(base + "/", params={"beamtime": '"><script>x()</script>'})
    assert "<script>x()" not in r.text and "&quot;&gt;&lt;script&gt;" in r.text and "No dataset matches" in r.text
    r = httpx.get(base + "/", params={"pi": "Grace Hopper", "beamtime": "2025-0042"})
    assert world.pids["open"] in r.text and world.pids["embargoed"] not in r.text


def test_portal_dataset_page_lists_files_with_links(service):
    base, world = service
    pid = world.pids["open"]
    r = httpx.get(f"{base}/datasets/{pid}")
    assert r.status_code == 200 and "<script>alert" not in r.text
    for rel, data in world.data.items():
        assert f"{zlib.adler32(data):08x}" in r.text
        assert f'href="{API}/datasets/{pid}/files/{quote(rel)}/content"' in r.text
    assert 'class="badge verified"' in r.text and ">tape<" in r.text
    r = httpx.get(f"{base}/datasets/{world.pids['embargoed']}")
    assert r.status_code == 404 and "/content" not in r.text
    r = httpx.get(f"{base}/datasets/CSTR:17058.11.HEPS.none.0")
    assert r.status_code == 404 and "text/html" in r.headers["content-type"] and "no dataset" in r.text


def test_healthz_and_openapi_document_the_api(service):
    base, _ = service
    assert httpx.get(base + "/healthz").json()["status"] == "ok"
    spec = httpx.get(base + "/openapi.json").json()
    assert {f"{API}/datasets", f"{API}/datasets/{{pid}}", f"{API}/datasets/{{pid}}/files/{{path}}/content"} <= set(
        spec["paths"])
    content = spec["paths"][f"{API}/datasets/{{pid}}/files/{{path}}/content"]
    assert {"get", "head"} <= set(content) and {"206", "304", "416"} <= set(content["get"]["responses"])
    assert {"DatasetPage", "FileOut", "ErrorOut"} <= set(spec["components"]["schemas"])
    # as the service behaves: invalid input is 400, never FastAPI's 422; every GET has its HEAD
    assert not [p for p, ops in spec["paths"].items() for op in ops.values() if "422" in op["responses"]]
    assert all("head" in ops for ops in spec["paths"].values())
    assert "HTTPValidationError" not in spec["components"]["schemas"]


def test_every_file_as_streamed_json_lines(service):
    base, world = service
    r = httpx.get(f"{base}{API}/datasets/{world.pids['open']}/files")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    records = [json.loads(line) for line in r.text.splitlines()]
    assert sorted(f["path"] for f in records) == sorted(world.data)
    assert all(f["content_url"].endswith("/content") for f in records)
    assert httpx.get(f"{base}{API}/datasets/CSTR:17058.11.HEPS.x.0/files").status_code == 404


def test_the_server_embeds_in_a_loop_it_does_not_own(data_world, tmp_path):
    import asyncio
    import threading

    from domas.config import CatalogueConfig, Config, StorageConfig
    from domas.dataservice.cli_serve import DataServiceServer
    from tests.fixtures.common import wait_until

    cfg = Config(state_dir=str(tmp_path / "state"),
                 catalogue=CatalogueConfig(url=f"sqlite://{data_world.catalogue.path}"),
                 storage=StorageConfig(**data_world.tiers))
    served = DataServiceServer(cfg, "127.0.0.1:0", own_signals=False)
    thread = threading.Thread(target=lambda: asyncio.run(served.serve()), daemon=True)
    thread.start()

    def listed() -> bool:
        try:
            return httpx.get(served.url + "api/v1/datasets", timeout=1).json()["count"] == 1   # one is embargoed
        except httpx.HTTPError:
            return False

    wait_until(listed, timeout=20, what="the embedded data service")
    served.stop()
    thread.join(timeout=10)
    assert not thread.is_alive() and served.sock.fileno() == -1


# -- HTTP done right -------------------------------------------------------------------------------

def test_head_answers_wherever_get_does_with_the_same_headers(service):
    base, world = service
    for path in ("/", "/healthz", f"{API}/datasets", f"{API}/datasets/{world.pids['open']}",
                 f"{API}/datasets/{world.pids['open']}/files/big.bin", f"/datasets/{world.pids['open']}",
                 "/openapi.json"):
        got, head = httpx.get(base + path), httpx.head(base + path)
        assert head.status_code == got.status_code == 200, path
        assert head.content == b"" and head.headers["content-length"] == got.headers["content-length"], path
    assert httpx.head(f"{base}{API}/datasets/nope").status_code == 404


def test_405_names_the_allowed_methods(service):
    base, world = service
    for path in (f"{API}/datasets", f"{API}/datasets/{world.pids['open']}", "/healthz"):
        r = httpx.post(base + path)
        assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD", path
    r = httpx.delete(content_url(base, world.pids["open"], "big.bin"))
    assert r.status_code == 405 and set(r.headers["allow"].split(", ")) == {"GET", "HEAD"}


def test_if_none_match_gives_304(service):
    base, world = service
    url = content_url(base, world.pids["open"], "big.bin")
    tag = httpx.head(url).headers["etag"]
    for header in (tag, f'"other", {tag}', "*", "W/" + tag):
        r = httpx.get(url, headers={"If-None-Match": header})
        assert r.status_code == 304 and r.content == b"" and r.headers["etag"] == tag, header
    assert httpx.get(url, headers={"If-None-Match": '"other"'}).status_code == 200


@pytest.mark.parametrize("path,params", [
    ("/datasets/{pid}", {"offset": "99999999999999999999"}),
    ("/datasets/{pid}", {"offset": "-1"}),
    ("/datasets/{pid}", {"limit": "1e999"}),
    ("/datasets", {"from": "2026-13-01"}), ("/datasets", {"to": "10000-01-01"}),
    ("/datasets", {"to": "nan"}), ("/datasets", {"from": "1e400"}),
    ("/datasets", {"limit": "99999999999999999999999"}),
    ("/datasets", {"q": " ".join(f"w{i}" for i in range(40))}),
])
def test_hostile_parameters_are_400_never_5xx(service, path, params):
    base, world = service
    r = httpx.get(base + API + path.format(pid=world.pids["open"]), params=params)
    assert r.status_code == 400 and r.json()["kind"] == "usage", r.text


def test_odd_free_text_is_searched_not_executed(service):
    base, _ = service
    for q in ('"', "a OR b", "NEAR(x y)", "*", "-x", "title:x", "'; DROP TABLE datasets; --", "\u0000", "ü" * 500):
        r = httpx.get(f"{base}{API}/datasets", params={"q": q})
        assert r.status_code == 200, (q, r.text)


def test_api_docs_are_served_from_this_service_without_a_cdn(service):
    base, _ = service
    page = httpx.get(base + "/docs")
    assert page.status_code == 200 and "cdn" not in page.text and "https://" not in page.text
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert asset in page.text
        r = httpx.get(f"{base}/docs/assets/{asset}")
        assert r.status_code == 200 and len(r.content) > 10_000
    assert httpx.get(base + "/redoc").status_code == 404


def test_prometheus_metrics_count_requests_bytes_and_latency(service):
    base, world = service
    httpx.get(f"{base}{API}/datasets")
    data = httpx.get(content_url(base, world.pids["open"], "big.bin")).content
    httpx.get(f"{base}{API}/datasets/nope")
    httpx.get(f"{base}/no/such/{'x' * 10}")
    text = httpx.get(base + "/metrics").text
    assert 'domas_dataservice_requests_total{method="GET",route="/api/v1/datasets",status="200"} 1.0' in text
    assert 'domas_dataservice_requests_total{method="GET",route="/api/v1/datasets/{pid}",status="404"} 1.0' in text
    assert 'route="unmatched",status="404"' in text and "xxxxxxxxxx" not in text
    content = 'route="/api/v1/datasets/{pid}/files/{path}/content"'
    sent = {line.rpartition(" ")[0]: float(line.rpartition(" ")[2]) for line in text.splitlines() if line[:1] != "#"}
    assert sent[f"domas_dataservice_response_bytes_total{{{content}}}"] == len(data)
    assert f'domas_dataservice_request_seconds_count{{{content}}} 1.0' in text


def test_no_input_gives_a_5xx(data_world, serve_app):
    """A bounded fuzz (as schemathesis would): any path under the API and any query, with and without
    tokens, is answered below 500 and with JSON under /api."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from domas.dataservice.users import UserStore

    store = UserStore(data_world.root / "users.sqlite")
    store.add("grace hopper")
    token = store.issue_token("grace hopper")
    base = serve_app(create_app(data_world.catalogue, data_world.tiers, users=store, now=data_world.now))
    pid = data_world.pids["open"]
    text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)
    params = st.dictionaries(st.sampled_from(["q", "beamtime", "proposal", "pi", "from", "to", "cursor", "limit",
                                              "offset", "x"]), st.one_of(text, st.integers().map(str)), max_size=4)
    paths = st.sampled_from(["/datasets", f"/datasets/{pid}", f"/datasets/{pid}/files", f"/datasets/{pid}/files/",
                             f"/datasets/{pid}/files/big.bin", f"/datasets/{pid}/files/big.bin/content"])
    auth = st.sampled_from([{}, {"Authorization": f"Bearer {token}"}, {"Authorization": "Bearer x"},
                            {"Authorization": "Basic !!"}, {"Authorization": "Negotiate x"}])

    with httpx.Client(base_url=base, timeout=10) as client:
        @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
        @given(path=paths, suffix=text, query=params, headers=auth, method=st.sampled_from(["GET", "HEAD"]))
        def probe(path, suffix, query, headers, method):
            r = client.request(method, API + path + quote(suffix), params=query, headers=headers)
            assert r.status_code < 500, (path, suffix, query, r.text)
            if method == "GET" and r.status_code >= 400:
                assert "error" in r.json()

        probe()
    store.close()
