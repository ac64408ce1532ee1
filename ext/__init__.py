"""domas.checksum: adler32 (the HEP interchange checksum), xxh3 and adler32_combine.

The C extension (`_checksum`) is chosen at import when it is built and DOMAS_NO_EXTENSIONS is
not set; otherwise the pure-Python fallback gives identical results, more slowly.
`IMPLEMENTATION` names the active code path ("avx512vnni", "avx512", "avx2", "ssse3", "scalar",
"python"). The extension picks the fastest path the CPU supports; DOMAS_CHECKSUM_IMPL names a
slower one to use instead (for tests and benchmarks).
"""

from __future__ import annotations

import os

from domas.checksum import _fallback

_impl = None
if os.environ.get("DOMAS_NO_EXTENSIONS", "") in ("", "0"):
    try:
        from domas.checksum import _checksum as _impl  # type: ignore[no-redef]
    except ImportError:
        _impl = None

if _impl is not None and os.environ.get("DOMAS_CHECKSUM_IMPL"):
    try:
        _impl._set_impl(os.environ["DOMAS_CHECKSUM_IMPL"])
    except ValueError as err:
        from domas.errors import ConfigError

        raise ConfigError(f"DOMAS_CHECKSUM_IMPL: {err}") from None

if _impl is not None:
    adler32 = _impl.adler32
    adler32_combine = _impl.adler32_combine
    chunk_sums = _impl.chunk_sums
    xxh3_64 = _impl.xxh3_64
    IMPLEMENTATION: str = _impl.implementation()
else:
    adler32 = _fallback.adler32
    adler32_combine = _fallback.adler32_combine
    chunk_sums = _fallback.chunk_sums
    xxh3_64 = _fallback.xxh3_64
    IMPLEMENTATION = "python"

EXTENSION_LOADED: bool = _impl is not None


def format_adler32(value: int) -> str:
    """8 lowercase hex digits with leading zeros kept, as FTS, Rucio and XRootD exchange it."""
    return f"{value & 0xFFFFFFFF:08x}"


def format_xxh3(value: int) -> str:
    """16 lowercase hex digits, as `xxhsum -H3` prints it."""
    return f"{value & 0xFFFFFFFFFFFFFFFF:016x}"


def parse_adler32(text: str) -> int:
    """Read an adler32 as exchanged by peers; tolerates the dropped leading zero xrdcp prints."""
    text = text.strip().lower()
    if text.startswith("0x"):
        text = text[2:]
    if not text or len(text) > 8 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError(f"{text!r} is not an adler32 checksum (8 hex digits)")
    return int(text, 16)


def fold_adler32(parts) -> int:
    """Whole-file adler32 from (adler32, length) pairs of consecutive chunks, in file order."""
    total = 1
    for value, length in parts:
        total = adler32_combine(total, value, length)
    return total


__all__ = ["adler32", "adler32_combine", "chunk_sums", "xxh3_64", "format_adler32", "format_xxh3",
           "parse_adler32", "fold_adler32", "IMPLEMENTATION", "EXTENSION_LOADED"]
