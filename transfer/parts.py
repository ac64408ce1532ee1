"""Part-file names: the one spelling of the hidden name a destination is written under.

Invariants: a destination `DIR/NAME` is written as `DIR/.NAME.domas-part` (a name too long for
the filesystem becomes `DIR/.<sha1 of NAME>.domas-part`) and renamed to `DIR/NAME` only when
complete and verified. Every part file is hidden (starts with a dot) and ends in PART_SUFFIX, so
listings, discovery and the janitor recognise it by `is_part_name` alone. Works on local paths
and on URLs (root://host:port//dir/name) alike. Pure: no I/O.
"""

from __future__ import annotations

import os
import posixpath

PART_SUFFIX = ".domas-part"
TIER_MARKER = ".domas-tier"     # at a storage tier's root: the controller's proof it is mounted (controller/tiers.py)
_NAME_MAX = 255


def tier_marker_url(root: str) -> str:
    """Where the marker of the tier rooted at `root` (a path or a URL) is."""
    if "://" in root:
        return f"{root.rstrip('/')}/{TIER_MARKER}"
    return posixpath.join(root.rstrip("/") or "/", TIER_MARKER)


def part_path(dst: str) -> str:
    """The hidden temporary name `dst` (a path or a URL) is written under until it is complete."""
    parent, name = posixpath.split(dst)
    hidden = f".{name}{PART_SUFFIX}"
    if len(os.fsencode(hidden)) > _NAME_MAX:          # the name's bytes, also when they are not UTF-8
        import hashlib                                 # here: ~2 ms of every `domas get` start otherwise

        hidden = f".{hashlib.sha1(os.fsencode(name)).hexdigest()}{PART_SUFFIX}"
    return posixpath.join(parent, hidden) if parent else hidden


def is_part_name(name: str) -> bool:
    """True for the base name of a part file."""
    return name.startswith(".") and name.endswith(PART_SUFFIX) and len(name) > len(PART_SUFFIX) + 1


def final_name(part_name: str) -> str | None:
    """The destination's base name for a part file's base name (None for no part name). For a
    name too long to keep this is the hash it was written under, which names no destination."""
    if not is_part_name(part_name):
        return None
    return part_name[1:-len(PART_SUFFIX)]
