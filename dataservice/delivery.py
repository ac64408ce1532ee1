"""What the data service may serve, and how: the pure decisions behind every download.

Invariants (tests/test_dataservice.py checks each through the running service):
- A requested file path is relative, normalised and free of NUL and backslashes; anything else is
  refused (UnsafePath) before the catalogue is asked, and the location served is always the tier
  root + the dataset path + a catalogued relative path, so no request names a file outside a tier.
- Only a replica in state "verified" is ever served, from the first tier in SERVE_ORDER that has one
  and a configured root; other tiers follow in name order.
- Who may see (and so download) a dataset is decided elsewhere, by access.py.
- A Range header is honoured for exactly one byte range; an unknown unit, a malformed or a
  multi-range header is ignored (the whole file is sent, as RFC 9110 allows); a range that starts
  at or after the end of the file is unsatisfiable.
No I/O and no clock here: `now` is passed in.
"""

from __future__ import annotations

import email.utils
import posixpath
import re
from dataclasses import dataclass

from domas.errors import ImpossibleRange, UnsafePath

SERVE_ORDER = ("beamline", "central", "tape")

_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


def check_request_path(path: str) -> str:
    """The file path of a request, refused with one sentence when it could leave the dataset."""
    bad = (not path or "\0" in path or "\\" in path or path.startswith("/")
           or any(part in ("", ".", "..") for part in path.split("/")))
    if bad:
        raise UnsafePath(f"the file path {path!r} is not a plain relative path inside the dataset "
                         "(no '..', no leading '/', no NUL); ask for a path the dataset lists")
    return path


@dataclass(frozen=True)
class Source:
    """Where a file's bytes are read from: a tier and the URL (local path or root://) on it."""

    tier: str
    url: str


def join_location(root: str, dataset_path: str, relpath: str) -> str:
    """Tier root + dataset path + file path; the pieces are already checked to stay inside."""
    inner = posixpath.normpath(posixpath.join(dataset_path.lstrip("/"), relpath))
    if inner == ".." or inner.startswith("../") or inner.startswith("/"):
        raise UnsafePath(f"{relpath!r} of dataset {dataset_path} leads outside the storage tier; not served")
    return root.rstrip("/") + "/" + inner


def sources(replicas: dict, tiers: dict[str, str], dataset_path: str, relpath: str) -> list[Source]:
    """Tiers holding a verified replica with a configured root, in the order to try them."""
    order = list(SERVE_ORDER) + sorted(t for t in tiers if t not in SERVE_ORDER)
    out = []
    for tier in order:
        rep, root = replicas.get(tier), tiers.get(tier, "")
        if rep is not None and rep.state == "verified" and root:
            out.append(Source(tier, join_location(root, dataset_path, relpath)))
    return out


VERIFY_FIRST_BELOW = 16 * 1024 * 1024   # a whole copy this small is read back before its first byte
CHECKED_TRUST_FOR = 3600.0               # seconds a read-back match (scrubber, archiver) vouches for ranges


def read_back_first(*, whole: bool, size: int, suspect: bool, last_checked: float | None, copy_mtime: float,
                    catalogued_mtime: float, now: float) -> bool:
    """Whether a copy must be read back and match the catalogued adler32 before its first byte goes out.

    - A copy that failed while it was streamed (`suspect`) is always read back first.
    - The whole file: its bytes are summed as they go out and the transfer is cut off before the
      last piece if the sum does not match, so only a small copy (< VERIFY_FIRST_BELOW, milliseconds
      to read) is read back first: that one falls back to the next tier within the same request.
    - A range cannot be checked from its own bytes: it is served at once only from a copy whose
      last read-back match (`last_checked`: checked_at, else verified_at) is under CHECKED_TRUST_FOR
      old and whose mtime is still the catalogued one (copies keep their source's mtime; to the second,
      as XRootD reports it).
    A copy read back and matched a moment ago (the service's own cache) is decided by the caller.
    """
    if suspect:
        return True
    if whole:
        return size < VERIFY_FIRST_BELOW
    trusted = (last_checked is not None and 0 <= now - last_checked < CHECKED_TRUST_FOR
               and abs(copy_mtime - catalogued_mtime) < 1.0)     # XRootD reports whole seconds
    return not trusted


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The one byte range [start, end) a Range header asks for, or None to send the whole file.

    ImpossibleRange when the range is valid but unsatisfiable (answer 416).
    """
    if not header or "," in header:
        return None
    m = _RANGE.match(header)
    if not m or (not m.group(1) and not m.group(2)):
        return None
    first, last = m.group(1), m.group(2)
    if not first:                                   # suffix range: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            raise ImpossibleRange(f"the range {header!r} is empty for a file of {size} bytes")
        return max(0, size - n), size
    start = int(first)
    end = size if not last else int(last) + 1
    if last and end <= start:
        return None                                 # invalid (last < first): ignored, as RFC 9110 says
    if start >= size:
        raise ImpossibleRange(f"the range {header!r} starts at or after the end of the file ({size} bytes)")
    return start, min(end, size)


def content_range(start: int, end: int, size: int) -> str:
    return f"bytes {start}-{end - 1}/{size}"


def etag(size: int, adler32: str, xxh3: str) -> str:
    """A strong entity tag from the catalogued content identity."""
    return f'"{xxh3 or adler32 or "nosum"}-{size:x}"'


def digest_header(adler32: str) -> str | None:
    """RFC 3230 instance digest as XRootD and dCache HTTP send it: `adler32=<8 hex digits>`."""
    return f"adler32={adler32}" if adler32 else None


def etag_matches(if_match: str | None, tag: str) -> bool:
    """If-Match: '*' or a list of tags, one of which is ours (weak tags never match)."""
    if if_match is None:
        return True
    items = [t.strip() for t in if_match.split(",")]
    return "*" in items or tag in items


def etag_matches_none(if_none_match: str | None, tag: str) -> bool:
    """If-None-Match: '*' or a list naming our tag (weak comparison, as RFC 9110 asks for GET/HEAD)."""
    if if_none_match is None:
        return False
    items = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in items or tag in items


def not_modified_since(if_modified_since: str | None, if_none_match: str | None, mtime: float | None) -> bool:
    """If-Modified-Since names a moment at or after the file's Last-Modified (whole seconds, as
    the header has them); ignored when If-None-Match is sent, when it is no HTTP date, and when
    the catalogue has no mtime to compare (RFC 9110 13.1.3)."""
    if if_modified_since is None or if_none_match is not None or not mtime:
        return False
    try:
        since = email.utils.parsedate_to_datetime(if_modified_since)
    except (TypeError, ValueError, IndexError):
        return False
    if since.tzinfo is None:
        return False
    return int(mtime) <= since.timestamp()


def page_bounds(offset: int, limit: int, max_limit: int) -> tuple[int, int]:
    """Clamp a paging request: offset >= 0, 1 <= limit <= max_limit."""
    return max(0, offset), max(1, min(limit, max_limit))
