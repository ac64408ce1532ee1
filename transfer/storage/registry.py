"""Backends by URL scheme: each backend module registers the schemes it serves, `resolve` looks one up.

- A backend module calls `register(opener, "scheme", ...)` at its own import. The package's
  __init__ imports the POSIX backend (local paths are the common case) and names, with `provide`,
  the module behind every other scheme; that module is imported, and so registers itself, the first
  time one of its URLs is resolved. A local copy thus never loads httpx or the XRootD client (about
  0.1 s each at start, and XRootD's walk of every object at exit). Adding a backend (S3, say) is
  one new module and one `provide` line, never an edit of `resolve`.
- An opener maps a URL of its scheme to (the Storage serving it, the path inside that Storage);
  it shares one Storage (and its connections) per endpoint.
- A location without a scheme is a local path and goes to the "file" opener.
- A scheme nobody registered or provided is one UnknownScheme error naming the schemes that are.
"""

from __future__ import annotations

import importlib
import re
import threading
from collections.abc import Callable

from domas.errors import UnknownScheme, UsageError

from .base import Storage

Opener = Callable[[str], "tuple[Storage, str]"]

_SCHEME = re.compile(r"^(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*)://")
_openers: dict[str, Opener] = {}
_providers: dict[str, str] = {}       # scheme -> the module whose import registers its opener
_lock = threading.Lock()


def register(opener: Opener, *schemes: str) -> None:
    """Serve URLs of `schemes` (case-insensitive) with `opener`; a scheme is registered once."""
    if not schemes:
        raise UsageError("register() needs at least one URL scheme")
    with _lock:
        for scheme in schemes:
            key = scheme.lower()
            if key in _openers and _openers[key] is not opener:
                raise UsageError(f"the URL scheme {key}:// is already served by another storage backend")
            _openers[key] = opener


def provide(module: str, *schemes: str) -> None:
    """Declare that importing `module` registers the opener of `schemes` (imported on first use)."""
    with _lock:
        for scheme in schemes:
            _providers[scheme.lower()] = module


def schemes() -> tuple[str, ...]:
    """The schemes served (registered, or provided by a module not imported yet), sorted."""
    with _lock:
        return tuple(sorted(set(_openers) | set(_providers)))


def _opener(scheme: str) -> Opener | None:
    with _lock:
        opener, module = _openers.get(scheme), _providers.get(scheme)
    if opener is None and module is not None:
        importlib.import_module(module)          # its register() call fills the table
        with _lock:
            opener = _openers.get(scheme)
    return opener


def scheme_of(url: str) -> str:
    """The lowercased scheme of a URL, or "" for a plain local path."""
    m = _SCHEME.match(url)
    return m.group("scheme").lower() if m else ""


def resolve(url: str) -> tuple[Storage, str]:
    """Map a user's location to its backend and the path inside it (see the module docstring)."""
    scheme = scheme_of(url) or "file"
    opener = _opener(scheme)
    if opener is None:
        known = ", ".join(f"{s}://" for s in schemes())
        raise UnknownScheme(f"{url}: no storage backend serves {scheme}:// locations (use a local path or one of "
                            f"{known})")
    return opener(url)
