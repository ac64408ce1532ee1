"""One contract every Storage backend passes: memory, posix, faulty (no faults), xrootd, http, https.

Real servers: the xrootd fixture, and an HTTP file server with byte ranges, plain and over TLS
(fixtures/httpfiles.py); the https store is the one the URL registry gives for its URL.
Where backends differ (writes, listing, symlinks, directory sync, mtime, permission bits) each
declares what it does in `capabilities`, and the test checks that answer: a case a backend does not
support is refused as declared, never skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from domas.checksum import adler32, format_adler32
from domas.errors import DomasError, ImpossibleRange, NetworkTimeout, NotFound, PermissionDenied, Unsupported
from domas.transfer.storage import MemoryStorage, PosixStorage, Storage, resolve
from domas.transfer.storage.faulty import FaultyStorage
from domas.transfer.storage.http import HTTPStorage

BACKENDS = ["memory", "posix", "faulty", "xrootd", "http", "https"]
WHEN = 1_600_000_000_123_456_789          # an mtime in ns with every digit significant


@dataclass
class Backend:
    """A backend under test: its store, a fresh base directory in it, and (for backends whose files
    live on this machine's disk) the local file behind a path, for set-up the store cannot do."""

    name: str
    store: Storage
    base: str
    disk: Callable[[str], Path] | None = None

    @property
    def caps(self):
        return self.store.capabilities

    def put(self, path: str, data: bytes) -> None:
        if self.caps.writable:
            write(self.store, path, data)
        else:
            target = self.disk(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)

    def mkdir(self, path: str) -> None:
        if self.caps.writable:
            self.store.makedirs(path)
        else:
            self.disk(path).mkdir(parents=True, exist_ok=True)


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path):
    if request.param == "memory":
        yield Backend("memory", MemoryStorage(), "/contract")
    elif request.param == "posix":
        yield Backend("posix", PosixStorage(), str(tmp_path / "contract"), disk=Path)
    elif request.param == "faulty":
        yield Backend("faulty", FaultyStorage(MemoryStorage()), "/contract")
    elif request.param == "xrootd":
        server = request.getfixturevalue("xrootd_server")
        store, base = request.getfixturevalue("xrootd_storage")
        yield Backend("xrootd", store, base, disk=server.local)
    elif request.param == "http":
        files = request.getfixturevalue("http_files")
        store = HTTPStorage(files.url, connect_timeout=5)
        yield Backend("http", store, "/contract", disk=files.local)
        store.close()
    else:
        files = request.getfixturevalue("https_files")
        store, base = resolve(f"{files.url}/contract")
        assert isinstance(store, HTTPStorage) and store.url(base).startswith("https://")
        yield Backend("https", store, base, disk=files.local)


def write(store, path, data: bytes) -> None:
    with store.open_write(path, truncate=True) as w:
        w.pwrite(0, data)
        w.sync()


def read_all(store, path) -> bytes:
    with store.open_read(path) as r:
        return r.pread(0, 1 << 20)


def test_write_then_read_ranges(backend):
    store, base = backend.store, backend.base
    data = os.urandom(100_000)
    p = f"{base}/a/b/file.bin"
    backend.put(p, data)
    with store.open_read(p) as r:
        assert r.pread(0, 10) == data[:10]
        assert r.pread(99_990, 100) == data[99_990:]          # clipped at end of file
        assert r.pread(100_000, 10) == b""                    # past the end
        assert r.pread(12_345, 54_321) == data[12_345:12_345 + 54_321]


def test_negative_range_is_refused(backend):
    backend.put(f"{backend.base}/neg", b"abc")
    with backend.store.open_read(f"{backend.base}/neg") as r:
        with pytest.raises(ImpossibleRange):
            r.pread(-1, 2)


