"""The data service used as a scientist's own tools use it, on a real port: wget -N fetches a
file once and then only when it changed."""

from __future__ import annotations

import email.utils
import shutil
import subprocess
from urllib.parse import quote

import httpx
import pytest

from domas.dataservice import delivery
from domas.dataservice.app import create_app

API = "/api/v1"


@pytest.mark.parametrize("since,none_match,mtime,expected", [
    ("Tue, 14 Nov 2023 22:13:20 GMT", None, 1_700_000_000.0, True),       # the file's own Last-Modified
    ("Tue, 14 Nov 2023 22:13:20 GMT", None, 1_700_000_000.9, True),       # the header has whole seconds
    ("Tue, 14 Nov 2023 22:13:19 GMT", None, 1_700_000_000.0, False),      # a second older: changed
    ("Tue, 14 Nov 2023 22:13:20 GMT", '"x"', 1_700_000_000.0, False),     # If-None-Match decides
    ("yesterday", None, 1_700_000_000.0, False), ("", None, 1_700_000_000.0, False),
    ("Tue, 14 Nov 2023 22:13:20", None, 1_700_000_000.0, False),          # no zone: not an HTTP date
    (None, None, 1_700_000_000.0, False), ("Tue, 14 Nov 2023 22:13:20 GMT", None, None, False),
])
def test_if_modified_since_table(since, none_match, mtime, expected):
    assert delivery.not_modified_since(since, none_match, mtime) is expected


@pytest.fixture
def content(data_world, serve_app):
    base = serve_app(create_app(data_world.catalogue, data_world.tiers, now=data_world.now))
    pid = data_world.pids["open"]
    return f"{base}{API}/datasets/{quote(pid, safe=':')}/files/big.bin/content", data_world


def test_if_modified_since_answers_304_when_the_file_has_not_changed(content):
    """Without an ETag to send (wget -N, curl -z), a client asks If-Modified-Since: the service sent
    the whole file again every time."""
    url, world = content
    modified = httpx.head(url).headers["last-modified"]
    r = httpx.get(url, headers={"If-Modified-Since": modified})
    assert r.status_code == 304 and r.content == b"" and r.headers["last-modified"] == modified
    older = email.utils.formatdate(email.utils.parsedate_to_datetime(modified).timestamp() - 60, usegmt=True)
    assert httpx.get(url, headers={"If-Modified-Since": older}).content == world.data["big.bin"]
    assert httpx.get(url, headers={"If-Modified-Since": modified, "If-None-Match": '"other"'}).status_code == 200


@pytest.mark.skipif(shutil.which("wget") is None, reason="wget is not installed")
def test_wget_timestamping_downloads_once(content, tmp_path):
    url, world = content
    saved = tmp_path / "content"                    # wget -N names the file from the URL (not Content-Disposition)
    run = lambda: subprocess.run(["wget", "-N", "--no-verbose", url], cwd=tmp_path,  # noqa: E731
                                 capture_output=True, text=True, timeout=30)
    first = run()
    assert first.returncode == 0 and saved.read_bytes() == world.data["big.bin"], first.stderr
    saved.write_bytes(b"kept")                      # newer here than on the server: not fetched again
    second = run()
    assert second.returncode == 0 and saved.read_bytes() == b"kept", second.stderr
    metrics = httpx.get(url.split(API)[0] + "/metrics").text                       # the service answered 304
    assert ('domas_dataservice_requests_total{method="GET",route="/api/v1/datasets/{pid}/files/{path}/content",'
            'status="304"} 1.0') in metrics, metrics
