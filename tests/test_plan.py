"""Chunk planner: pure, table-driven."""

import pytest

from domas.errors import ImpossibleRange
from domas.transfer.plan import Chunk, check_range, chunk_at, chunk_count, plan_chunks


@pytest.mark.parametrize("size,chunk,expected", [
    (0, 8, [Chunk(0, 0, 0)]),
    (1, 8, [Chunk(0, 0, 1)]),
    (8, 8, [Chunk(0, 0, 8)]),
    (9, 8, [Chunk(0, 0, 8), Chunk(1, 8, 1)]),
    (24, 8, [Chunk(0, 0, 8), Chunk(1, 8, 8), Chunk(2, 16, 8)]),
])
def test_plan_table(size, chunk, expected):
    assert plan_chunks(size, chunk) == expected


@pytest.mark.parametrize("size,chunk", [(10**12 + 7, 8 << 20), (5552 * 3 + 1, 5552), (1, 1)])
def test_plan_covers_exactly(size, chunk):
    n = chunk_count(size, chunk)
    first, last = chunk_at(0, size, chunk), chunk_at(n - 1, size, chunk)
    assert first.offset == 0 and last.end == size
    assert all(chunk_at(i, size, chunk).length == chunk for i in range(min(n - 1, 100)))


@pytest.mark.parametrize("args", [(-1, 8), (8, 0), (8, -8)])
def test_plan_refuses_impossible_input(args):
    with pytest.raises(ImpossibleRange):
        plan_chunks(*args)


@pytest.mark.parametrize("index", [-1, 2])
def test_chunk_at_outside(index):
    with pytest.raises(ImpossibleRange):
        chunk_at(index, 9, 8)


@pytest.mark.parametrize("offset,length,ok", [(0, 10, True), (10, 0, True), (5, 6, False), (-1, 1, False),
                                              (0, -1, False)])
def test_check_range(offset, length, ok):
    if ok:
        check_range(offset, length, 10)
    else:
        with pytest.raises(ImpossibleRange):
            check_range(offset, length, 10)