def test_stat_and_listdir(backend):
    store, base = backend.store, backend.base
    backend.put(f"{base}/d/x", b"12345")
    backend.put(f"{base}/d/y", b"")
    backend.mkdir(f"{base}/d/sub")
    s = store.stat(f"{base}/d/x")
    assert s.size == 5 and not s.is_dir
    if not backend.caps.listable:
        with pytest.raises(Unsupported):
            store.listdir(f"{base}/d")
        return
    names = {os.path.basename(e.path): e for e in store.listdir(f"{base}/d")}
    assert set(names) == {"x", "y", "sub"}
    assert names["sub"].is_dir and names["y"].size == 0
    assert store.stat(f"{base}/d").is_dir


def test_missing_is_not_found(backend):
    store, base = backend.store, backend.base
    with pytest.raises(NotFound):
        store.stat(f"{base}/nope")
    with pytest.raises(NotFound):
        store.open_read(f"{base}/nope")
    with pytest.raises(NotFound if backend.caps.writable else Unsupported):
        store.remove(f"{base}/nope")


def test_pwrite_out_of_order_and_holes(backend):
    store, p = backend.store, f"{backend.base}/ooo"
    if not backend.caps.writable:
        with pytest.raises(Unsupported):
            store.open_write(p, truncate=True)
        return
    with store.open_write(p, truncate=True) as w:
        w.pwrite(6, b"world")
        w.pwrite(0, b"hello ")
        w.sync()
        assert w.readback(0, 11) == b"hello world"
    assert read_all(store, p) == b"hello world"


def test_reopen_keeps_data_unless_truncated(backend):
    store, p = backend.store, f"{backend.base}/keep"
    backend.put(p, b"0123456789")
    if not backend.caps.writable:
        with pytest.raises(Unsupported):
            store.open_write(p)
        return
    with store.open_write(p) as w:
        w.pwrite(2, b"ab")
        w.sync()
    assert read_all(store, p) == b"01ab456789"


def test_rename_replaces_and_remove(backend):
    store, base = backend.store, backend.base
    backend.put(f"{base}/src", b"new")
    backend.put(f"{base}/dst", b"old content")
    if not backend.caps.writable:
        with pytest.raises(Unsupported):
            store.rename(f"{base}/src", f"{base}/dst")
        assert read_all(store, f"{base}/dst") == b"old content"
        return
    store.rename(f"{base}/src", f"{base}/dst")
    assert read_all(store, f"{base}/dst") == b"new"
    with pytest.raises(NotFound):
        store.stat(f"{base}/src")
    store.remove(f"{base}/dst")
    with pytest.raises(NotFound):
        store.stat(f"{base}/dst")


def test_checksum_is_8_hex_adler32_or_none_where_not_authoritative(backend):
    data = b"\x00" * 7 + os.urandom(5000)
    backend.put(f"{backend.base}/ck", data)
    got = backend.store.checksum(f"{backend.base}/ck", "adler32")
    if got is None:                 # a local file: the engine hashes it in flight instead
        assert not backend.store.checksum_authoritative
        return
    assert got == format_adler32(adler32(data)) and len(got) == 8


def test_is_permanent_answers(backend):
    store = backend.store
    assert store.is_permanent(NotFound("x"))
    assert not store.is_permanent(NetworkTimeout("x"))
    assert isinstance(NotFound("x"), DomasError)


def test_walk_lists_tree(backend):
    store, base = backend.store, backend.base
    for rel in ("t/a", "t/b/c", "t/b/d/e"):
        backend.put(f"{base}/{rel}", rel.encode())
    if not backend.caps.listable:
        with pytest.raises(Unsupported):
            list(store.walk(f"{base}/t"))
        return
    files = sorted(e.path[len(base) + 1:] for e in store.walk(f"{base}/t") if not e.is_dir)
    assert files == ["t/a", "t/b/c", "t/b/d/e"]


# -- symlinks --------------------------------------------------------------------------------

