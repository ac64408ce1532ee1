"""Table tests of the per-file rules shared by `domas copy`, the agent and the controller (no I/O)."""

from __future__ import annotations

from collections import namedtuple

import pytest

from domas.transfer import filecore

Rec = namedtuple("Rec", "index length")
CS = 100


@pytest.mark.parametrize("src, dst, local, kw, expected", [
    ((10, 5.0), (10, 5.0), True, {}, True),
    ((10, 5.0), (10, 5.0004), True, {}, True),            # below a millisecond: the same mtime
    ((10, 5.0), (10, 5.01), True, {}, False),             # a local disk keeps what we set: must match
    ((10, 5.0), (10, 9.0), False, {}, True),              # a server stamps its own, later time
    ((10, 5.0), (10, 4.0), False, {}, False),             # older than the source: stale
    ((10, 5.0), (11, 5.0), True, {}, False),              # another size
    ((10, 5.0), (10, 5.0), True, {"force": True}, False),
    ((10, 5.0), (10, 5.0), True, {"dst_is_dir": True}, False),
])
def test_up_to_date(src, dst, local, kw, expected):
    assert filecore.up_to_date(*src, *dst, local=local, **kw) is expected


@pytest.mark.parametrize("planned, now, expected", [
    ((10, 5_000, "7:42"), (10, 5_000, "7:42"), True),
    ((10, 5_000, "7:42"), (10, 5_900, "7:42"), True),      # within the microsecond every backend keeps
    ((10, 5_000, "7:42"), (10, 6_001, "7:42"), False),
    ((10, 5_000, "7:42"), (11, 5_000, "7:42"), False),
    ((10, 5_000, "7:42"), (10, 5_000, "8:42"), False),     # rewritten with the mtime put back: ctime moved
    ((10, 5_000, ""), (10, 5_000, "8:42"), True),          # planned without a version: not compared
])
def test_same_version(planned, now, expected):
    assert filecore.same_version(planned, now) is expected


@pytest.mark.parametrize("records, size, part_size, expected", [
    ([Rec(0, 100), Rec(1, 100), Rec(2, 50)], 250, 250, {0, 1, 2}),
    ([Rec(0, 100), Rec(1, 100), Rec(2, 50)], 250, 180, {0}),        # part truncated inside chunk 1
    ([Rec(0, 100), Rec(2, 50)], 250, 250, {0, 2}),                  # holes are copied, the rest kept
    ([Rec(0, 100), Rec(1, 60)], 250, 250, {0}),                     # wrong length for its chunk
    ([Rec(0, 100), Rec(3, 100), Rec(-1, 100)], 250, 400, {0}),      # outside the file
    ([Rec(0, 0)], 0, 0, {0}),                                       # an empty file's one chunk
    ([], 250, 250, set()),
])
def test_resumable(records, size, part_size, expected):
    got = filecore.resumable({r.index: r for r in records}, size, CS, part_size)
    assert set(got) == expected


@pytest.mark.parametrize("folded, read_back, server, expected", [
    (0xABC, True, None, 0xABC),         # local disk: the agents' read-back sums are the destination's
    (0xABC, True, 0xDEF, 0xABC),
    (0xABC, False, 0xDEF, 0xDEF),       # XRootD: the server's whole-file checksum decides
    (0xABC, False, None, None),         # neither: cannot be known without reading it
])
def test_destination_adler32(folded, read_back, server, expected):
    assert filecore.destination_adler32(folded, read_back, server) == expected
