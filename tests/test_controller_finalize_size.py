"""A part file longer than the file it now holds: every chunk of the current version is written,
and bytes past its end are an earlier version's (the source shrank and the file was copied again
into the same part file), or an earlier writer's (a failed or cancelled transfer of the same
destination). Nothing truncated them: with verification the size check failed on every finalize
and the file was restarted until it failed; with `--verify none` the part file was renamed as it
was, the old tail kept (a destination longer than its source, marked done).

`verify_and_rename` runs on real files in a real directory, with the FinalizeFile the scheduler
sends when the last chunk of the current version is reported.
"""

from __future__ import annotations

import os
import zlib

import pytest

from domas.controller import events as ev
from domas.controller.service import verify_and_rename
from domas.transfer.parts import part_path
from domas.transfer.storage import PosixStorage


@pytest.mark.parametrize("verify", [True, False])
def test_bytes_past_the_end_of_a_shrunk_source_are_cut_before_the_rename(tmp_path, verify):
    src, dst = tmp_path / "src.h5", tmp_path / "out" / "src.h5"
    dst.parent.mkdir()
    new = os.urandom(1 << 20)
    src.write_bytes(new)
    part = tmp_path / "out" / os.path.basename(part_path(str(dst)))
    part.write_bytes(new + os.urandom(1 << 20))         # the larger version's second half is still there
    st = src.stat()
    version = PosixStorage().stat_follow(str(src)).version()
    verdict = verify_and_rename(ev.FinalizeFile("t", 1, str(part), str(dst), len(new), zlib.adler32(new), verify,
                                                st.st_mtime_ns, str(src), version))
    assert (verdict.error_kind, verdict.error_message) == ("", "")
    if verify:
        assert verdict.adler32 == zlib.adler32(new)
    assert dst.read_bytes() == new and not part.exists()


def test_an_xrootd_part_file_longer_than_its_file_is_cut_and_decided_by_the_servers_checksum(xrootd_server):
    new = os.urandom((1 << 20) + 3)
    name = xrootd_server.path("shrunk/.s.h5.domas-part")
    xrootd_server.put(name, new + os.urandom(4096))
    part = f"{xrootd_server.url}/{name}"
    final = f"{xrootd_server.url}/{xrootd_server.path('shrunk/s.h5')}"
    got = verify_and_rename(ev.FinalizeFile("t", 1, part, final, len(new), zlib.adler32(new), True))
    assert (got.error_kind, got.adler32) == ("", zlib.adler32(new))
    assert xrootd_server.local(xrootd_server.path("shrunk/s.h5")).read_bytes() == new
