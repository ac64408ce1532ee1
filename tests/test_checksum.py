"""domas.checksum: the C extension (every code path this CPU has) against the fallback and zlib/xxhash.

Run a second time with DOMAS_NO_EXTENSIONS=1 to check the pure-Python fallback is what gets used.
"""

from __future__ import annotations

import array
import os
import random
import subprocess
import sys
import threading
import time
import zlib

import numpy as np
import pytest
import xxhash

import domas.checksum as checksum
from domas.checksum import _fallback

EXT = checksum._impl
PATHS = EXT._available() if EXT is not None else ()
NO_EXT = os.environ.get("DOMAS_NO_EXTENSIONS", "") not in ("", "0")

BASE = 65521
FUSED_BLOCK = 128 * 1024
ADLER_LENGTHS = [0, 1, 2, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129,
                 5551, 5552, 5553, 65535, 65536, 65537]
XXH_LENGTHS = [0, 1, 3, 4, 8, 9, 16, 17, 128, 129, 240, 241, 255, 256, 257, 1023, 1024, 1025,
               FUSED_BLOCK - 1, FUSED_BLOCK, FUSED_BLOCK + 1]
MULTI_MIB = 3 * 1024 * 1024 + 4321
VALUES = [1, 0, 0xFFFFFFFF, 0xFFF0FFF0, 0x0000FFF1, 0xFFF10000, 0x12345678]

RNG = random.Random(20240611)
RANDOM_DATA = RNG.randbytes(MULTI_MIB + 64)
FF_DATA = b"\xff" * (MULTI_MIB + 64)

needs_ext = pytest.mark.skipif(EXT is None, reason="C extension not in use (DOMAS_NO_EXTENSIONS or not built)")


@pytest.fixture(params=PATHS or ["none"])
def path(request):
    """Switch the extension to one code path for the test, then back to the one chosen at import."""
    if EXT is None:
        pytest.skip("C extension not in use")
    before = EXT.implementation()
    EXT._set_impl(request.param)
    yield request.param
    EXT._set_impl(before)


# -- which implementation is live -------------------------------------------------------------

@pytest.mark.skipif(NO_EXT, reason="DOMAS_NO_EXTENSIONS is set")
def test_extension_really_loaded():
    assert checksum.EXTENSION_LOADED, "the C extension did not import; rebuild with `pip install -e .`"
    assert checksum.IMPLEMENTATION != "python"
    forced = os.environ.get("DOMAS_CHECKSUM_IMPL")
    assert checksum.IMPLEMENTATION == (forced or PATHS[-1])


@pytest.mark.skipif(not NO_EXT, reason="DOMAS_NO_EXTENSIONS is not set")
def test_fallback_when_extensions_disabled():
    assert checksum.IMPLEMENTATION == "python"
    assert not checksum.EXTENSION_LOADED
    assert checksum.adler32 is _fallback.adler32


