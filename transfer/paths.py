"""Storage roots and path safety: does a location lie inside one of the deployment's roots?

Invariants:
- A location is absolute: a POSIX path ("/data/x"), a file:///path URL, or
  root://host[:port]//path (also xroot://, roots://, xroots://). Relative paths, other schemes,
  NUL, empty strings, `..` components, names over 255 bytes and paths over 4096 bytes are
  refused, never repaired.
- `normalise()` is pure: it only collapses "//" and "." components and spells the XRootD
  endpoint one way (lower-case host, port 1094 when none is given); the same text always gives
  the same Location.
- Inside means: the same endpoint, and the root's path is the location's path or a
  whole-component prefix of it ("/data/b1" does not contain "/data/b10").
- Everything above the `Confinement` class does no I/O. `Confinement` is the one shell: it maps
  local locations through realpath, so a symlink inside a root that points outside is caught.
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

from domas.errors import ConfigError, UnsafePath

MAX_NAME_BYTES = 255          # NAME_MAX
MAX_PATH_BYTES = 4096         # PATH_MAX
MAX_URL_CHARS = MAX_PATH_BYTES + 300
XROOTD_PORT = 1094

_REMOTE = re.compile(r"^(?P<scheme>roots?|xroots?)://(?P<host>[^/]*)/(?P<path>.*)$", re.S)
_ANY_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_HOST = re.compile(r"^(?:[A-Za-z0-9._~-]+@)?(?:[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")


@dataclass(frozen=True)
class Location:
    """Where a file lives: `endpoint` is "" for local paths, "root://host:port" for XRootD."""

    endpoint: str
    path: str

    @property
    def url(self) -> str:
        return f"{self.endpoint}/{self.path}" if self.endpoint else self.path


@dataclass(frozen=True)
class Root:
    """One storage root a deployment declares; `key` names where it was declared."""

    key: str
    location: Location


def _short(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:77] + "...")


def normalise(text: object, what: str = "path") -> Location:
    """The one spelling of an absolute location; UnsafePath (one sentence) for anything else."""
    if not isinstance(text, str) or not text:
        raise UnsafePath(f"{what} is empty; give an absolute path or a root:// URL")
    if "\x00" in text:
        raise UnsafePath(f"{what} {_short(text)} contains a NUL character")
    if len(text) > MAX_URL_CHARS:
        raise UnsafePath(f"{what} is {len(text)} characters long; at most {MAX_URL_CHARS} are allowed")
    if text.startswith("file://"):
        rest = text[len("file://"):]
        if not rest.startswith("/"):
            raise UnsafePath(f"{what} {_short(text)} is not a local file URL; write file:///absolute/path")
        return Location("", _clean_path(rest, text, what))
    m = _REMOTE.match(text)
    if m:
        return Location(_endpoint(m.group("scheme"), m.group("host"), text, what),
                        _clean_path(m.group("path"), text, what, remote=True))
    if _ANY_SCHEME.match(text):
        raise UnsafePath(f"{what} {_short(text)} uses an unsupported scheme; use a local path, file:// or root://")
    return Location("", _clean_path(text, text, what))


def _endpoint(scheme: str, host: str, text: str, what: str) -> str:
    if not _HOST.match(host):
        raise UnsafePath(f"{what} {_short(text)} does not name a server as host:port")
    host = host.lower()
    if not re.search(r":[0-9]+$", host):
        host = f"{host}:{XROOTD_PORT}"
    elif int(host.rsplit(":", 1)[1]) > 65535:
        raise UnsafePath(f"{what} {_short(text)} names a port above 65535")
    return f"{scheme.lower()}://{host}"


def _clean_path(path: str, text: str, what: str, remote: bool = False) -> str:
    if not path.startswith("/"):
        shape = "root://host:port//absolute/path" if remote else "an absolute path"
        raise UnsafePath(f"{what} {_short(text)} is relative; give {shape}")
    if remote and ("?" in path or "#" in path):
        raise UnsafePath(f"{what} {_short(text)} carries a query or fragment; give a plain root://host:port//path")
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise UnsafePath(f"{what} is longer than {MAX_PATH_BYTES} bytes")
    parts = []
    for name in path.split("/"):
        if name in ("", "."):
            continue
        if name == "..":
            raise UnsafePath(f"{what} {_short(text)} contains '..'; give the path without it")
        if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
            raise UnsafePath(f"{what} has a name longer than {MAX_NAME_BYTES} bytes ({_short(name)})")
        parts.append(name)
    return "/" + "/".join(parts)


def contains(root: Location, loc: Location) -> bool:
    if root.endpoint != loc.endpoint:
        return False
    return loc.path == root.path or root.path == "/" or loc.path.startswith(root.path + "/")


def root_of(loc: Location, roots: Sequence[Root]) -> Root | None:
    """The first root holding `loc`, or None."""
    return next((r for r in roots if contains(r.location, loc)), None)


def describe(roots: Sequence[Root]) -> str:
    shown = ", ".join(r.location.url for r in roots[:4])
    return shown + (f" and {len(roots) - 4} more" if len(roots) > 4 else "")


def inside(text: str, roots: Sequence[Root], what: str = "path") -> Location:
    """Normalise `text` and require it inside one of `roots` (lexically; see Confinement for links)."""
    loc = normalise(text, what)
    if root_of(loc, roots) is None:
        raise UnsafePath(f"{what} {_short(text)} is outside the storage roots ({describe(roots)})")
    return loc


def parse_roots(declared: Iterable[tuple[str, str]]) -> tuple[Root, ...]:
    """Roots from (key, location) pairs; a location that is not absolute is a ConfigError naming its key."""
    out: list[Root] = []
    for key, text in declared:
        try:
            loc = normalise(text, key)
        except UnsafePath as e:
            raise ConfigError(f"{e}; a storage root must be an absolute path or root://host:port//path") from None
        if all(r.location != loc for r in out):
            out.append(Root(key, loc))
    return tuple(out)


def controller_roots(declared: Iterable[tuple[str, str]], extra: Iterable[str] = ()) -> tuple[Root, ...]:
    """The roots a controller confines transfers to: the configuration's (StorageConfig.roots())
    plus every --root; none at all is a ConfigError naming the keys to set."""
    roots = parse_roots([*declared, *(("--root", r) for r in extra)])
    if not roots:
        raise ConfigError("the controller has no storage root to confine transfers to; give --root PATH_OR_URL, "
                          "or set storage.beamline/central/tape or [storage.endpoints] in the configuration")
    return roots


class Confinement:
    """The shell: roots plus realpath, so links cannot lead a local location out of every root.

    Local roots are resolved once per instance (make one per request: a root mounted later is
    seen). `check_real` resolves the parent directory through a cache and the leaf only when it
    is a symlink, so checking a million files under a few directories costs one lstat each.
    """

    def __init__(self, roots: Sequence[Root], private: Sequence[str] = ()) -> None:
        self.roots = tuple(roots)
        self._real_roots = [os.path.realpath(r.location.path) for r in self.roots if not r.location.endpoint]
        self._private = [os.path.realpath(p) for p in private]      # e.g. the controller's state directory
        self._dirs: dict[str, str] = {}

    def lexical(self, text: str, what: str = "path") -> Location:
        return inside(text, self.roots, what)

    @staticmethod
    def _under(real: str, tops: Sequence[str]) -> bool:
        return any(real == r or r == "/" or real.startswith(r + "/") for r in tops)

    def _real_dir(self, path: str) -> str:
        real = self._dirs.get(path)
        if real is None:
            if len(self._dirs) > 100_000:
                self._dirs.clear()
            real = self._dirs[path] = os.path.realpath(path)
        return real

    def check_real(self, loc: Location, what: str = "path") -> None:
        """UnsafePath when a local location resolves (through symlinks) outside every local root,
        or inside a private directory (the controller's own state)."""
        if loc.endpoint:
            return
        parent, name = posixpath.split(loc.path)
        real = posixpath.join(self._real_dir(parent), name) if name else self._real_dir(parent)
        if name and os.path.islink(loc.path):
            real = os.path.realpath(loc.path)
        if not self._under(real, self._real_roots):
            raise UnsafePath(f"{what} {_short(loc.url)} leads outside the storage roots through a symlink "
                             f"(to {_short(real)})")
        if self._under(real, self._private):
            raise UnsafePath(f"{what} {_short(loc.url)} is inside the controller's own state directory")
