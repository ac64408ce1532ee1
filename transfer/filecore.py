"""The per-file transfer rules that `domas copy`, the agent and the controller share. Pure: no I/O,
values in, decisions out (the callers stat, read journals and rename).

- up_to_date: a destination is left alone when it has the source's size and the same mtime (a
  local disk, which keeps what we set) or a newer one (a server that stamps its own time).
- same_version: the source is still the version a plan or lease saw: size, mtime (to the
  microsecond, what every backend keeps) and, when both sides know it, ctime + inode.
- resumable: which journaled chunks a rerun may trust without reading them: a record is written
  only after its chunk is durable (and read back, when verifying), so one is trusted when it has
  its chunk's length and the part file still reaches its end.
- destination_adler32: how a finalize learns the destination's adler32 without reading it.
"""

from __future__ import annotations

from typing import Mapping, TypeVar

from .plan import chunk_at, chunk_count

MTIME_SLACK_NS = 1000

R = TypeVar("R")


def up_to_date(src_size: int, src_mtime: float, dst_size: int, dst_mtime: float, *, local: bool,
               dst_is_dir: bool = False, force: bool = False) -> bool:
    if force or dst_is_dir or dst_size != src_size:
        return False
    if local:
        return abs(dst_mtime - src_mtime) < 1e-3
    return dst_mtime >= src_mtime


def same_version(planned: tuple[int, int, str], now: tuple[int, int, str]) -> bool:
    """(size, mtime_ns, version) as planned and as seen now; an empty planned version is not compared."""
    (size, mtime_ns, version), (now_size, now_mtime_ns, now_version) = planned, now
    return (size == now_size and abs(mtime_ns - now_mtime_ns) <= MTIME_SLACK_NS
            and (not version or version == now_version))


def resumable(records: Mapping[int, R], size: int, chunk_size: int, part_size: int) -> dict[int, R]:
    """The journaled chunks (records with .length, keyed by index) a rerun trusts as they are."""
    n = chunk_count(size, chunk_size)
    return {i: r for i, r in records.items()
            if 0 <= i < n and r.length == chunk_at(i, size, chunk_size).length
            and i * chunk_size + r.length <= part_size}


def destination_adler32(folded: int, chunks_read_back: bool, server_sum: int | None) -> int | None:
    """The destination's adler32 as far as it is known without reading it: the folded chunk sums
    when every chunk was read back where it was written, else the server's own; None: unknowable."""
    if chunks_read_back:
        return folded
    return server_sum
