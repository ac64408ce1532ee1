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

from domas.controller import delivery
from domas.controller.dataservice import create_app
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


def test_embargo_is_lifted_by_time_or_token():
    assert delivery.embargo_reason("P", 200.0, now=100.0, authorised=False).startswith("dataset P is under embargo")
    assert delivery.embargo_reason("P", 200.0, now=100.0, authorised=True) is None
    assert delivery.embargo_reason("P", 200.0, now=200.0, authorised=False) is None
    assert delivery.embargo_reason("P", None, now=100.0, authorised=False) is None


# -- the API ---------------------------------------------------------------------------------------

def test_find_datasets_by_beamtime_proposal_pi_since_and_limit(service):
    base, world = service

    def pids(**params) -> set[str]:
        r = httpx.get(f"{base}{API}/datasets", params=params)
        assert r.status_code == 200, r.text
        return {d["pid"] for d in r.json()["datasets"]}

    both = {world.pids["open"], world.pids["embargoed"]}
    assert pids() == both
    assert pids(beamtime="2025-0042") == {world.pids["open"]}
    assert pids(proposal="P-42") == both
    assert pids(pi="Grace Hopper") == both and pids(pi="Ada Lovelace") == both
    assert pids(pi="Nobody") == set()
    assert pids(since="2026-08-01") == {world.pids["embargoed"]}   # created 2026-07-25 and 2026-08-06
    assert pids(since=str(1.7855e9)) == {world.pids["embargoed"]}
    assert len(pids(limit=1)) == 1
    r = httpx.get(f"{base}{API}/datasets", params={"limit": 0})
    assert r.status_code == 400 and r.json()["error"].startswith("limit")
    r = httpx.get(f"{base}{API}/datasets", params={"since": "last tuesday"})
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


def test_embargoed_dataset_is_refused_until_its_end(service):
    base, world = service
    pid = world.pids["embargoed"]
    url = content_url(base, pid, "secret.h5")
    r = httpx.get(url)
    assert r.status_code == 403
    assert r.json()["error"].startswith(f"dataset {pid} is under embargo until")
    assert b"embargoed bytes" not in r.content
    doc = httpx.get(f"{base}{API}/datasets/{pid}").json()
    assert doc["embargoed"] and not doc["downloadable"] and "embargo" in doc["embargo_reason"]
    world.clock[0] += 366 * 86400
    r = httpx.get(url)
    assert r.status_code == 200 and r.content == b"embargoed bytes" * 100


def test_token_guards_every_call_but_healthz_and_opens_embargo(data_world, serve_app):
    base = serve_app(create_app(data_world.catalogue, data_world.tiers, token="s3cret", now=data_world.now))
    pid = data_world.pids["embargoed"]
    for path in (f"{API}/datasets", f"{API}/datasets/{pid}", f"{API}/datasets/{pid}/files/secret.h5/content", "/"):
        r = httpx.get(base + path)
        assert r.status_code == 401, path
        assert "Bearer" in r.headers["www-authenticate"] and "Basic" in r.headers["www-authenticate"]
    r = httpx.get(f"{base}{API}/datasets", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and "token" in r.json()["error"]
    assert httpx.get(base + "/healthz").status_code == 200
    good = {"Authorization": "Bearer s3cret"}
    assert httpx.get(f"{base}{API}/datasets", headers=good).json()["count"] == 2
    r = httpx.get(content_url(base, pid, "secret.h5"), headers=good)
    assert r.status_code == 200 and r.content == b"embargoed bytes" * 100
    basic = {"Authorization": "Basic " + base64.b64encode(b"anyone:s3cret").decode()}
    assert httpx.get(base + "/", headers=basic).status_code == 200


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
    assert world.pids["open"] in r.text and "embargo until" in r.text
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
    assert "under embargo until" in r.text and "/content" not in r.text
    r = httpx.get(f"{base}/datasets/CSTR:17058.11.HEPS.none.0")
    assert r.status_code == 404 and "text/html" in r.headers["content-type"] and "no dataset" in r.text


def test_healthz_and_openapi_document_the_api(service):
    base, _ = service
    assert httpx.get(base + "/healthz").json()["status"] == "ok"
    spec = httpx.get(base + "/openapi.json").json()
    assert {f"{API}/datasets", f"{API}/datasets/{{pid}}", f"{API}/datasets/{{pid}}/files/{{path}}/content"} <= set(
        spec["paths"])
    content = spec["paths"][f"{API}/datasets/{{pid}}/files/{{path}}/content"]
    assert {"get", "head"} <= set(content) and {"206", "403", "416"} <= set(content["get"]["responses"])
    assert {"DatasetPage", "FileOut", "ErrorOut"} <= set(spec["components"]["schemas"])


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
    from domas.controller.cli_serve import DataServiceServer
    from tests.fixtures.common import wait_until

    cfg = Config(state_dir=str(tmp_path / "state"),
                 catalogue=CatalogueConfig(url=f"sqlite://{data_world.catalogue.path}"),
                 storage=StorageConfig(**data_world.tiers))
    served = DataServiceServer(cfg, "127.0.0.1:0", own_signals=False)
    thread = threading.Thread(target=lambda: asyncio.run(served.serve()), daemon=True)
    thread.start()

    def listed() -> bool:
        try:
            return httpx.get(served.url + "api/v1/datasets", timeout=1).json()["count"] == 2
        except httpx.HTTPError:
            return False

    wait_until(listed, timeout=20, what="the embedded data service")
    served.stop()
    thread.join(timeout=10)
    assert not thread.is_alive() and served.sock.fileno() == -1