def test_symlinked_source(backend):
    """"local": the backend shows the link (is_link) and follows it on stat_follow, open_read and
    realpath, and walk does not descend into a linked directory; "server": the server follows the
    link, so a client sees the target's bytes and never a link; "none": no entry is ever a link."""
    store, base, kind = backend.store, backend.base, backend.caps.symlinks
    data = os.urandom(3000)
    backend.put(f"{base}/real/target.bin", data)
    if kind == "none":
        assert backend.disk is None, "a backend on a local disk has symlinks: declare them"
        assert not store.stat(f"{base}/real/target.bin").is_link
        assert store.realpath(f"{base}/real/target.bin") == f"{base}/real/target.bin"
        return
    os.symlink("real/target.bin", backend.disk(f"{base}/link.bin"))
    assert read_all(store, f"{base}/link.bin") == data
    assert store.stat_follow(f"{base}/link.bin").size == len(data)
    if kind == "server":
        st = store.stat(f"{base}/link.bin")
        assert not st.is_link and st.size == len(data)
        return
    assert kind == "local"
    os.symlink("real", backend.disk(f"{base}/linkdir"))
    os.symlink("real/gone", backend.disk(f"{base}/dangling"))
    st = store.stat(f"{base}/link.bin")
    assert st.is_link and not st.is_dir
    assert store.realpath(f"{base}/link.bin") == store.realpath(f"{base}/real/target.bin")
    listed = {os.path.basename(e.path): e for e in store.listdir(base)}
    assert listed["link.bin"].is_link and listed["linkdir"].is_link and listed["dangling"].is_link
    walked = [e.path for e in store.walk(base)]
    assert f"{base}/linkdir/target.bin" not in walked and f"{base}/real/target.bin" in walked
    assert store.stat(f"{base}/dangling").is_link
    with pytest.raises(NotFound):
        store.stat_follow(f"{base}/dangling")
    with pytest.raises(NotFound):
        store.open_read(f"{base}/dangling")


# -- directory sync ------------------------------------------------------------------------------

def test_rename_then_sync_parent_directory(backend):
    """The finalize step: write a part file, rename it over the final name, make the rename durable
    with sync_dir on the parent. A dir_sync backend really opens and fsyncs that directory (a
    missing one, or a file, is NotFound); the others need nothing and do nothing."""
    store, base = backend.store, backend.base
    part, final = f"{base}/out/.f.part", f"{base}/out/f"
    backend.put(part, b"payload")
    if not backend.caps.writable:
        with pytest.raises(Unsupported):
            store.rename(part, final)
        return
    store.rename(part, final)
    store.sync_dir(f"{base}/out")
    assert read_all(store, final) == b"payload"
    if backend.caps.dir_sync:
        with pytest.raises(NotFound):
            store.sync_dir(f"{base}/no-such-dir")
        with pytest.raises(NotFound):
            store.sync_dir(final)                 # not a directory
    else:
        store.sync_dir(f"{base}/no-such-dir")     # nothing to make durable: no I/O, no error


_RENAME_AND_SYNC = """
import sys
from domas.transfer.storage import PosixStorage
store = PosixStorage()
store.rename(sys.argv[1], sys.argv[2])
store.sync_dir(sys.argv[3])
"""


