"""`domas copy` to and from a real xrootd: verification by the server's adler32, resume, peers agree."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zlib

import pytest

from tests.fixtures.common import run_domas, wait_until

MiB = 1024 * 1024


def domas(*args) -> subprocess.CompletedProcess:
    return run_domas(*args, check=True)


def test_upload_tree_then_download_it_back(tmp_path, state, xrootd_server):
    src = tmp_path / "run42"
    files = {"a.h5": os.urandom(5 * MiB + 3), "sub/b.h5": b"\x00" * 1000, "empty": b""}
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    remote = f"{xrootd_server.url}/{xrootd_server.path('up')}"
    up = json.loads(domas("copy", "--json", "--chunk-size", "1MiB", src, remote + "/").stdout)
    assert up["totals"]["done"] == 3
    for rel, data in files.items():
        assert xrootd_server.local(xrootd_server.path(f"up/run42/{rel}")).read_bytes() == data
        xrd = subprocess.run(["xrdadler32", f"{remote}/run42/{rel}"], capture_output=True, text=True, check=True)
        assert xrd.stdout.split()[0] == f"{zlib.adler32(data):08x}"
    by = {f["destination"].rsplit("run42/", 1)[1]: f for f in up["files"]}
    assert by["a.h5"]["adler32"] == f"{zlib.adler32(files['a.h5']):08x}"
    down = json.loads(domas("copy", "--json", f"{remote}/run42", tmp_path / "back").stdout)
    assert down["totals"]["done"] == 3
    for rel, data in files.items():
        assert (tmp_path / "back" / "run42" / rel).read_bytes() == data
    out = domas("checksum", f"{remote}/run42/a.h5", tmp_path / "back" / "run42" / "a.h5").stdout.split()
    assert out[0] == out[2] == f"{zlib.adler32(files['a.h5']):08x}"


def test_corrupted_destination_is_caught_by_the_server_checksum(tmp_path, state, xrootd_server):
    """A destination whose stored bytes differ from what was sent fails the server-checksum check."""
    from domas.agent.engine import CopyEngine
    from domas.transfer.expand import expand
    from domas.transfer.storage import resolve
    from domas.transfer.storage.faulty import Fault, FaultyStorage
    from domas.config import Config, CopyConfig

    f = tmp_path / "x.bin"
    data = os.urandom(2 * MiB)
    f.write_bytes(data)
    remote = f"{xrootd_server.url}/{xrootd_server.path('corrupt/x.bin')}"
    exp = expand([str(f)], remote)
    store, _ = resolve(remote)
    faulty = FaultyStorage(store, [Fault("pwrite", corrupt=True, offset=MiB)])
    job = exp.jobs[0]
    exp.jobs[0] = type(job)(job.src_store, job.src_path, job.src_stat, faulty, job.dst_path)
    cfg = Config(state_dir=str(state), copy=CopyConfig(chunk_size=MiB, backoff_base=0.01))
    import asyncio

    acct = asyncio.run(CopyEngine(cfg).run(exp))
    fs = acct.files[0]
    assert fs.status == "done" and fs.retries == 1 and acct.errors == {"checksum_mismatch": 1}, fs.error
    assert xrootd_server.local(xrootd_server.path("corrupt/x.bin")).read_bytes() == data


def test_killed_upload_resumes_and_keeps_the_checksum(tmp_path, state, xrootd_server):
    src = tmp_path / "big.bin"
    data = os.urandom(48 * MiB)
    src.write_bytes(data)
    remote = f"{xrootd_server.url}/{xrootd_server.path('resume/big.bin')}"
    proc = subprocess.Popen([sys.executable, "-m", "domas.cli", "copy", "--chunk-size", "256KiB", "--streams", "2",
                             str(src), remote], stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def journaled() -> bool:
        d = state / "journal"
        return d.exists() and any(len(p.read_bytes().splitlines()) > 10 for p in d.glob("*.jsonl"))

    wait_until(journaled, timeout=60, what="journal", proc=proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not xrootd_server.local(xrootd_server.path("resume/big.bin")).exists()
    r = json.loads(domas("copy", "--json", "--chunk-size", "256KiB", src, remote).stdout)
    f = r["files"][0]
    assert f["resumed_bytes"] > 0 and f["adler32"] == f"{zlib.adler32(data):08x}"
    assert xrootd_server.local(xrootd_server.path("resume/big.bin")).read_bytes() == data


@pytest.mark.parametrize("direction", ["upload", "download"])
def test_copy_outlasts_an_xrootd_restart(tmp_path, state, private_xrootd, direction):
    """Kill the server mid-copy, start it again 3 s later on the same port: the copy goes on
    (handles reopened, retries within copy.retry_budget_seconds) and ends verified."""
    server = private_xrootd
    data = os.urandom(32 * MiB)
    remote = f"{server.url}/{server.path('restart/big.bin')}"
    local = tmp_path / "big.bin"
    if direction == "upload":
        local.write_bytes(data)
        src, dst = str(local), remote
    else:
        server.put(server.path("restart/big.bin"), data)
        src, dst = remote, str(local)
    env = {**os.environ, "DOMAS_COPY_BACKOFF_MAX": "1"}      # retry at least once a second
    proc = subprocess.Popen([sys.executable, "-m", "domas.cli", "copy", "--json", "--chunk-size", "256KiB",
                             "--streams", "2", src, dst], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    journal = state / "journal"
    wait_until(lambda: journal.exists() and any(len(p.read_bytes().splitlines()) > 10 for p in journal.glob("*.jsonl")),
               60, "the copy to journal chunks", proc)
    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait(timeout=10)
    killed = time.monotonic()
    time.sleep(3)                                           # the server is away for 3 s
    server.start()
    back = time.monotonic()
    out, err = proc.communicate(timeout=120)
    resumed_after = time.monotonic() - back
    assert proc.returncode == 0, err
    f = json.loads(out)["files"][0]
    assert f["status"] == "done" and f["adler32"] == f"{zlib.adler32(data):08x}" and f["retries"] > 0
    stored = local.read_bytes() if direction == "download" else server.local(server.path("restart/big.bin")).read_bytes()
    assert stored == data
    print(f"{direction}: server away {back - killed:.1f} s, copy done {resumed_after:.2f} s after it was back")


def test_second_upload_to_the_same_xrootd_file_says_another_copy_is_running(tmp_path, state, xrootd_server):
    """XRootD has no advisory locks: copies on one host exclude each other by a lock beside the journal."""
    data = os.urandom(96 * MiB)        # 768 chunks on one stream: still running when it is stopped, even under load
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    remote = f"{xrootd_server.url}/{xrootd_server.path('twice/big.bin')}"
    first = subprocess.Popen([sys.executable, "-m", "domas.cli", "copy", "--chunk-size", "128KiB", "--streams", "1",
                              str(src), remote], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    journal = state / "journal"
    wait_until(lambda: journal.exists() and any(p.stat().st_size > 200 for p in journal.glob("*.jsonl")),
               60, "the first copy to journal chunks", first)
    os.kill(first.pid, signal.SIGSTOP)
    assert first.poll() is None, "the first copy ended before it could be stopped"
    try:
        second = run_domas("copy", "--chunk-size", "128KiB", src, remote)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert second.returncode == 75 and f"another copy of {remote} is running" in second.stderr, second.stderr
    assert xrootd_server.local(xrootd_server.path("twice/big.bin")).read_bytes() == data
    assert not list(journal.glob("*.lock"))                  # the lock file goes with the copy
