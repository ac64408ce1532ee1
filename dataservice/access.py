"""Who may see what in the data service: the one access policy, pure (no I/O, `now` passed in).

Roles, from least to most: anonymous (no credentials), user (a personal token), staff and admin
(personal tokens with that role, or the facility token). "Team member" is not a role a user holds
but a relation to one dataset: the caller's name is the PI of its beamtime or proposal, or is listed
in the beamtime's team (names compare case-insensitively, surrounding spaces ignored).

The rules (tests/test_access.py tables every one):
- A dataset is under embargo while its embargo_end lies after `now`, or when its state is
  "embargoed" with no end date. Under embargo it exists only for its team, staff and admin: for
  anyone else it is absent from search, counts, facets and listings, and every URL under it is 404
  (never 403: a refusal would tell that something exists).
- Once the end date has passed it is open to everyone, with no action by anyone, and its state
  reads "released".
- What a caller may see, it may download. A service with a facility token is private: anonymous
  callers are asked to authenticate (401) everywhere but /healthz.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

ROLES = ("anonymous", "user", "staff", "admin")
PRIVILEGED = ("staff", "admin")


@dataclass(frozen=True)
class Caller:
    """Who is asking: a name ('' when anonymous) and a role from ROLES."""

    name: str = ""
    role: str = "anonymous"

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role {self.role!r} is not one of {', '.join(ROLES)}")

    @property
    def privileged(self) -> bool:
        return self.role in PRIVILEGED


ANONYMOUS = Caller()


@dataclass(frozen=True)
class Scope:
    """What a search may return for a caller: every dataset, or open ones plus the embargoed ones
    of the listed beamtimes (those whose team the caller is in)."""

    see_embargoed: bool
    member_of: tuple[str, ...] = ()


def under_embargo(state: str, embargo_end: float | None, now: float) -> bool:
    if embargo_end is None:
        return state == "embargoed"
    return embargo_end > now


def public_state(state: str, embargo_end: float | None, now: float) -> str:
    """The state callers read: "embargoed" while under embargo, "released" once its end has passed."""
    if state == "deleted":
        return state
    if under_embargo(state, embargo_end, now):
        return "embargoed"
    if embargo_end is not None or state == "released":
        return "released"
    return state


def same_person(a: str, b: str) -> bool:
    return bool(a.strip()) and a.strip().casefold() == b.strip().casefold()


def is_team_member(caller: Caller, team: Iterable[str]) -> bool:
    """The caller is named in `team` (the beamtime's team and PIs)."""
    return caller.role != "anonymous" and any(same_person(caller.name, member) for member in team)


def may_see(caller: Caller, *, state: str, embargo_end: float | None, team: Iterable[str], now: float) -> bool:
    """May `caller` know that this dataset exists, list it and download its files?"""
    if not under_embargo(state, embargo_end, now):
        return True
    return caller.privileged or is_team_member(caller, team)


def must_authenticate(caller: Caller, private: bool) -> bool:
    """A private service (one with a facility token) answers anonymous callers with 401."""
    return private and caller.role == "anonymous"


def search_scope(caller: Caller, member_of: Iterable[str]) -> Scope:
    """The search filter equivalent to `may_see` for every dataset at once; `member_of` are the
    beamtimes whose team holds the caller (ignored for anonymous callers, unneeded for staff)."""
    if caller.privileged:
        return Scope(True)
    if caller.role == "anonymous":
        return Scope(False)
    return Scope(False, tuple(sorted(set(member_of))))
