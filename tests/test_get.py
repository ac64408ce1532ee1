"""`domas get` and `domas serve` as users run them: a real server, real client processes, real signals."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import zlib
from pathlib import Path

import httpx
import pytest

from domas import cli
from domas.agent.cli_get import expand_dataset, safe_relpath, url_file_name
from domas.dataservice.app import create_app
from domas.errors import ConnectionLost, ImpossibleRange, NotFound, UnsafePath, Unsupported, UsageError
from domas.transfer.storage import resolve
from domas.transfer.storage.http import HTTPStorage, parse_digest
from tests.fixtures.common import free_port, stop_process, wait_until
from tests.fixtures.dataservice import DATASET_PATH, _put

KiB = 1024
MiB = 1024 * KiB


@pytest.mark.parametrize("rel", ["../x", "a/../../x", "/etc/passwd", "a//b", "./a", "a\\b", "a\0b", "", None])
def test_listed_paths_that_would_leave_dest_are_refused(rel):
    with pytest.raises(UnsafePath):
        safe_relpath(rel)


def test_url_file_names():
    assert url_file_name("/api/v1/datasets/P/files/sub/scan%20%C3%BC.h5/content") == "scan ü.h5"
    assert url_file_name("/downloads/run7.nxs?x=1") == "run7.nxs"
    with pytest.raises(UsageError):
        url_file_name("/api/v1/datasets/P/files/%2E%2E/content")


class SlowLink:
    """The real app behind a link that adds `delay` seconds to every content request (0: full speed)."""

    def __init__(self, app) -> None:
        self.app, self.delay = app, 0.0
        # a path ending: flip one bit of the file's first byte in every response that carries it, in
        # transit. One flipped byte per download: the same flip at several chunk starts can cancel
        # out in adler32 (equal spacing, opposite signs), which no checksum test should rely on.
        self.corrupt = ""
        self.requests: list[tuple[str, str]] = []      # (method, path) of every request, in order
        self.ranges: list[tuple[str, str]] = []        # (path, Range header) of every ranged GET, in order
        self.before: dict[str, object] = {}              # path ending -> a callable run before its first request
        self.waiting: dict[str, int] = {}                # method -> requests inside the delay now
        self.most_waiting: dict[str, int] = {}           # method -> the most that were at once

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            self.requests.append((scope["method"], scope["path"]))
            asked = dict(scope.get("headers") or []).get(b"range")
            if scope["method"] == "GET" and asked:
                self.ranges.append((scope["path"], asked.decode()))
            for ending in [e for e in self.before if scope["path"].endswith(e)]:
                self.before.pop(ending)()
        if scope["type"] == "http" and scope["path"].endswith("/content") and self.delay:
            method = scope["method"]
            self.waiting[method] = self.waiting.get(method, 0) + 1
            self.most_waiting[method] = max(self.most_waiting.get(method, 0), self.waiting[method])
            try:
                await asyncio.sleep(self.delay)
            finally:
                self.waiting[method] -= 1
        ranged = dict(scope.get("headers") or []).get(b"range", b"bytes=0-")
        if scope["type"] == "http" and self.corrupt and scope["path"].endswith(self.corrupt) and \
                ranged.replace(b" ", b"").startswith(b"bytes=0-"):
            inner = send

            async def send(message):
                body = message.get("body") or b""
                if message["type"] == "http.response.body" and body:
                    message = {**message, "body": bytes([body[0] ^ 0x40]) + body[1:]}
                await inner(message)
        await self.app(scope, receive, send)


@pytest.fixture
def state(tmp_path, monkeypatch):
    for var in ("DOMAS_TOKEN", "DOMAS_SERVER", "DOMAS_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DOMAS_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


@pytest.fixture
def served(data_world, serve_app, state):
    link = SlowLink(create_app(data_world.catalogue, data_world.tiers, now=data_world.now))
    return serve_app(link), data_world, link


def domas(*args, env_extra=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "domas.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=120)


def get_json(*args, **kw) -> tuple[subprocess.CompletedProcess, dict]:
    r = domas("get", "--json", *args, **kw)
    return r, (json.loads(r.stdout) if r.stdout.strip() else {})


def assert_tree(dest: Path, data: dict[str, bytes]) -> None:
    for rel, content in data.items():
        assert (dest / rel).read_bytes() == content, rel
    left = [p.name for p in dest.rglob("*") if p.name.endswith(".domas-part")]
    assert not left, f"partial files left behind: {left}"


def test_get_dataset_downloads_every_file_verified_then_skips_them(served, tmp_path):
    url, world, _ = served
    dest = tmp_path / "dest"
    r, summary = get_json("--server", url, "--chunk-size", "256KiB", world.pids["open"], dest)
    assert r.returncode == 0, r.stderr
    assert_tree(dest, world.data)
    by_dest = {Path(f["destination"]).relative_to(dest).as_posix(): f for f in summary["files"]}
    assert set(by_dest) == set(world.data)
    for rel, data in world.data.items():
        assert by_dest[rel]["adler32"] == f"{zlib.adler32(data):08x}" and by_dest[rel]["status"] == "done"
    assert summary["dataset"]["pid"] == world.pids["open"]
    r, again = get_json("--server", url, world.pids["open"], dest)
    assert r.returncode == 0 and {f["status"] for f in again["files"]} == {"skipped"}


def test_a_dataset_download_sends_no_head_and_asks_again_for_a_file_changed_after_the_listing(served, tmp_path):
    url, world, link = served
    pid = world.pids["open"]
    r, summary = get_json("--server", url, pid, tmp_path / "a")
    assert r.returncode == 0 and summary["totals"]["verified"] == len(world.data), r.stderr
    heads = [path for method, path in link.requests if method == "HEAD"]
    assert heads == [], f"the listing says all a HEAD would; sent {heads}"
    # big.bin is rewritten between the listing and its first range: that range is refused (412, its
    # ETag changed), the client forgets the listing's word for it and asks the server again
    new = os.urandom(2 * MiB + 3)
    link.requests.clear()
    link.before["/files/big.bin/content"] = lambda: _put(world, pid, DATASET_PATH, "big.bin", new, {"central": "verified"})
    r, summary = get_json("--server", url, pid, tmp_path / "b")
    by_name = {Path(f["destination"]).name: f for f in summary["files"]}
    assert r.returncode == 8 and by_name["big.bin"]["error_kind"] == "checksum_mismatch", r.stderr
    assert f"{zlib.adler32(world.data['big.bin']):08x}" in by_name["big.bin"]["error"]   # the listed sum
    assert [p for m, p in link.requests if m == "HEAD"] == [p for m, p in link.requests
                                                            if m == "HEAD" and p.endswith("/big.bin/content")] != []
    assert not (tmp_path / "b" / "big.bin").exists()
    r, summary = get_json("--server", url, pid, tmp_path / "b")      # run again: the new listing, the new bytes
    assert r.returncode == 0 and summary["totals"]["verified"] == 1, r.stderr
    assert (tmp_path / "b" / "big.bin").read_bytes() == new


def test_a_fresh_download_asks_its_first_chunks_while_the_engine_imports_and_no_range_twice(served, tmp_path):
    """The first chunks go out as soon as the listing names their files, before the copy engine
    exists (`meanwhile` stands for its import); the engine then takes them instead of asking again:
    every range is asked for exactly once. A download that finds its files up to date asks none."""
    url, world, link = served
    pid, chunk = world.pids["open"], 256 * KiB

    def engine_importing() -> None:
        wait_until(lambda: len(link.ranges) >= 4, timeout=10, what="4 ranges asked before the engine")
    exp, _info, _sums = expand_dataset(url, "", pid, str(tmp_path / "probe"), engine_importing, early=(chunk, 4))
    assert len(link.ranges) == 4 and len({p for p, _ in link.ranges}) == 1, link.ranges
    assert sorted(r for _, r in link.ranges) == sorted(f"bytes={i * chunk}-{(i + 1) * chunk - 1}" for i in range(4))
    exp.jobs[0].src_store.close()

    link.ranges.clear()
    r, summary = get_json("--server", url, "--chunk-size", "256KiB", pid, tmp_path / "dest")
    assert r.returncode == 0 and summary["totals"]["verified"] == len(world.data), r.stderr
    assert_tree(tmp_path / "dest", world.data)
    expected = sum(-(-len(data) // chunk) for data in world.data.values())       # an empty file asks none
    assert len(link.ranges) == len(set(link.ranges)) == expected, sorted(link.ranges)

    link.ranges.clear()
    r, again = get_json("--server", url, "--chunk-size", "256KiB", pid, tmp_path / "dest")
    assert r.returncode == 0 and {f["status"] for f in again["files"] if f["destination"]} == {"skipped"}, r.stderr
    assert link.ranges == [], "files already downloaded: not one byte is asked for"


def test_a_files_time_and_rate_count_from_its_first_early_byte(served, tmp_path):
    """Behind a link where every content request takes 0.3 s, no file can arrive in less: a file
    whose only chunk was asked for early (while the engine imported) reports the time since then,
    not since the engine took it up (which showed rates above the link's)."""
    url, world, link = served
    link.delay = 0.3
    r, summary = get_json("--server", url, world.pids["open"], tmp_path / "dest")
    assert r.returncode == 0, r.stderr
    done = [f for f in summary["files"] if f["status"] == "done" and f["size"] > 0]
    assert len(done) == 3 and min(f["seconds"] for f in done) >= 0.3, done


def test_an_early_chunk_that_failed_or_whose_file_changed_is_asked_again(http_files):
    """An early read changes when bytes travel, never what is accepted: one that failed is sent
    again when the engine asks for it, and one whose file changed meanwhile ends in SourceChanged
    (412 on the ETag the reader holds), as any range does."""
    from domas.errors import SourceChanged

    path = http_files.root / "a.bin"
    path.write_bytes(b"a" * 3000)
    store = HTTPStorage(http_files.url)
    st = store.stat("/a.bin")
    store.read_early(st, [(0, 1000), (1000, 1000)])
    reader = store.open_read("/a.bin")
    assert reader.pread(0, 1000) == b"a" * 1000 and reader.pread(1000, 1000) == b"a" * 1000
    assert store.take_early(st, 0, 1000) is None              # each taken once
    path.unlink()
    store.read_early(st, [(2000, 1000)])                       # 404 meanwhile: fails, not kept
    wait_until(lambda: not store._early[(st.path, st.ident, 2000, 1000)]._thread.is_alive(), timeout=5)
    with pytest.raises(NotFound):
        reader.pread(2000, 1000)                               # asked again, and the answer reported
    path.write_bytes(b"b" * 4000)                              # a new ETag
    store.read_early(st, [(0, 1000)])
    with pytest.raises(SourceChanged):
        reader.pread(0, 1000)
    store.close()


def test_get_takes_the_server_from_the_environment_and_a_single_url(served, tmp_path):
    url, world, _ = served
    r = domas("get", "-q", world.pids["open"], tmp_path / "a", env_extra={"DOMAS_SERVER": url})
    assert r.returncode == 0, r.stderr
    assert_tree(tmp_path / "a", world.data)
    file_url = f"{url}/api/v1/datasets/{world.pids['open']}/files/sub/scan%20%C3%BC%201.h5/content"
    (tmp_path / "b").mkdir()
    assert domas("get", "-q", file_url, tmp_path / "b").returncode == 0
    assert (tmp_path / "b" / "scan ü 1.h5").read_bytes() == world.data["sub/scan ü 1.h5"]
    assert domas("get", "-q", file_url, tmp_path / "named.h5").returncode == 0
    assert (tmp_path / "named.h5").read_bytes() == world.data["sub/scan ü 1.h5"]


def test_killed_download_resumes_from_its_journal(served, tmp_path, state):
    url, world, link = served
    data = os.urandom(6 * MiB + 5)
    _put(world, world.pids["open"], DATASET_PATH, "resume.bin", data, {"central": "verified"})
    link.delay = 0.03
    dest = tmp_path / "dest"
    args = [sys.executable, "-m", "domas.cli", "get", "--server", url, "--chunk-size", "64KiB", "--streams", "2",
            world.pids["open"], str(dest)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    journal_dir = state / "journal"

    def journaled_enough() -> bool:
        return journal_dir.exists() and any(len(p.read_bytes().splitlines()) > 20 for p in journal_dir.glob("*.jsonl"))

    wait_until(journaled_enough, timeout=60, what="the download journal to fill", proc=proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert not (dest / "resume.bin").exists(), "the final name must not appear before the file is complete"
    link.delay = 0.0
    r, summary = get_json("--server", url, "--chunk-size", "64KiB", world.pids["open"], dest)
    assert r.returncode == 0, r.stderr
    assert sum(f["resumed_bytes"] for f in summary["files"]) >= 20 * 64 * KiB
    assert "resuming" in r.stderr
    assert_tree(dest, {**world.data, "resume.bin": data})
    assert not list(journal_dir.glob("*.jsonl"))


def test_corrupted_bytes_from_the_server_fail_with_exit_8(served, tmp_path):
    url, world, link = served
    link.corrupt = "/files/big.bin/content"     # damaged on the way (the server refuses a rotten copy itself)
    dest = tmp_path / "dest"
    r, summary = get_json("--server", url, world.pids["open"], dest, env_extra={"DOMAS_COPY_MAX_RETRIES": "1"})
    assert r.returncode == 8, r.stderr
    failed = [f for f in summary["files"] if f["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["error_kind"] == "checksum_mismatch"
    assert f"{zlib.adler32(world.data['big.bin']):08x}" in failed[0]["error"]
    assert not (dest / "big.bin").exists()
    assert (dest / "empty.dat").exists() and (dest / "old" / "archived.h5").exists()


def test_embargo_refuses_without_the_token_and_the_token_opens_it(data_world, serve_app, state, tmp_path):
    open_url = serve_app(create_app(data_world.catalogue, data_world.tiers, now=data_world.now))
    pid = data_world.pids["embargoed"]
    r = domas("get", "--server", open_url, pid, tmp_path / "x")       # under embargo: it does not exist
    assert r.returncode == 3 and "there is no dataset with PID" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x" / "secret.h5").exists()
    guarded = serve_app(create_app(data_world.catalogue, data_world.tiers, token="t0k", now=data_world.now))
    r = domas("get", "--server", guarded, pid, tmp_path / "y")
    assert r.returncode == 4 and "token" in r.stderr
    r = domas("get", "-q", "--server", guarded, pid, tmp_path / "y", env_extra={"DOMAS_TOKEN": "t0k"})
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "y" / "secret.h5").read_bytes() == b"embargoed bytes" * 100


def test_files_without_a_verified_copy_are_reported_and_the_rest_downloaded(served, tmp_path):
    url, world, _ = served
    world.catalogue.set_replica(world.pids["open"], "big.bin", "central", "stale")
    r, summary = get_json("--server", url, world.pids["open"], tmp_path / "d")
    assert r.returncode == 3, r.stderr
    failed = [f for f in summary["files"] if f["status"] == "failed"]
    assert len(failed) == 1 and "no verified copy" in failed[0]["error"]
    assert_tree(tmp_path / "d", {k: v for k, v in world.data.items() if k != "big.bin"})


def test_unknown_pid_and_a_file_as_destination_are_one_sentence(served, tmp_path):
    url, world, _ = served
    r = domas("get", "--server", url, "CSTR:17058.11.HEPS.nope.0", tmp_path / "d")
    assert r.returncode == 3 and "there is no dataset with PID CSTR:17058.11.HEPS.nope.0" in r.stderr
    (tmp_path / "file").write_text("x")
    r = domas("get", "--server", url, world.pids["open"], tmp_path / "file")
    assert r.returncode == 2 and "is a file; give a directory" in r.stderr and "Traceback" not in r.stderr


def test_unreachable_server_is_one_sentence(state, tmp_path):
    r = domas("get", "--server", f"http://127.0.0.1:{free_port()}", "CSTR:17058.11.HEPS.x.1", tmp_path / "d")
    assert r.returncode == ConnectionLost.exit_code and "connection to the data service failed" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_http_storage_is_a_read_only_source(served):
    url, world, _ = served
    store, path = resolve(f"{url}/api/v1/datasets/{world.pids['open']}/files/big.bin/content")
    assert isinstance(store, HTTPStorage) and store.url(path).startswith(url)
    data = world.data["big.bin"]
    st = store.stat(path)
    assert st.size == len(data) and st.mtime == 1.7e9 and st.ident.startswith('"')
    assert store.checksum(path) == f"{zlib.adler32(data):08x}" and store.checksum(path, "xxh3") is None
    with store.open_read(path) as reader:
        assert reader.pread(5, 100) == data[5:105]
        assert reader.pread(len(data) - 3, 100) == data[-3:]
        assert reader.pread(len(data), 10) == b""
        with pytest.raises(ImpossibleRange):
            reader.pread(-1, 10)
    for write in (lambda: store.open_write(path), lambda: store.remove(path), lambda: store.makedirs(path),
                  lambda: store.rename(path, path + "x"), lambda: store.listdir(path)):
        with pytest.raises(Unsupported):
            write()
    with pytest.raises(NotFound):
        store.stat(path.replace("big.bin", "nope.bin"))
    with pytest.raises(NotFound, match="there is no dataset"):           # under embargo: 404, not 403
        store.stat(f"/api/v1/datasets/{world.pids['embargoed']}/files/secret.h5/content")
    dead = HTTPStorage(f"http://127.0.0.1:{free_port()}", connect_timeout=2)
    with pytest.raises(ConnectionLost) as err:
        dead.stat("/x")
    assert not dead.is_permanent(err.value) and store.is_permanent(NotFound("x"))
    assert parse_digest("MD5=abc, ADLER32=0A0B0C0D", "adler32") == "0a0b0c0d"


def test_domas_serve_publishes_the_configured_catalogue(data_world, state, tmp_path):
    env = dict(os.environ, DOMAS_CATALOGUE_URL=f"sqlite://{data_world.catalogue.path}",
               DOMAS_STORAGE_BEAMLINE=data_world.tiers["beamline"], DOMAS_STORAGE_CENTRAL=data_world.tiers["central"],
               DOMAS_STORAGE_TAPE=data_world.tiers["tape"], DOMAS_TOKEN="srv")
    proc = subprocess.Popen([sys.executable, "-m", "domas.cli", "serve", "--listen", "127.0.0.1:0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.startswith("domas data service on http://127.0.0.1:"), line + proc.stderr.read()
        url = line.split()[4].rstrip("/")

        def healthy() -> bool:
            try:
                return httpx.get(url + "/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, timeout=20, what="domas serve", proc=proc)
        assert httpx.get(url + "/api/v1/datasets").status_code == 401
        r = domas("get", "-q", "--server", url, data_world.pids["open"], tmp_path / "d",
                  env_extra={"DOMAS_TOKEN": "srv"})
        assert r.returncode == 0, r.stderr
        assert_tree(tmp_path / "d", data_world.data)
        port = int(url.rsplit(":", 1)[1])
        busy = domas("serve", "--listen", f"127.0.0.1:{port}", env_extra=env)
        assert busy.returncode == 78 and "controller.http_listen" in busy.stderr and "already in use" in busy.stderr
    finally:
        stop_process(proc)
    assert proc.returncode == 0


# -- light and clear ---------------------------------------------------------------------------------

class NoDigest:
    """The app behind a server that sends no Digest header (so only the catalogue's sums can check)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        async def strip(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [(k, v) for k, v in message["headers"] if k.lower() != b"digest"]}
            await send(message)

        await self.app(scope, receive, strip)


def test_files_are_verified_by_digest_or_catalogue_and_unverifiable_ones_are_reported(data_world, serve_app, state,
                                                                                       tmp_path):
    from domas.catalogue import FileRecord, Replica

    pid = data_world.pids["open"]
    nosum = b"no checksum anywhere" * 1000
    on_tier = data_world.on_tier("central", "nosum.dat")
    on_tier.write_bytes(nosum)
    data_world.catalogue.upsert_files([FileRecord(pid, "nosum.dat", len(nosum), "", mtime=1.7e9,
                                                  replicas={"central": Replica("verified")})])
    with_digest = serve_app(create_app(data_world.catalogue, data_world.tiers, now=data_world.now))
    r, summary = get_json("--server", with_digest, pid, tmp_path / "a")
    assert r.returncode == 0, r.stderr
    verdict = {Path(f["destination"]).name: f["verification"] for f in summary["files"]}
    assert verdict == {"big.bin": "verified", "scan ü 1.h5": "verified", "empty.dat": "verified",
                       "archived.h5": "verified", "nosum.dat": "unverified"}
    assert summary["totals"]["verified"] == 4 and summary["totals"]["unverified"] == 1
    bare = serve_app(NoDigest(create_app(data_world.catalogue, data_world.tiers, now=data_world.now)))
    r = domas("get", "--server", bare, pid, tmp_path / "b")          # the catalogue's sums still check
    assert r.returncode == 0, r.stderr
    assert "5 downloaded (4 verified, 1 unverified)" in r.stderr
    assert "unverified" in r.stderr and "nosum.dat" in r.stderr


def test_bytes_that_differ_from_the_catalogue_fail_even_without_a_digest(data_world, serve_app, state, tmp_path):
    pid = data_world.pids["open"]
    link = SlowLink(create_app(data_world.catalogue, data_world.tiers, now=data_world.now))
    link.corrupt = "/files/big.bin/content"
    bare = serve_app(NoDigest(link))
    r, summary = get_json("--server", bare, pid, tmp_path / "d", env_extra={"DOMAS_COPY_MAX_RETRIES": "1"})
    failed = {Path(f["destination"]).name: f for f in summary["files"] if f["status"] == "failed"}
    assert r.returncode == 8 and set(failed) == {"big.bin"}, r.stderr
    # the listing's catalogue sum stands in for the missing Digest: the catalogue's adler32 is named
    catalogued = f"{zlib.adler32(data_world.data['big.bin']):08x}"
    assert failed["big.bin"]["error_kind"] == "checksum_mismatch" and catalogued in failed["big.bin"]["error"]
    assert not (tmp_path / "d" / "big.bin").exists()               # never left under its final name


def test_json_summary_is_printed_after_ctrl_c(served, tmp_path):
    url, world, link = served
    link.delay = 0.05
    dest = tmp_path / "dest"
    proc = subprocess.Popen([sys.executable, "-m", "domas.cli", "get", "--json", "--server", url, "--chunk-size",
                             "64KiB", "--streams", "2", world.pids["open"], str(dest)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: any(dest.rglob("*domas-part*")), timeout=60, what="the download to start", proc=proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    summary = json.loads(out)
    assert summary["interrupted"] is True and "Traceback" not in err and "resume" in err
    assert summary["totals"]["files"] >= 1


def test_a_download_keeps_16_ranges_in_flight_unless_told_otherwise(served, tmp_path):
    """16 ranges in flight by default (8, 4 per core here, lost 0.3-0.5 % of a 100 Mbit/s link); a
    configured copy.streams and --streams each win."""
    url, world, link = served
    link.delay = 0.2
    cases = [((), {}, 16), (("--streams", "6"), {}, 6)]
    cfg = tmp_path / "domas.toml"
    cfg.write_text("[copy]\nstreams = 3\n")
    cases.append(((), {"DOMAS_CONFIG": str(cfg)}, 3))
    for i, (flags, env, streams) in enumerate(cases):
        for rel in world.data:      # an old copy of each file: no early ranges (they would add to the count)
            (tmp_path / f"d{i}" / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / f"d{i}" / rel).write_bytes(b"old")
        link.most_waiting.clear()
        r, summary = get_json("--server", url, "--chunk-size", "64KiB", *flags, world.pids["open"], tmp_path / f"d{i}",
                              env_extra=env)
        assert r.returncode == 0 and summary["totals"]["verified"] == len(world.data), r.stderr
        assert link.most_waiting["GET"] == streams, (flags, env, link.most_waiting)


def test_peak_memory_stays_bounded_at_16_streams(served, tmp_path):
    """128 MiB through 16 streams: 8 MiB chunks held ~450 MiB resident; 1 MiB chunks stay well under 200."""
    url, world, _ = served
    data = os.urandom(128 * MiB)
    _put(world, world.pids["open"], DATASET_PATH, "large.bin", data, {"central": "verified"})
    del data
    probe = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True); "
             "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    r = subprocess.run([sys.executable, "-c", probe, sys.executable, "-m", "domas.cli", "get", "-q", "--streams", "16",
                        "--server", url, world.pids["open"], str(tmp_path / "dest")],
                       capture_output=True, text=True, timeout=120)
    code, peak_kib = map(int, r.stdout.split())
    assert code == 0, r.stderr
    assert peak_kib < 200 * 1024, f"peak RSS {peak_kib // 1024} MiB"
    assert (tmp_path / "dest" / "large.bin").stat().st_size == 128 * MiB


def test_progress_names_files_by_their_local_path_in_binary_units():
    import io

    from domas.agent.accounting import FileStats
    from domas.agent.progress import RichReporter, binary_rate, file_label

    fs = FileStats("http://h/api/v1/datasets/P/files/sub/scan%201.h5/content", "/home/ada/dest/sub/scan 1.h5", 10)
    assert file_label(fs) == "/home/ada/dest/sub/scan 1.h5" and "content" not in file_label(fs, 3)
    assert file_label(FileStats("s", "/x/" + "d" * 100 + "/run7.h5", 1)).endswith("d/run7.h5")
    assert binary_rate(3 * 1024 * 1024) == "3.0 MiB/s" and binary_rate(1500) == "1.5 KiB/s"
    out = io.StringIO()
    rep = RichReporter(out)
    rep.file_started(fs)
    assert [t.description for t in rep.progress.tasks] == ["   1  /home/ada/dest/sub/scan 1.h5"]
    fs.status = "skipped"
    rep.file_done(fs)
    assert "up to date" in out.getvalue() and "scan 1.h5" in out.getvalue()


class FlipEveryChunk:
    """Flips bit 0x40 of the first byte of every response body of one path: at chunk starts
    0, 1, 2 and 3 MiB, with those bytes' bit set as 0/1/1/0, the four changes cancel in adler32."""

    def __init__(self, app, path_end: str) -> None:
        self.app, self.path_end = app, path_end

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"].endswith(self.path_end):
            inner = send

            async def send(message):
                body = message.get("body") or b""
                if message["type"] == "http.response.body" and body:
                    message = {**message, "body": bytes([body[0] ^ 0x40]) + body[1:]}
                await inner(message)
        await self.app(scope, receive, send)


def test_a_corruption_adler32_cannot_see_is_caught_by_the_catalogues_xxh3(data_world, serve_app, state, tmp_path):
    import xxhash

    from domas.catalogue import FileRecord, Replica

    data = bytearray(os.urandom(4 * MiB))
    for offset, bit in ((0, 0), (MiB, 0x40), (2 * MiB, 0x40), (3 * MiB, 0)):
        data[offset] = (data[offset] & ~0x40) | bit
    data = bytes(data)
    flipped = bytearray(data)
    for offset in (0, MiB, 2 * MiB, 3 * MiB):
        flipped[offset] ^= 0x40
    assert zlib.adler32(bytes(flipped)) == zlib.adler32(data) and bytes(flipped) != data      # the blind spot
    pid = data_world.pids["open"]
    data_world.on_tier("central", "blind.bin").write_bytes(data)
    data_world.catalogue.upsert_files([FileRecord(pid, "blind.bin", len(data), f"{zlib.adler32(data):08x}",
                                                  xxhash.xxh3_64_hexdigest(data), mtime=1.7e9,
                                                  replicas={"central": Replica("verified")})])
    url = serve_app(FlipEveryChunk(create_app(data_world.catalogue, data_world.tiers, now=data_world.now),
                                   "/files/blind.bin/content"))
    r, summary = get_json("--server", url, "--chunk-size", "1MiB", "--streams", "4", pid, tmp_path / "d")
    failed = [f for f in summary["files"] if f["status"] == "failed"]
    assert r.returncode == 8 and [Path(f["destination"]).name for f in failed] == ["blind.bin"], r.stderr
    assert "xxh3" in failed[0]["error"] and not (tmp_path / "d" / "blind.bin").exists()


def test_each_module_registers_the_commands_the_cli_names_it_for():
    """cli.COMMAND_MODULES says which module to import for a command; it must match what each registers."""
    for name, commands in cli.COMMAND_MODULES.items():
        sub = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(name).register(sub)
        assert tuple(sub.choices) == commands, name


def test_get_starts_without_importing_the_other_commands():
    """`domas get` imports its own command module only: not the controller, data service or archive
    CLIs (a shorter start for every download); `domas --help` still lists every command."""
    probe = ("import sys\nfrom domas import cli\ntry:\n    cli.main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
             "print(sorted(m for m in sys.modules if m.startswith(('domas.controller', 'domas.dataservice', "
             "'domas.archive', 'domas.cli_up', 'domas.cli_publish'))), file=sys.stderr)")
    for argv in (["get", "--help"], ["--config", "/nonexistent.toml", "get", "--help"]):
        r = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, timeout=60)
        assert "usage: domas get" in r.stdout
        assert r.stderr.strip() == "[]", r.stderr
    r = subprocess.run([sys.executable, "-m", "domas.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert all(c in r.stdout for c in ("get", "serve", "controller", "catalogue", "publish")), r.stdout


def test_a_finished_get_ends_the_process_without_the_interpreters_teardown(served, tmp_path):
    """Run as the program, `domas get` ends at once after its summary (flushed, complete): atexit
    handlers such as XRootD's walk of every object in memory do not run. Called in-process
    (argv given), main() returns as before."""
    url, world, _ = served
    probe = ("import atexit, sys\natexit.register(lambda: sys.stderr.write('teardown ran\\n'))\n"
             "from domas import cli\nsys.argv = ['domas'] + sys.argv[1:]\nsys.exit(cli.main())")
    r = subprocess.run([sys.executable, "-c", probe, "get", "--json", "--server", url, world.pids["open"],
                        tmp_path / "dest"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "teardown ran" not in r.stderr
    assert json.loads(r.stdout)["totals"]["done"] == len(world.data)
    assert_tree(tmp_path / "dest", world.data)
    assert cli.main(["get", "-q", "--server", url, world.pids["open"], str(tmp_path / "again")]) == 0
    assert_tree(tmp_path / "again", world.data)


def test_get_downloads_without_importing_httpx_http_client_or_email(served, tmp_path):
    """`domas get` reads over its own wire (transfer/storage/httpwire.py): httpx, httpcore and h11
    (0.1 s of its start, half its CPU per GiB), http.client and the email package it parses heads
    with (~10 ms of each start) are not imported for a whole dataset download."""
    url, world, _ = served
    probe = ("import sys\nfrom domas import cli\nrc = cli.main(sys.argv[1:])\n"
             "print(rc, sorted(m for m in sys.modules if m.split('.')[0] in ('httpx', 'httpcore', 'h11', 'email')\n"
             "                 or m == 'http.client'))")
    r = subprocess.run([sys.executable, "-c", probe, "get", "-q", "--server", url, world.pids["open"],
                        str(tmp_path / "dest")], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "0 []", r.stdout + r.stderr
    assert_tree(tmp_path / "dest", world.data)


def test_an_http_data_service_costs_no_ca_bundle_and_https_keeps_verification(http_files, https_files,
                                                                              monkeypatch):
    """No TLS context (no CA bundle loaded) for an http:// endpoint; https verifies the server with
    the system's trust (here SSL_CERT_FILE) and refuses an untrusted certificate (retriable
    ConnectionLost, one sentence)."""
    (http_files.root / "a.bin").write_bytes(b"x" * 1000)
    plain = HTTPStorage(http_files.url)
    assert plain.open_read("/a.bin").pread(0, 1000) == b"x" * 1000
    assert plain._pool._tls is None
    (https_files.root / "b.bin").write_bytes(b"y" * 1000)
    tls = HTTPStorage(https_files.url)
    assert tls.open_read("/b.bin").pread(0, 1000) == b"y" * 1000
    ctx = tls._pool._tls
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname and ctx.cert_store_stats()["x509_ca"] > 0
    monkeypatch.delenv("SSL_CERT_FILE")
    untrusted = HTTPStorage(https_files.url)
    with pytest.raises(ConnectionLost, match="TLS.*CERTIFICATE_VERIFY_FAILED"):
        untrusted.stat("/b.bin")
    for store in (plain, tls, untrusted):
        store.close()


def _more_files(world, folder: str, n: int) -> dict[str, bytes]:
    """n new small files in `folder` of the open dataset, catalogued with a verified central copy."""
    made = {f"{folder}/f{i:03d}.dat": os.urandom(500 + i) for i in range(n)}
    for rel, data in made.items():
        _put(world, world.pids["open"], DATASET_PATH, rel, data, {"central": "verified"})
    return made


def _manifest(tmp_path: Path, url: str, pid: str, rels) -> Path:
    from urllib.parse import quote

    path = tmp_path / "chosen.manifest"
    path.write_text("".join(f"{url}/api/v1/datasets/{quote(pid, safe=':/')}/files/{quote(r, safe='/')}/content\n"
                            for r in rels))
    return path


def test_a_large_manifest_reads_its_datasets_listing_once_instead_of_a_head_per_file(served, tmp_path):
    url, world, link = served
    pid = world.pids["open"]
    many = _more_files(world, "many", 40)
    chosen = sorted(many)[:30]
    link.requests.clear()
    r, summary = get_json("--server", url, "--manifest", _manifest(tmp_path, url, pid, chosen), tmp_path / "d")
    assert r.returncode == 0 and summary["totals"]["verified"] == 30, r.stderr
    assert_tree(tmp_path / "d", {rel: many[rel] for rel in chosen})
    assert [m for m, _ in link.requests].count("HEAD") == 0          # one listing, not 30 HEADs
    assert sum(p.endswith("/files") for _, p in link.requests) == 1


def test_a_small_manifests_heads_go_out_together(served, tmp_path):
    url, world, link = served
    pid = world.pids["open"]
    small = _more_files(world, "few", 8)
    link.delay = 0.4                   # every content request, HEAD or GET, waits 0.4 s
    started = time.monotonic()
    r, summary = get_json("--server", url, "--streams", "8", "--manifest", _manifest(tmp_path, url, pid, small),
                          tmp_path / "d")
    wall = time.monotonic() - started
    assert r.returncode == 0 and summary["totals"]["verified"] == 8, r.stderr
    assert_tree(tmp_path / "d", small)
    # 8 HEADs one after the other take 3.2 s before the first GET; together 0.4 s, then the GETs 0.4 s
    assert [m for m, _ in link.requests].count("HEAD") == 8 and wall < 3.0, wall
    assert link.most_waiting["HEAD"] >= 4, link.most_waiting      # the server saw them at once