@needs_ext
def test_env_var_forces_a_path_and_refuses_unknown_ones():
    code = "import domas.checksum as c; print(c.IMPLEMENTATION, c.adler32(b'domas'))"
    env = {**os.environ, "DOMAS_CHECKSUM_IMPL": "scalar"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["scalar", str(zlib.adler32(b"domas"))]
    env["DOMAS_CHECKSUM_IMPL"] = "neon"
    bad = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert bad.returncode != 0
    assert "ConfigError: DOMAS_CHECKSUM_IMPL: checksum path 'neon' is not available on this CPU" in bad.stderr


@needs_ext
def test_every_path_is_listed_and_unknown_paths_refused():
    assert PATHS[0] == "scalar" and len(set(PATHS)) == len(PATHS)
    with pytest.raises(ValueError, match="not available"):
        EXT._set_impl("neon-on-x86")
    with pytest.raises(TypeError):
        EXT._set_impl(3)


# -- adler32 ----------------------------------------------------------------------------------

@pytest.mark.parametrize("source", [RANDOM_DATA, FF_DATA], ids=["random", "ff"])
def test_adler32_every_offset_and_length(path, source):
    view = memoryview(source)
    for offset in range(64):
        for length in ADLER_LENGTHS:
            piece = view[offset:offset + length]
            want = zlib.adler32(piece)
            assert EXT.adler32(piece) == want == _fallback.adler32(piece), (path, offset, length)


@pytest.mark.parametrize("source", [RANDOM_DATA, FF_DATA], ids=["random", "ff"])
def test_adler32_multi_mib_and_starting_values(path, source):
    view = memoryview(source)
    for offset in (0, 1, 31, 63):
        piece = view[offset:offset + MULTI_MIB]
        for value in VALUES:
            assert EXT.adler32(piece, value) == zlib.adler32(piece, value), (path, offset, hex(value))
    for value in VALUES:
        for length in (0, 1, 64, 5552, 70000):
            piece = view[7:7 + length]
            assert EXT.adler32(piece, value=value) == zlib.adler32(piece, value), (path, length, hex(value))


@needs_ext
@pytest.mark.parametrize("value", [-1, 2**32 + 5, 2**40 + 0x1234, -(2**35)])
def test_adler32_value_is_taken_modulo_2_32_like_zlib(value):
    assert EXT.adler32(b"domas", value) == zlib.adler32(b"domas", value)


@needs_ext
def test_adler32_accepts_every_contiguous_buffer():
    raw = RANDOM_DATA[:10_000]
    want = zlib.adler32(raw)
    for obj in (raw, bytearray(raw), memoryview(raw), np.frombuffer(raw, dtype=np.uint8),
                np.frombuffer(raw, dtype=np.uint16).reshape(100, 50), array.array("B", raw)):
        assert EXT.adler32(obj) == want, type(obj)
        assert EXT.chunk_sums(obj) == (want, xxhash.xxh3_64_intdigest(raw)), type(obj)


@needs_ext
def test_bad_inputs_fail_like_zlib():
    strided = memoryview(RANDOM_DATA[:100])[::2]
    with pytest.raises(BufferError):
        zlib.adler32(strided)
    for fn in (EXT.adler32, EXT.chunk_sums, EXT.xxh3_64):
        with pytest.raises(BufferError):
            fn(strided)
        with pytest.raises(ValueError):
            fn(np.arange(10)[::2])
        with pytest.raises(TypeError):
            fn("text")
    with pytest.raises(TypeError, match="must be an int"):
        EXT.adler32(b"x", "1")


# -- xxh3 and the fused pass ------------------------------------------------------------------

@pytest.mark.parametrize("source", [RANDOM_DATA, FF_DATA], ids=["random", "ff"])
def test_xxh3_and_chunk_sums_match_xxhash_and_zlib(path, source):
    view = memoryview(source)
    for offset in (0, 1, 7, 33, 63):
        for length in XXH_LENGTHS:
            piece = view[offset:offset + length]
            want_xxh = xxhash.xxh3_64_intdigest(piece)
            assert EXT.xxh3_64(piece) == want_xxh == _fallback.xxh3_64(piece), (path, offset, length)
            assert EXT.chunk_sums(piece) == (zlib.adler32(piece), want_xxh), (path, offset, length)
    piece = view[5:5 + MULTI_MIB]
    assert EXT.chunk_sums(piece) == _fallback.chunk_sums(piece)
    assert EXT.xxh3_64(piece) == xxhash.xxh3_64_intdigest(piece)


def test_public_api_matches_reference():
    piece = memoryview(RANDOM_DATA)[3:3 + 200_003]
    assert checksum.adler32(piece) == zlib.adler32(piece)
    assert checksum.adler32(piece, 0xDEADBEEF) == zlib.adler32(piece, 0xDEADBEEF)
    assert checksum.xxh3_64(piece) == xxhash.xxh3_64_intdigest(piece)
    assert checksum.chunk_sums(piece) == (zlib.adler32(piece), xxhash.xxh3_64_intdigest(piece))


# -- adler32_combine --------------------------------------------------------------------------

@pytest.mark.parametrize("combine", [pytest.param("ext", marks=needs_ext), "fallback"])
def test_combine_equals_checksum_of_concatenation(combine):
    fn = EXT.adler32_combine if combine == "ext" else _fallback.adler32_combine
    rng = random.Random(7)
    data = RANDOM_DATA[:300_000]
    splits = [0, 1, 5552, len(data) - 1, len(data)] + [rng.randrange(len(data)) for _ in range(40)]
    for split in splits:
        left, right = data[:split], data[split:]
        assert fn(zlib.adler32(left), zlib.adler32(right), len(right)) == zlib.adler32(data), split


@needs_ext
@pytest.mark.parametrize("len2", [0, 1, BASE - 1, BASE, 2**31, 2**32 + 17, 2**63 - 1, 2**63, 2**64 + 5, 10**30])
def test_combine_huge_lengths_match_the_formula(len2):
    rng = random.Random(len2)
    for _ in range(20):
        a1 = rng.randrange(BASE) | rng.randrange(BASE) << 16
        a2 = rng.randrange(BASE) | rng.randrange(BASE) << 16
        assert EXT.adler32_combine(a1, a2, len2) == _fallback.adler32_combine(a1, a2, len2)


@pytest.mark.parametrize("combine", [pytest.param("ext", marks=needs_ext), "fallback"])
def test_combine_refuses_negative_length(combine):
    fn = EXT.adler32_combine if combine == "ext" else _fallback.adler32_combine
    for bad in (-1, -(2**70)):
        with pytest.raises(ValueError, match="negative"):
            fn(1, 1, bad)


@needs_ext
def test_combine_argument_errors():
    with pytest.raises(TypeError, match="3 arguments"):
        EXT.adler32_combine(1, 1)
    with pytest.raises(TypeError, match="len2 must be an int"):
        EXT.adler32_combine(1, 1, 2.5)
    with pytest.raises(TypeError, match="adler1 must be an int"):
        EXT.adler32_combine("1", 1, 2)


def test_fold_adler32_over_chunks():
    data = RANDOM_DATA[:1_000_003]
    cuts = [0, 4096, 4097, 500_000, 999_999, len(data)]
    parts = [(checksum.adler32(data[a:b]), b - a) for a, b in zip(cuts, cuts[1:])]
    assert checksum.fold_adler32(parts) == zlib.adler32(data)
    assert checksum.fold_adler32([]) == 1


# -- text forms -------------------------------------------------------------------------------

def test_format_keeps_leading_zeros():
    assert checksum.format_adler32(checksum.adler32(b"")) == "00000001"
    assert checksum.format_adler32(checksum.adler32(b"a")) == "00620062"
    assert checksum.format_xxh3(checksum.xxh3_64(b"")) == f"{xxhash.xxh3_64_intdigest(b''):016x}"
    assert checksum.format_xxh3(1) == "0000000000000001"


def test_parse_round_trips_and_tolerates_dropped_zero():
    for value in (1, 0x00620062, 0xDEADBEEF):
        assert checksum.parse_adler32(checksum.format_adler32(value)) == value
    assert checksum.parse_adler32("620062") == 0x00620062
    assert checksum.parse_adler32(" 0xDEADBEEF\n") == 0xDEADBEEF
    for bad in ("", "xyz", "123456789"):
        with pytest.raises(ValueError, match="not an adler32"):
            checksum.parse_adler32(bad)


# -- the GIL ----------------------------------------------------------------------------------

def _ticks_during(call) -> int:
    """How often another thread took the GIL while `call` ran (it gives the GIL back each tick).

    A long switch interval stops the interpreter from forcing a GIL hand-over at a bytecode
    boundary, so the ticker can only run while `call` itself has released the GIL.
    """
    ticks = [0]
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            ticks[0] += 1
            time.sleep(0)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(2.0)
    thread = threading.Thread(target=ticker)
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while ticks[0] < 3 and time.monotonic() < deadline:
            time.sleep(0.001)
        before = ticks[0]
        call()
        return ticks[0] - before
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(interval)


@needs_ext
@pytest.mark.parametrize("name", ["adler32", "chunk_sums", "xxh3_64"])
def test_gil_released_during_one_long_call(name):
    big = bytes(96 << 20)
    before = EXT.implementation()
    EXT._set_impl("scalar")  # the slowest path gives the longest single call
    try:
        released = _ticks_during(lambda: getattr(EXT, name)(big))
    finally:
        EXT._set_impl(before)
    held = _ticks_during(lambda: sum(range(3_000_000)))  # control: a C loop that keeps the GIL
    assert held <= 2, held
    assert released >= 20, released
