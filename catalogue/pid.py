"""Persistent identifiers (PIDs) for datasets, CSTR or DOI style.

Invariants:
- A PID is a pure function of (prefix, beamtime, dataset path): the same dataset gets the same PID
  on every machine, after every restart and while the catalogue is unreachable (so the spool can
  name files by their dataset's PID before the catalogue has answered).
- The last part is 60 bits of a BLAKE2b hash of the path in Crockford base32: two paths collide
  with probability 2^-60; the catalogue's unique index refuses a collision instead of merging.
- Accepted prefixes: "CSTR:<5 digits>.<2 digits>[.<name>...]" and "10.<4-9 digits>/<suffix>";
  anything else is a ConfigError naming catalogue.pid_prefix.
"""

from __future__ import annotations

import hashlib
import re

from domas.errors import ConfigError

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_CSTR_RE = re.compile(r"CSTR:\d{5}\.\d{2}(\.[A-Za-z0-9_-]+)*")
_DOI_RE = re.compile(r"10\.\d{4,9}/[A-Za-z0-9._-]*")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def prefix_style(prefix: str) -> str:
    """'cstr' or 'doi'; ConfigError for anything else."""
    if _CSTR_RE.fullmatch(prefix):
        return "cstr"
    if _DOI_RE.fullmatch(prefix):
        return "doi"
    raise ConfigError(f"catalogue.pid_prefix: {prefix!r} is neither a CSTR prefix "
                      "(e.g. CSTR:17058.11.HEPS) nor a DOI prefix (e.g. 10.12345/heps)")


def path_token(path: str) -> str:
    """12 Crockford base32 characters (60 bits) of BLAKE2b over the dataset path."""
    value = int.from_bytes(hashlib.blake2b(path.encode("utf-8"), digest_size=8).digest(), "big") >> 4
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(55, -1, -5))


def dataset_pid(prefix: str, beamtime: str, path: str) -> str:
    """The PID of the dataset at `path` in `beamtime`, e.g. CSTR:17058.11.HEPS.2025-0042.3XK9..."""
    style = prefix_style(prefix)
    beam = _UNSAFE.sub("-", beamtime).strip("-") or "none"
    tail = f"{beam}.{path_token(path)}"
    if style == "doi":
        sep = "" if prefix.endswith("/") else "."
        return f"{prefix}{sep}{tail}".lower()
    return f"{prefix}.{tail}"
