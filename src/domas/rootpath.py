"""Paths under a tier root, the one rule for everyone who names a file there: the archiver (a path a
message announces, a file a scan finds) and `domas publish closed` (which refuses at once what the
archiver would refuse on arrival). Pure: no I/O."""

from __future__ import annotations

import posixpath

from domas.errors import InvalidMessage, UnsafePath


def check_relative(rel: str) -> list[str]:
    """Components of a relative path, refusing anything that could leave the root."""
    if rel.startswith("/") or "\\" in rel or "\0" in rel:
        raise UnsafePath(f"{rel!r} is not a plain relative path; refused")
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise UnsafePath(f"{rel!r} has an empty, '.' or '..' component; refused")
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:        # undecodable bytes (os.fsdecode's surrogates): no catalogue can hold it
        shown = rel.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        raise UnsafePath(f"{shown!r} is not a UTF-8 file name, which the catalogue cannot hold; it is not "
                         "archived: rename it in UTF-8 (e.g. convmv -f latin1 -t utf8)") from None
    return parts


def relative_to_root(path: str, root: str) -> str:
    """A path announced on the bus, relative to the beamline root (refused when outside it)."""
    if path.startswith("/"):
        norm, top = posixpath.normpath(path), posixpath.normpath(root)
        if not norm.startswith(top.rstrip("/") + "/"):
            raise InvalidMessage(f"{path} is not under the beamline root {root}")
        path = norm[len(top.rstrip("/")) + 1:]
    check_relative(path)
    return path
