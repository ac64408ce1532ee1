"""Pure-Python hashing: zlib + xxhash + the adler32_combine arithmetic.

Used when the C extension is absent or DOMAS_NO_EXTENSIONS=1. Results are identical to the
extension's; only the speed differs.
"""

from __future__ import annotations

import zlib

import xxhash

BASE = 65521  # largest prime below 2**16


def adler32(data, value: int = 1) -> int:
    return zlib.adler32(data, value) & 0xFFFFFFFF


def adler32_combine(adler1: int, adler2: int, len2: int) -> int:
    """Adler-32 of A+B from adler32(A), adler32(B) and len(B) (zlib's adler32_combine)."""
    if len2 < 0:
        raise ValueError("len2 must not be negative")
    rem = len2 % BASE
    a1, b1 = adler1 & 0xFFFF, (adler1 >> 16) & 0xFFFF
    a2, b2 = adler2 & 0xFFFF, (adler2 >> 16) & 0xFFFF
    a = (a1 + a2 - 1) % BASE
    b = (b1 + b2 + rem * a1 - rem) % BASE
    return (b << 16) | a


def chunk_sums(data) -> tuple[int, int]:
    return adler32(data), xxhash.xxh3_64_intdigest(data)


def xxh3_64(data) -> int:
    return xxhash.xxh3_64_intdigest(data)
