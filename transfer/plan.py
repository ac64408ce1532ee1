"""Chunk planning: the pure core that cuts files into byte ranges.

Invariants: chunks of one file are numbered 0..n-1 in file order, are contiguous, do not
overlap, cover [0, size) exactly, and every chunk but the last has length == chunk_size.
An empty file has exactly one chunk of length 0 (so it still gets created, journaled, verified).
No I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from domas.errors import ImpossibleRange


@dataclass(frozen=True, slots=True)
class Chunk:
    """One chunk of a file: its index and byte range."""

    index: int
    offset: int
    length: int

    @property
    def end(self) -> int:
        return self.offset + self.length


def chunk_count(size: int, chunk_size: int) -> int:
    if size < 0 or chunk_size <= 0:
        raise ImpossibleRange(f"cannot plan size={size} chunk_size={chunk_size}")
    return max(1, -(-size // chunk_size))


def chunk_at(index: int, size: int, chunk_size: int) -> Chunk:
    """The index-th chunk of a file of `size` bytes."""
    n = chunk_count(size, chunk_size)
    if not 0 <= index < n:
        raise ImpossibleRange(f"chunk {index} outside 0..{n - 1}")
    offset = index * chunk_size
    return Chunk(index, offset, min(chunk_size, size - offset))


def plan_chunks(size: int, chunk_size: int) -> list[Chunk]:
    """All chunks of a file, in order."""
    return [chunk_at(i, size, chunk_size) for i in range(chunk_count(size, chunk_size))]


def check_range(offset: int, length: int, size: int) -> None:
    """Raise ImpossibleRange unless [offset, offset+length) lies inside a file of `size` bytes."""
    if offset < 0 or length < 0 or offset + length > size:
        raise ImpossibleRange(f"range offset={offset} length={length} is outside a file of {size} bytes")
