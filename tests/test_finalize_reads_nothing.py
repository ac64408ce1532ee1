"""The controller decides a file from the agents' chunk sums and never reads the data file.

Measured with the kernel's own count of bytes this thread read (/proc/thread-self/io, rchar):
a finalize of a 32 MiB part file on a local disk (its chunks read back by the agents that wrote
them) must read next to nothing, where a re-read would count all 32 MiB.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import pytest

from domas.controller import events as ev
from domas.controller.service import verify_and_rename
from domas.transfer.storage import PosixStorage

MiB = 1 << 20
IO = Path("/proc/thread-self/io")

pytestmark = pytest.mark.skipif(not IO.exists(), reason="needs Linux's per-thread I/O counters")


def _rchar() -> int:
    for line in IO.read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar line")


def _finalize_case(tmp_path, content: bytes):
    src, part, final = tmp_path / "scan.h5", tmp_path / ".scan.h5.domas-part", tmp_path / "out.h5"
    src.write_bytes(content)
    part.write_bytes(content)
    os.chmod(src, 0o640)
    st = PosixStorage().stat_follow(str(src))
    a = ev.FinalizeFile("t", 1, str(part), str(final), len(content), zlib.adler32(content), True,
                        src.stat().st_mtime_ns, str(src), st.version())
    return a, part, final


def test_a_finalize_does_not_read_the_data_file(tmp_path):
    content = os.urandom(32 * MiB)
    a, part, final = _finalize_case(tmp_path, content)
    before = _rchar()
    got = verify_and_rename(a)
    read = _rchar() - before
    assert (got.error_kind, got.adler32) == ("", zlib.adler32(content))
    assert read < MiB, f"the finalize read {read} bytes"
    assert not part.exists() and final.stat().st_size == len(content)
    assert abs(final.stat().st_mtime_ns - a.mtime_ns) <= 1000              # set before the rename
    assert final.stat().st_mode & 0o777 == 0o640                          # H2's mode bits kept

    before = _rchar()                           # repeated after a controller crash: still no read
    again = verify_and_rename(a)
    assert (again.error_kind, again.adler32) == ("", zlib.adler32(content))
    assert _rchar() - before < MiB


def test_a_part_file_of_the_wrong_size_is_refused_without_reading_it(tmp_path):
    content = os.urandom(4 * MiB)
    a, part, final = _finalize_case(tmp_path, content)
    os.truncate(part, len(content) - 1)     # short; a longer one is cut to size (test_controller_finalize_size)
    got = verify_and_rename(a)
    assert got.error_kind == "" and got.adler32 is None                  # a mismatch: the file restarts
    assert part.exists() and not final.exists()


def test_a_repeated_finalize_does_not_take_another_file_of_the_same_size_for_ours(tmp_path):
    content = os.urandom(MiB)
    a, part, final = _finalize_case(tmp_path, content)
    part.unlink()
    final.write_bytes(os.urandom(MiB))           # same size, but not given the source's mtime
    assert verify_and_rename(a).error_kind == "not_found"


def test_an_xrootd_destination_is_decided_by_the_servers_checksum(xrootd_server):
    """No read-back there: the server's `query checksum` is the destination's adler32."""
    content = os.urandom(MiB + 7)
    xrootd_server.put(xrootd_server.path("fin/.a.h5.domas-part"), content)
    part = f"{xrootd_server.url}/{xrootd_server.path('fin/.a.h5.domas-part')}"
    final = f"{xrootd_server.url}/{xrootd_server.path('fin/a.h5')}"
    wrong = ev.FinalizeFile("t", 1, part, final, len(content), zlib.adler32(content) ^ 1, True)
    got = verify_and_rename(wrong)
    assert (got.error_kind, got.adler32) == ("", zlib.adler32(content))     # a mismatch: not renamed
    assert xrootd_server.local(xrootd_server.path("fin/.a.h5.domas-part")).exists()
    got = verify_and_rename(ev.FinalizeFile("t", 1, part, final, len(content), zlib.adler32(content), True))
    assert (got.error_kind, got.adler32) == ("", zlib.adler32(content))
    assert xrootd_server.local(xrootd_server.path("fin/a.h5")).read_bytes() == content


def test_an_xrootd_destination_without_checksums_is_refused_not_read(tmp_path):
    import shutil

    from tests.fixtures.xrootd import start_xrootd

    server = start_xrootd(checksum=False)
    try:
        content = os.urandom(MiB)
        server.put(server.path(".b.h5.domas-part"), content)
        a = ev.FinalizeFile("t", 1, f"{server.url}/{server.path('.b.h5.domas-part')}",
                            f"{server.url}/{server.path('b.h5')}", len(content), zlib.adler32(content), True)
        got = verify_and_rename(a)
        assert got.error_kind == "unsupported" and "xrootd.chksum" in got.error_message
        assert not server.local(server.path("b.h5")).exists()
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)
