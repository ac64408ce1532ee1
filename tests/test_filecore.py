"""Table tests of the per-file core that `domas copy`, the agent and the controller drive (no I/O, no fixtures)."""

from __future__ import annotations

import random
import zlib
from collections import namedtuple

import pytest

from domas.retry import RetryPolicy
from domas.transfer import filecore
from domas.transfer.filecore import Copy, Fail, FileCore, Finalize, Rename, Restart, RetryAt, Skip
from domas.transfer.parts import part_path

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


# -- the per-file state machine (FileCore) and the decisions the scheduler shares with it ------

POLICY = RetryPolicy(max_attempts=3, base=1.0, cap=4.0, per_kind={"checksum_mismatch": 3, "source_changed": 3},
                     budget=60.0)
IDENT = (250, 5.0, 6.0, "8:42")             # size, mtime, ctime, inode


def core(size=250, identity=IDENT, policy=POLICY):
    c = FileCore("/d/f.bin", CS, policy, random.Random(7))
    c.begin(size, identity[1], identity)
    return c


@pytest.mark.parametrize("dst, local, force, expected", [
    (None, True, False, None),                    # no destination: copy
    ((250, 5.0), True, False, Skip()),            # same size and mtime: up to date
    ((250, 5.0), True, True, None),               # --force copies anyway
    ((250, 9.0), True, False, None),              # local disk, other mtime: stale
    ((250, 9.0), False, False, Skip()),           # server stamped a later time
    ((249, 5.0), True, False, None),              # other size
])
def test_plan(dst, local, force, expected):
    assert core().plan(dst, local=local, force=force) == expected


@pytest.mark.parametrize("journaled, records, part_size, expected", [
    (None, [], None, Restart("no_journal")),
    (((250, 5.0, 6.0, "9:42"), CS), [Rec(0, 100)], 250, Restart("source_changed")),   # inode changed
    (((250, 5.0, 7.0, "8:42"), CS), [Rec(0, 100)], 250, Restart("source_changed")),   # rewritten, mtime put back
    ((IDENT, 64), [Rec(0, 100)], 250, Restart("source_changed")),                     # another chunk size
    ((IDENT, CS), [Rec(0, 100)], None, Restart("part_gone")),
    ((IDENT, CS), [Rec(0, 100), Rec(1, 100), Rec(2, 50)], 250, {0, 1, 2}),
    ((IDENT, CS), [Rec(0, 100), Rec(1, 100), Rec(2, 50)], 150, {0}),                  # part cut inside chunk 1
    ((IDENT, CS), [Rec(1, 60)], 250, set()),                                          # wrong length
])
def test_resume(journaled, records, part_size, expected):
    c = core()
    act = c.resume(journaled, {r.index: r for r in records}, part_size)
    if isinstance(expected, Restart):
        assert isinstance(act, Restart) and act.kind == expected.kind
        assert c.resumed == {}
    else:
        assert act == Copy(part_path("/d/f.bin"), False, c.resumed) and set(c.resumed) == expected


def test_chunks_fold_into_the_whole_files_adler32_whatever_order_they_finish_in():
    data = bytes(range(256)) * 2
    c = core(size=len(data), identity=(len(data), 1.0, 1.0, "1:1"))
    assert [ch.index for ch in c.pending()] == [0, 1, 2, 3, 4, 5]
    for i in (5, 2, 0, 4, 1, 3):
        piece = data[i * CS:(i + 1) * CS]
        c.chunk_done(i, zlib.adler32(piece), len(piece))
    assert c.pending() == []
    assert c.finalize() == Finalize(zlib.adler32(data))
    assert filecore.fold([zlib.adler32(data[i:i + CS]) for i in range(0, len(data), CS)], len(data), CS) \
        == zlib.adler32(data)


def test_finalize_refuses_a_file_with_a_chunk_missing():
    c = core()
    c.chunk_done(0, 1, 100)
    c.chunk_done(2, 1, 50)
    assert [ch.index for ch in c.pending()] == [1]
    with pytest.raises(ValueError, match="not in"):
        c.finalize()


@pytest.mark.parametrize("now_identity, expected", [
    (IDENT, None),
    ((250, 5.0, 6.5, "8:42"), "source_changed"),    # written to during the copy (ctime moved)
    ((251, 5.0, 6.0, "8:42"), "source_changed"),
])
def test_source_checked_after_the_last_chunk(now_identity, expected):
    act = core().source_now(now_identity)
    assert (act and act.kind) == expected


@pytest.mark.parametrize("expected, found, verify, outcome", [
    (0xABC, 0xABC, True, Rename(0xABC)),
    (0xABC, None, True, Rename(0xABC)),          # the storage has no sum of its own: the read-backs stand
    (0xABC, 0xDEF, True, "checksum_mismatch"),   # fold mismatch: copied again
    (0xABC, 0xDEF, False, Rename(0xABC)),        # --verify none
])
def test_finish(expected, found, verify, outcome):
    act = core().finish(expected, found, verify)
    assert act == outcome if isinstance(outcome, Rename) else (isinstance(act, Restart) and act.kind == outcome)