def test_posix_fsyncs_the_parent_directory_after_the_rename(tmp_path):
    """What dir_sync promises, seen at the system calls (strace): rename, then an open of the parent
    directory and an fsync of that descriptor, so the new name survives a power loss."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / ".f.part").write_bytes(b"payload")
    trace = tmp_path / "trace"
    subprocess.run(["strace", "-f", "-qq", "-e", "trace=rename,renameat,renameat2,openat,fsync", "-o", str(trace),
                    sys.executable, "-c", _RENAME_AND_SYNC, str(out_dir / ".f.part"), str(out_dir / "f"),
                    str(out_dir)], check=True, timeout=60)
    calls = [line.split(None, 1)[1] for line in trace.read_text().splitlines() if str(out_dir) in line
             or "fsync(" in line]
    renamed = next(i for i, c in enumerate(calls) if c.startswith("rename") and f'"{out_dir}/f"' in c)
    opened = next((i for i, c in enumerate(calls) if i > renamed and c.startswith("openat(")
                   and f'"{out_dir}"' in c and "O_DIRECTORY" in c), None)
    assert opened is not None, f"the parent directory was not opened after the rename: {calls}"
    fd = calls[opened].rsplit("=", 1)[1].strip()
    assert any(c.startswith(f"fsync({fd})") and c.rstrip().endswith("= 0") for c in calls[opened + 1:]), calls
    assert PosixStorage.capabilities.dir_sync


# -- mtime ---------------------------------------------------------------------------------------

def test_mtime_set_and_read_back_to_the_backends_precision(backend):
    store, p = backend.store, f"{backend.base}/timed"
    backend.put(p, b"x")
    when = WHEN / 1e9
    tolerance = max(backend.caps.mtime_resolution, 1e-6)      # a float of seconds holds ~0.2 us here
    if backend.caps.mtime_settable:
        store.set_mtime(p, when, WHEN)
        if backend.disk is not None and backend.caps.mtime_resolution <= 1e-9:
            assert os.stat(backend.disk(p)).st_mtime_ns == WHEN          # exact, not via a float
    else:
        assert backend.disk is not None, "a backend that cannot set mtime must still report one"
        os.utime(backend.disk(p), ns=(WHEN, WHEN))
    got = store.stat(p).mtime
    assert abs(got - when) < tolerance, (got, when, backend.caps.mtime_resolution)
    if not backend.caps.mtime_settable and backend.caps.writable:
        store.set_mtime(p, 1.0, 1_000_000_000)              # declared unsupported: changes nothing
        assert abs(store.stat(p).mtime - when) < tolerance


# -- read-only -----------------------------------------------------------------------------------

_REFUSED_WRITE = """
import sys
from domas.errors import DomasError
from domas.transfer.storage import PosixStorage
try:
    PosixStorage().open_write(sys.argv[1]).close()
    print("written")
except DomasError as e:
    print(type(e).__name__ + "|" + str(e))
"""


def refused_write(backend: Backend, path: str) -> tuple[str, str]:
    """(error class, message) of open_write(path), from a process the permission bits bind: root
    ignores them, so as root the POSIX case runs in a child without CAP_DAC_OVERRIDE."""
    if backend.name == "posix" and os.geteuid() == 0:
        cmd = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--",
               sys.executable, "-c", _REFUSED_WRITE, path]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert "Traceback" not in out.stderr, out.stderr
        return tuple(out.stdout.strip().split("|", 1)) if "|" in out.stdout else (out.stdout.strip(), "")
    try:
        backend.store.open_write(path).close()
    except DomasError as e:
        return type(e).__name__, str(e)
    return "written", ""


def test_read_only_backend_refuses_every_write(backend):
    store, base = backend.store, backend.base
    backend.put(f"{base}/ro", b"keep")
    if backend.caps.writable:
        return                     # the writes themselves are the cases above
    for attempt in (lambda: store.open_write(f"{base}/ro"), lambda: store.remove(f"{base}/ro"),
                    lambda: store.rename(f"{base}/ro", f"{base}/moved"), lambda: store.makedirs(f"{base}/new")):
        with pytest.raises(Unsupported, match="read-only") as err:
            attempt()
        assert store.url(base) in str(err.value)
    assert read_all(store, f"{base}/ro") == b"keep"


def test_read_only_destination_is_a_permission_error(backend):
    """A read-only file or directory at the destination is one PermissionDenied naming the path
    (permission-bit backends); backends without permission bits declare so and keep writing."""
    store, base = backend.store, backend.base
    if not backend.caps.writable:
        return                     # nothing is ever written: test_read_only_backend_refuses_every_write
    backend.put(f"{base}/file", b"old")
    store.chmod_readonly(f"{base}/file")
    store.makedirs(f"{base}/dir")
    store.set_mode(f"{base}/dir", 0o555)
    try:
        for target in (f"{base}/file", f"{base}/dir/new"):
            kind, message = refused_write(backend, target)
            if backend.caps.permissions:
                assert kind == PermissionDenied.__name__, (kind, message)
                assert target in message and "\n" not in message
            else:
                assert kind == "written"
    finally:
        store.set_mode(f"{base}/dir", 0o755)
    if backend.caps.permissions:
        assert read_all(store, f"{base}/file") == b"old"
