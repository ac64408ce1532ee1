"""Backends by URL scheme: each backend module registers the schemes it serves, `resolve` looks one up.

- A backend module calls `register(opener, "scheme", ...)` at its own import; the package's
  __init__ imports every backend module, so importing `domas.transfer.storage` fills the table.
  Adding a backend (S3, say) is one new module and one import line, never an edit of `resolve`.
- An opener maps a URL of its scheme to (the Storage serving it, the path inside that Storage);
  it shares one Storage (and its connections) per endpoint.
- A location without a scheme is a local path and goes to the "file" opener.
- A scheme nobody registered is one UnknownScheme error naming the schemes that are.
"""

from __future__ import annotations

import re
import threading
from typing import Callable

from domas.errors import UnknownScheme, UsageError

from .base import Storage

Opener = Callable[[str], "tuple[Storage, str]"]

_SCHEME = re.compile(r"^(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*)://")
_openers: dict[str, Opener] = {}
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


def schemes() -> tuple[str, ...]:
    """The registered schemes, sorted."""
    with _lock:
        return tuple(sorted(_openers))


def scheme_of(url: str) -> str:
    """The lowercased scheme of a URL, or "" for a plain local path."""
    m = _SCHEME.match(url)
    return m.group("scheme").lower() if m else ""


def resolve(url: str) -> tuple[Storage, str]:
    """Map a user's location to its backend and the path inside it (see the module docstring)."""
    scheme = scheme_of(url) or "file"
    with _lock:
        opener = _openers.get(scheme)
    if opener is None:
        known = ", ".join(f"{s}://" for s in schemes())
        raise UnknownScheme(f"{url}: no storage backend serves {scheme}:// locations (use a local path or one of "
                            f"{known})")
    return opener(url)