@pytest.mark.parametrize("expected, found, verify, outcome", [
    (0xABC, 0xABC, True, Rename(0xABC)),
    (0xABC, None, True, Restart("checksum_mismatch", "destination adler32 none differs from the copied chunks' 00000abc")),
    (0xABC, 0xDEF, True, Restart("checksum_mismatch", "destination adler32 00000def differs from the copied chunks' 00000abc")),
    (0xABC, None, False, Rename(0xABC)),
])
def test_verdict(expected, found, verify, outcome):
    assert filecore.verdict(expected, found, verify) == outcome


# (kind, retriable, failures at t=0,10,20..., expected outcome of the last one)
@pytest.mark.parametrize("kind, retriable, failures, outcome", [
    ("timeout", True, 1, "retry"),
    ("permission_denied", False, 1, "fail"),               # permanent: never retried
    ("not_found", True, 1, "fail"),                        # a known permanent kind, whatever the reporter says
    ("checksum_mismatch", True, 2, "retry"),
    ("checksum_mismatch", True, 3, "fail"),                # attempts used up (per_kind: no budget)
    ("internal", True, 3, "fail"),                         # not a "storage away" kind: no budget
    ("timeout", True, 3, "retry"),                         # storage away: the budget keeps it going...
    ("timeout", True, 7, "fail"),                          # ...until 60 s have passed since the first failure
])
def test_failures_go_through_the_one_retry_policy(kind, retriable, failures, outcome):
    c = core()
    for k in range(failures):
        now = 100.0 + 10 * k
        act = c.failed(3, kind, "it broke", retriable, now, what="chunk 3")
    if outcome == "retry":
        assert isinstance(act, RetryAt) and now <= act.when <= now + POLICY.cap
    else:
        assert isinstance(act, Fail) and act.kind == kind


def test_a_step_that_went_through_starts_counting_again_and_steps_count_apart():
    c = core()
    for _ in range(2):
        assert isinstance(c.failed(0, "internal", "x", True, 1.0), RetryAt)
    assert isinstance(c.failed(1, "internal", "x", True, 1.0), RetryAt)     # another chunk: its own count
    c.succeeded(0)
    assert isinstance(c.failed(0, "internal", "x", True, 2.0), RetryAt)
    assert isinstance(c.failed(1, "internal", "x", True, 2.0), RetryAt)
    assert isinstance(c.failed(1, "internal", "x", True, 2.0), Fail)


@pytest.mark.parametrize("attempt, kind, retriable, what, outcome", [
    (1, "timeout", True, "chunk 0", RetryAt),
    (3, "connection_lost", True, "chunk 0", Fail("connection_lost", "gave up on chunk 0 after 3 attempts: broke")),
    (1, "permission_denied", False, "chunk 0", Fail("permission_denied", "broke")),   # not retried: no "gave up"
    (3, "timeout", True, "", Fail("timeout", "broke")),                               # a verification's own words
])
def test_retry_or_fail(attempt, kind, retriable, what, outcome):
    act = filecore.retry_or_fail(RetryPolicy(max_attempts=3, base=0.5, cap=1.0), attempt, kind, "broke", retriable,
                                 random.Random(1), 50.0, what=what)
    if outcome is RetryAt:
        assert isinstance(act, RetryAt) and 50.0 <= act.when <= 51.0
    else:
        assert act == outcome


def test_restarts_forget_the_chunks_and_are_bounded_by_the_policy():
    c = core()
    c.chunk_done(0, 1, 100)
    c.resume((IDENT, CS), {0: Rec(0, 100)}, 250)
    c.failed(1, "internal", "x", True, 1.0)
    c.failed(1, "internal", "x", True, 1.0)
    assert c.restart("checksum_mismatch", "differs") == Restart("checksum_mismatch", "differs")
    assert c.sums == {} and c.resumed == {} and [ch.index for ch in c.pending()] == [0, 1, 2]
    assert isinstance(c.failed(1, "internal", "x", True, 2.0), RetryAt)        # the count started over
    assert isinstance(c.restart("source_changed", "changed"), Restart)
    assert c.restart("source_changed", "changed again") == Fail("source_changed",
                                                                "gave up after 3 restarts: changed again")


@pytest.mark.parametrize("restarts, kind, outcome", [
    (1, "source_changed", Restart("source_changed", "moved")),
    (4, "source_changed", Fail("source_changed", "gave up after 4 restarts: moved")),
    (1, "checksum_mismatch", Restart("checksum_mismatch", "moved")),
])
def test_restart_or_fail(restarts, kind, outcome):
    assert filecore.restart_or_fail(RetryPolicy(max_attempts=4), restarts, kind, "moved", random.Random(1)) == outcome
