"""`domas copy` and `domas checksum` as a user runs them: real files, real processes, real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import xxhash

from tests.fixtures.common import run_domas, wait_until

MiB = 1024 * 1024


def domas(*args, check=False, **kw) -> subprocess.CompletedProcess:
    return run_domas(*args, check=check, timeout=120, **kw)


def make_tree(root: Path) -> dict[str, bytes]:
    files = {
        "big.bin": os.urandom(3 * MiB + 17),
        "empty": b"",
        "sub/deeper/x.h5": os.urandom(1000),
        "odd name with spaces ü.dat": b"odd",
        "sub/new\nline": b"newline in name",
    }
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    (root / "empty_dir").mkdir()
    return files


def test_copy_tree_with_odd_names_and_json_summary(tmp_path, state):
    src = tmp_path / "src"
    files = make_tree(src)
    out = domas("copy", "--json", "--chunk-size", "1MiB", str(src) + "/", tmp_path / "dst", check=True)
    summary = json.loads(out.stdout)
    assert summary["totals"]["done"] == len(files) and summary["totals"]["failed"] == 0
    for rel, data in files.items():
        assert (tmp_path / "dst" / rel).read_bytes() == data
    assert (tmp_path / "dst" / "empty_dir").is_dir()
    by = {Path(f["source"]).relative_to(src).as_posix(): f for f in summary["files"]}
    big = by["big.bin"]
    assert big["adler32"] == f"{zlib.adler32(files['big.bin']):08x}" and len(big["adler32"]) == 8
    assert big["xxh3"] == xxhash.xxh3_64_hexdigest(files["big.bin"])
    assert {"seconds", "retries", "destination", "size"} <= set(big)
    assert not list((tmp_path / "dst").rglob("*.domas-part"))
    # a second run finds everything up to date and copies nothing
    again = json.loads(domas("copy", "--json", str(src) + "/", tmp_path / "dst", check=True).stdout)
    assert again["totals"]["skipped"] == len(files) and again["totals"]["bytes_copied"] == 0


def test_directory_layout_is_the_same_on_every_run(tmp_path, state):
    src = tmp_path / "run42"
    src.mkdir()
    (src / "a").write_bytes(b"1")
    for _ in range(2):
        domas("copy", src, tmp_path / "dst", check=True)
    assert sorted(p.relative_to(tmp_path / "dst").as_posix() for p in (tmp_path / "dst").rglob("*")) == [
        "run42", "run42/a"]


def test_copy_single_file_into_directory_and_to_name(tmp_path, state):
    f = tmp_path / "a.bin"
    f.write_bytes(b"abc")
    (tmp_path / "d").mkdir()
    domas("copy", f, tmp_path / "d", check=True)
    domas("copy", f, tmp_path / "renamed.bin", check=True)
    domas("copy", f, str(tmp_path / "newdir") + "/", check=True)
    assert (tmp_path / "d" / "a.bin").read_bytes() == b"abc"
    assert (tmp_path / "renamed.bin").read_bytes() == b"abc"
    assert (tmp_path / "newdir" / "a.bin").read_bytes() == b"abc"


def test_copy_keeps_the_mtime_to_the_nanosecond(tmp_path, state):
    """The mtime went through a float of seconds (~240 ns steps today): 1764450000.123456896 came
    out as …123457024, a microsecond later than the source."""
    f = tmp_path / "a.bin"
    f.write_bytes(b"abc")
    awkward = 1764450000_123456896
    os.utime(f, ns=(awkward, awkward))
    domas("copy", f, tmp_path / "b.bin", check=True)
    assert (tmp_path / "b.bin").stat().st_mtime_ns == awkward


def test_missing_source_is_one_sentence_and_exit_code(tmp_path, state):
    r = domas("copy", tmp_path / "nope", tmp_path / "out")
    assert r.returncode == 3
    assert "Traceback" not in r.stderr and "does not exist" in r.stderr


def test_same_file_is_refused_and_source_untouched(tmp_path, state):
    f = tmp_path / "a.bin"
    f.write_bytes(b"precious")
    r = domas("copy", f, tmp_path / "." / "a.bin")
    assert r.returncode == 2 and "same file" in r.stderr and "Traceback" not in r.stderr
    assert f.read_bytes() == b"precious"
    d = tmp_path / "tree"
    d.mkdir()
    (d / "x").write_bytes(b"1")
    r = domas("copy", d, d)
    assert r.returncode == 2 and "into itself" in r.stderr


def test_symlink_escaping_the_tree_is_skipped_and_reported(tmp_path, state):
    outside = tmp_path / "secret"
    outside.write_bytes(b"not yours")
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok").write_bytes(b"fine")
    (src / "inside_link").symlink_to(src / "ok")
    (src / "escape").symlink_to(outside)
    r = domas("copy", str(src) + "/", tmp_path / "dst")
    assert r.returncode == 2
    assert "points outside the source tree" in r.stderr and "Traceback" not in r.stderr
    assert (tmp_path / "dst" / "ok").read_bytes() == b"fine"
    assert (tmp_path / "dst" / "inside_link").read_bytes() == b"fine"
    assert not (tmp_path / "dst" / "escape").exists()


def _mount_tmpfs(path: Path, size: str, *opts: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", *opts]), "tmpfs", str(path)],
                       capture_output=True)
    return r.returncode == 0


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "small"
    if not _mount_tmpfs(mnt, "4m"):
        if os.environ.get("CI"):
            pytest.fail("cannot mount a tmpfs for the full-disk test (needs root)")
        pytest.skip("cannot mount a tmpfs (needs root)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_keeps_partial_then_resumes_when_space_is_freed(tmp_path, state, small_disk):
    src = tmp_path / "big.bin"
    data = os.urandom(6 * MiB)
    src.write_bytes(data)
    r = domas("copy", "--chunk-size", "512KiB", "--streams", "2", src, small_disk / "big.bin")
    assert r.returncode == 5, r.stderr
    assert "No space left" in r.stderr or "no space" in r.stderr.lower()
    assert "Traceback" not in r.stderr
    assert not (small_disk / "big.bin").exists()
    assert (small_disk / ".big.bin.domas-part").exists()
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
    r = domas("copy", "--chunk-size", "512KiB", "--json", src, small_disk / "big.bin", check=True)
    f = json.loads(r.stdout)["files"][0]
    assert f["resumed_bytes"] > 0 and "resuming" in r.stderr
    assert (small_disk / "big.bin").read_bytes() == data
    assert f["adler32"] == f"{zlib.adler32(data):08x}"


def test_unwritable_destination_is_a_clear_error(tmp_path, state):
    ro = tmp_path / "ro"
    if not _mount_tmpfs(ro, "1m", "ro"):
        pytest.skip("cannot mount a read-only tmpfs")
    try:
        src = tmp_path / "a"
        src.write_bytes(b"data")
        r = domas("copy", src, ro / "a")
        assert r.returncode == 4 and "mounted read-only" in r.stderr, r.stderr       # says what it is (2a8552f)
        assert "Traceback" not in r.stderr and src.read_bytes() == b"data"
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=False)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_copy_resumes_with_the_right_checksum(tmp_path, state, sig):
    src = tmp_path / "big.bin"
    data = os.urandom(64 * MiB)
    src.write_bytes(data)
    dst = tmp_path / "out.bin"
    args = [sys.executable, "-m", "domas.cli", "copy", "--chunk-size", "256KiB", "--streams", "2", str(src), str(dst)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    journal_dir = state / "journal"

    def journaled_enough() -> bool:
        return any(len(p.read_bytes().splitlines()) > 20 for p in journal_dir.glob("*.jsonl")) if journal_dir.exists() else False

    wait_until(journaled_enough, timeout=60, what="journal to fill", proc=proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "resume" in err and "Traceback" not in err
    assert not dst.exists(), "the final name must not appear before the copy is complete"
    r = domas("copy", "--chunk-size", "256KiB", "--json", src, dst, check=True)
    f = json.loads(r.stdout)["files"][0]
    assert f["resumed_bytes"] >= 20 * 256 * 1024
    assert dst.read_bytes() == data
    assert f["adler32"] == f"{zlib.adler32(data):08x}"
    assert not list(journal_dir.glob("*.jsonl"))


def test_no_resume_starts_over(tmp_path, state):
    src = tmp_path / "a"
    src.write_bytes(os.urandom(MiB))
    r = domas("copy", "--no-resume", "--json", "--chunk-size", "64KiB", src, tmp_path / "b", check=True)
    assert json.loads(r.stdout)["files"][0]["resumed_bytes"] == 0
    assert not (state / "journal").exists() or not list((state / "journal").iterdir())


def test_checksum_command_keeps_leading_zero(tmp_path):
    f = tmp_path / "z"
    f.write_bytes(b"a")                     # adler32("a") = 0x00620062
    g = tmp_path / "r"
    g.write_bytes(os.urandom(5 * MiB))
    r = domas("checksum", f, g, check=True)
    lines = r.stdout.splitlines()
    assert lines[0] == f"00620062  {f}"
    assert lines[1] == f"{zlib.adler32(g.read_bytes()):08x}  {g}"
    x = domas("checksum", "--algo", "xxh3", g, check=True)
    assert x.stdout.split()[0] == xxhash.xxh3_64_hexdigest(g.read_bytes())
    bad = domas("checksum", tmp_path / "missing")
    assert bad.returncode == 3 and "Traceback" not in bad.stderr


def test_help_teaches_the_tool():
    for args in (["--help"], ["copy", "--help"], ["checksum", "--help"]):
        r = domas(*args, check=True)
        assert "domas" in r.stdout and "example" in r.stdout.lower() or "adler32" in r.stdout
