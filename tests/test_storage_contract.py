"""One contract every Storage backend passes: memory, posix, faulty (no faults), xrootd."""

from __future__ import annotations

import os

import pytest

from domas.checksum import adler32, format_adler32
from domas.errors import DomasError, ImpossibleRange, NotFound
from domas.transfer.storage import MemoryStorage, PosixStorage

BACKENDS = ["memory", "posix", "faulty", "xrootd"]


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path):
    """(storage, base directory inside it) for each backend."""
    if request.param == "memory":
        yield MemoryStorage(), "/contract"
    elif request.param == "posix":
        yield PosixStorage(), str(tmp_path / "contract")
    elif request.param == "faulty":
        from domas.transfer.storage.faulty import FaultyStorage

        yield FaultyStorage(MemoryStorage()), "/contract"
    else:
        yield request.getfixturevalue("xrootd_storage")


def write(store, path, data: bytes) -> None:
    with store.open_write(path, truncate=True) as w:
        w.pwrite(0, data)
        w.sync()


def test_write_then_read_ranges(backend):
    store, base = backend
    data = os.urandom(100_000)
    p = f"{base}/a/b/file.bin"
    write(store, p, data)
    with store.open_read(p) as r:
        assert r.pread(0, 10) == data[:10]
        assert r.pread(99_990, 100) == data[99_990:]          # clipped at end of file
        assert r.pread(100_000, 10) == b""                    # past the end
        assert r.pread(12_345, 54_321) == data[12_345:12_345 + 54_321]


def test_negative_range_is_refused(backend):
    store, base = backend
    write(store, f"{base}/neg", b"abc")
    with store.open_read(f"{base}/neg") as r:
        with pytest.raises(ImpossibleRange):
            r.pread(-1, 2)


def test_stat_and_listdir(backend):
    store, base = backend
    write(store, f"{base}/d/x", b"12345")
    write(store, f"{base}/d/y", b"")
    store.makedirs(f"{base}/d/sub")
    s = store.stat(f"{base}/d/x")
    assert s.size == 5 and not s.is_dir
    names = {os.path.basename(e.path): e for e in store.listdir(f"{base}/d")}
    assert set(names) == {"x", "y", "sub"}
    assert names["sub"].is_dir and names["y"].size == 0
    assert store.stat(f"{base}/d").is_dir


def test_missing_is_not_found(backend):
    store, base = backend
    with pytest.raises(NotFound):
        store.stat(f"{base}/nope")
    with pytest.raises(NotFound):
        store.open_read(f"{base}/nope")
    with pytest.raises(NotFound):
        store.remove(f"{base}/nope")


def test_pwrite_out_of_order_and_holes(backend):
    store, base = backend
    p = f"{base}/ooo"
    with store.open_write(p, truncate=True) as w:
        w.pwrite(6, b"world")
        w.pwrite(0, b"hello ")
        w.sync()
        assert w.readback(0, 11) == b"hello world"
    with store.open_read(p) as r:
        assert r.pread(0, 100) == b"hello world"


def test_reopen_keeps_data_unless_truncated(backend):
    store, base = backend
    p = f"{base}/keep"
    write(store, p, b"0123456789")
    with store.open_write(p) as w:
        w.pwrite(2, b"ab")
        w.sync()
    with store.open_read(p) as r:
        assert r.pread(0, 10) == b"01ab456789"


def test_rename_replaces_and_remove(backend):
    store, base = backend
    write(store, f"{base}/src", b"new")
    write(store, f"{base}/dst", b"old content")
    store.rename(f"{base}/src", f"{base}/dst")
    with store.open_read(f"{base}/dst") as r:
        assert r.pread(0, 100) == b"new"
    with pytest.raises(NotFound):
        store.stat(f"{base}/src")
    store.remove(f"{base}/dst")
    with pytest.raises(NotFound):
        store.stat(f"{base}/dst")


def test_checksum_when_offered_is_8_hex_adler32(backend):
    store, base = backend
    data = b"\x00" * 7 + os.urandom(5000)
    write(store, f"{base}/ck", data)
    got = store.checksum(f"{base}/ck", "adler32")
    if got is None:
        pytest.skip("backend has no checksum of its own")
    assert got == format_adler32(adler32(data)) and len(got) == 8


def test_is_permanent_answers(backend):
    store, _ = backend
    assert store.is_permanent(NotFound("x"))
    from domas.errors import NetworkTimeout

    assert not store.is_permanent(NetworkTimeout("x"))
    assert isinstance(NotFound("x"), DomasError)


def test_walk_lists_tree(backend):
    store, base = backend
    for rel in ("t/a", "t/b/c", "t/b/d/e"):
        write(store, f"{base}/{rel}", rel.encode())
    files = sorted(e.path[len(base) + 1:] for e in store.walk(f"{base}/t") if not e.is_dir)
    assert files == ["t/a", "t/b/c", "t/b/d/e"]
