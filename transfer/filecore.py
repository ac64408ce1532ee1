"""The per-file transfer core that `domas copy`, the agent and the controller drive. Pure: no I/O,
no clock (`now` is passed in), no global random (the caller's `rng`); facts in, actions out. The
shells stat, read journals, copy chunks and rename; every decision about one file is made here.

Rules:
- up_to_date: a destination is left alone when it has the source's size and the same mtime (a
  local disk, which keeps what we set) or a newer one (a server that stamps its own time).
- same_version: the source is still the version a plan or lease saw: size, mtime (to the
  microsecond, what every backend keeps) and, when both sides know it, ctime + inode.
- resumable: which journaled chunks a rerun may trust without reading them: a record is written
  only after its chunk is durable (and read back, when verifying), so one is trusted when it has
  its chunk's length and the part file still reaches its end. A journal counts only when it was
  written for the same source identity and chunk size.
- fold / verdict: the whole-file adler32 is folded from the chunk sums (adler32_combine, in file
  order); a destination whose own adler32 differs is copied again, never given its final name.
- destination_adler32: how a finalize learns the destination's adler32 without reading it.
- retry / restart: every failure goes through the one RetryPolicy: a failed step is retried at
  `now + delay` or given up; a changed source or a checksum mismatch restarts the file from zero,
  at most as often as the policy allows for that kind.

FileCore holds one file's state for a shell that copies it itself (`domas copy`); the controller's
scheduler keeps its compact per-file records and asks the same functions (fold, verdict,
retry_or_fail, restart_or_fail) for its decisions.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Hashable, Mapping, Sequence, TypeVar

from domas.checksum import fold_adler32
from domas.retry import RetryPolicy, is_retriable

from .parts import part_path
from .plan import Chunk, chunk_at, chunk_count

MTIME_SLACK_NS = 1000

R = TypeVar("R")


# -- actions ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Skip:
    """The destination is up to date: nothing to copy."""


@dataclass(frozen=True, slots=True)
class Copy:
    """Write the chunks not in `resumed` into `part` (truncated first when `fresh`)."""

    part: str
    fresh: bool
    resumed: Mapping = None


@dataclass(frozen=True, slots=True)
class RetryAt:
    """Try the failed step again at `when` (the caller's clock)."""

    when: float


@dataclass(frozen=True, slots=True)
class Restart:
    """Throw the partial copy away and copy the file again from zero. `kind`: an error kind, or
    one of the resume reasons (NO_JOURNAL, SOURCE_CHANGED, PART_GONE)."""

    kind: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Finalize:
    """Every chunk is in: check the whole file against `expected_adler32`, then rename."""

    expected_adler32: int


@dataclass(frozen=True, slots=True)
class Rename:
    """The destination is the source's: give the part file its final name."""

    adler32: int


@dataclass(frozen=True, slots=True)
class Fail:
    """Give up on the file."""

    kind: str
    message: str


NO_JOURNAL, SOURCE_CHANGED, PART_GONE = "no_journal", "source_changed", "part_gone"


# -- the rules ---------------------------------------------------------------------------------

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
    return (same_mtime_ns(mtime_ns, now_mtime_ns) and size == now_size
            and (not version or version == now_version))


def same_mtime_ns(a: int, b: int) -> bool:
    """Two mtimes in nanoseconds that every backend would keep alike (to the microsecond)."""
    return abs(a - b) <= MTIME_SLACK_NS


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


def fold(adlers: Sequence[int], size: int, chunk_size: int) -> int:
    """The whole file's adler32 from every chunk's, in file order."""
    return fold_adler32((adlers[i], min(chunk_size, size - i * chunk_size))
                        for i in range(chunk_count(size, chunk_size)))


def verdict(expected: int, found: int | None, verify: bool = True) -> Rename | Restart:
    """After the last chunk: the destination's adler32 `found` (None: unknown) against the folded
    `expected`. Without verification the copy is taken as it is."""
    if not verify or found == expected:
        return Rename(expected)
    shown = "none" if found is None else f"{found:08x}"
    return Restart("checksum_mismatch", f"destination adler32 {shown} differs from the copied chunks' {expected:08x}")


def retry_or_fail(policy: RetryPolicy, attempt: int, kind: str, message: str, retriable: bool,
                  rng: random.Random, now: float, elapsed: float = 0.0, what: str = "") -> RetryAt | Fail:
    """After failed attempt number `attempt` of a step (`what`, e.g. "chunk 3"): when to try again,
    or the failure to keep. `elapsed`: seconds since the step first failed (the policy's budget)."""
    delay = policy.next_delay(attempt, kind, retriable, rng, elapsed)
    if delay is not None:
        return RetryAt(now + delay)
    why = message or kind
    if what and is_retriable(kind, retriable):
        why = f"gave up on {what} after {attempt} attempts: {why}"
    return Fail(kind, why)


def restart_or_fail(policy: RetryPolicy, restarts: int, kind: str, message: str,
                    rng: random.Random) -> Restart | Fail:
    """Restart number `restarts` of a file (a changed source, a checksum mismatch), or giving up."""
    if policy.next_delay(restarts, kind, True, rng) is None:
        return Fail(kind, f"gave up after {restarts} restarts: {message or kind}")
    return Restart(kind, message)


# -- one file ----------------------------------------------------------------------------------

class FileCore:
    """One file's transfer state for a shell that copies it itself (`domas copy`).

    The shell reports facts -- the source's stat (`begin`), the destination's (`plan`), the journal
    and part file (`resume`), each chunk (`chunk_done`), each failure (`failed`), the source and
    the destination's adler32 at the end (`finish`) -- and performs the action each returns.
    `chunk_done` may be called from several threads at once (one dict store per chunk)."""

    def __init__(self, dst: str, chunk_size: int, policy: RetryPolicy, rng: random.Random) -> None:
        self.part = part_path(dst)
        self.chunk_size, self.policy, self.rng = chunk_size, policy, rng
        self.size, self.n, self.mtime, self.identity = 0, 1, 0.0, None
        self.sums: dict[int, tuple[int, int]] = {}     # index -> (adler32, length), chunks that are in
        self.resumed: dict = {}                         # index -> journal record a rerun may trust
        self.restarts = 0
        self._failures: dict[Hashable, tuple[int, float]] = {}   # step -> (failed attempts, first failure)

    def begin(self, size: int, mtime: float, identity: tuple) -> None:
        """The source as the copy starts (or starts again): its size, mtime and identity (size,
        mtime, ctime, inode: anything a rewrite changes)."""
        self.size, self.mtime, self.identity = size, mtime, identity
        self.n = chunk_count(size, self.chunk_size)
        self.sums.clear()
        self.resumed = {}

    def plan(self, dst: tuple[int, float] | None, *, local: bool, force: bool = False) -> Skip | None:
        """The destination's (size, mtime), None when there is none: Skip when it is up to date."""
        if dst is not None and up_to_date(self.size, self.mtime, dst[0], dst[1], local=local, force=force):
            return Skip()
        return None

    def resume(self, journaled: tuple | None, records: Mapping[int, R], part_size: int | None) -> Copy | Restart:
        """The journal of an interrupted copy (the identity and chunk size it was written for, None
        for none) and the part file's size (None: gone): the chunks to trust, or why to start over.
        A shell that has no journal to offer passes None and starts fresh (NO_JOURNAL)."""
        if journaled is None:
            return Restart(NO_JOURNAL)
        if journaled != (self.identity, self.chunk_size):
            return Restart(SOURCE_CHANGED, "the source changed since the interrupted copy")
        if part_size is None:
            return Restart(PART_GONE, "the partial copy is gone")
        self.resumed = resumable(records, self.size, self.chunk_size, part_size)
        return Copy(self.part, False, self.resumed)

    def pending(self) -> list[Chunk]:
        """The chunks still to copy or to accept from the journal, in file order."""
        return [chunk_at(i, self.size, self.chunk_size) for i in range(self.n) if i not in self.sums]

    def chunk_done(self, index: int, adler32: int, length: int) -> None:
        """A chunk is durable at the destination (copied, or accepted from the journal)."""
        self.sums[index] = (adler32, length)

    def failed(self, step: Hashable, kind: str, message: str, retriable: bool, now: float,
               what: str = "") -> RetryAt | Fail:
        """Step `step` (a chunk index, "prepare", "finalize", ...) failed at `now`."""
        attempt, first = self._failures.get(step, (0, now))
        attempt += 1
        self._failures[step] = (attempt, first)
        return retry_or_fail(self.policy, attempt, kind, message, retriable, self.rng, now, now - first, what)

    def succeeded(self, step: Hashable) -> None:
        """Step `step` went through: its next failure is a first one again."""
        self._failures.pop(step, None)

    def finalize(self) -> Finalize:
        """After the last chunk: the whole file's adler32 folded from the chunk sums."""
        missing = [i for i in range(self.n) if i not in self.sums]
        if missing:
            raise ValueError(f"chunks {missing[:5]} of {self.n} are not in; the file cannot be finalized")
        return Finalize(fold_adler32(self.sums[i] for i in range(self.n)))

    def source_now(self, identity: tuple) -> Restart | None:
        """The source's identity after the last chunk: a change restarts the file (never a mix)."""
        if identity != self.identity:
            return Restart("source_changed", "the source changed while it was copied")
        return None

    def finish(self, expected: int, found: int | None, verify: bool) -> Rename | Restart:
        """The destination's own adler32 from its storage (a server checksum, an authoritative
        source's announced sum); None when it offers none: the chunks' read-backs stand."""
        return verdict(expected, expected if found is None else found, verify)

    def restart(self, kind: str, message: str) -> Restart | Fail:
        """Start the file again after a changed source or a checksum mismatch, within the policy."""
        self.restarts += 1
        act = restart_or_fail(self.policy, self.restarts, kind, message, self.rng)
        if isinstance(act, Restart):
            self.sums.clear()
            self.resumed = {}
            self._failures.clear()
        return act

