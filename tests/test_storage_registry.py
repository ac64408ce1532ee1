"""Storage backends by URL scheme: each backend module registers itself; resolve only looks up.

A new backend is a module calling `register`, not an edit of `resolve`; a scheme nobody serves is
one UnknownScheme (a usage error, exit 2) naming the schemes that are served.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from domas.errors import UnknownScheme, UsageError
from domas.transfer.storage import MemoryStorage, PosixStorage, is_remote, register, resolve, schemes
from domas.transfer.storage.http import HTTPStorage
from domas.transfer.storage.xrootd import XRootDStorage


def test_every_backend_module_registered_its_schemes():
    assert set(schemes()) >= {"file", "root", "roots", "xroot", "xroots", "http", "https"}


def test_a_new_backend_is_one_register_call():
    mem = MemoryStorage()
    register(lambda url: (mem, url[len("memtest://"):]), "memtest")
    store, path = resolve("memtest:///a/b")
    assert store is mem and path == "/a/b"
    assert resolve("MEMTEST:///c")[0] is mem                   # schemes are case-insensitive


def test_a_scheme_is_served_by_one_backend():
    with pytest.raises(UsageError, match="already served"):
        register(lambda url: (MemoryStorage(), "/"), "file")


def test_unknown_scheme_is_one_usage_error_naming_the_served_ones():
    with pytest.raises(UnknownScheme) as err:
        resolve("s3://bucket/key")
    text = str(err.value)
    assert err.value.exit_code == 2 and isinstance(err.value, UsageError)
    assert "s3://bucket/key" in text and "root://" in text and "file://" in text and "\n" not in text


def test_unknown_scheme_on_the_command_line_is_one_sentence(tmp_path):
    out = subprocess.run([sys.executable, "-m", "domas.cli", "copy", "s3://bucket/key", str(tmp_path / "d")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out
    assert "Traceback" not in out.stderr and "s3://" in out.stderr


def test_local_paths_and_file_urls_go_to_posix(tmp_path):
    store, path = resolve("relative/x")
    assert isinstance(store, PosixStorage) and path == os.path.abspath("relative/x")
    assert resolve("file:///data/x") == (store, "/data/x")
    assert not is_remote("/data/x") and not is_remote("file:///x") and is_remote("root://h:1//x")


def test_remote_schemes_share_one_store_per_endpoint():
    a, pa = resolve("root://127.0.0.1:1//data/x")
    b, pb = resolve("root://127.0.0.1:1//other")
    assert isinstance(a, XRootDStorage) and a is b and (pa, pb) == ("/data/x", "/other")
    assert resolve("root://127.0.0.1:2//x")[0] is not a
    assert resolve("ROOT://127.0.0.1:1//y")[0] is a                  # the scheme's case does not matter
    h, hp = resolve("http://127.0.0.1:1/api/v1/f?x=1")
    assert isinstance(h, HTTPStorage) and hp == "/api/v1/f?x=1"
    with pytest.raises(UsageError, match="root://host:port//path"):
        resolve("root://127.0.0.1:1")


def test_a_local_copy_loads_neither_httpx_nor_the_xrootd_client(tmp_path):
    """The HTTP and XRootD backends are imported on their first URL (each then registers itself):
    eager imports cost a local `domas copy` ~0.1 s each at start, and XRootD walks every object at exit."""
    code = ("import sys; from domas.transfer.storage import resolve; resolve(sys.argv[1]); "
            "print(sorted(m for m in ('httpx', 'XRootD') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "x")], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "[]"
    out = subprocess.run([sys.executable, "-c", code, "root://127.0.0.1:1//x"], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "['XRootD']"
