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
- /metrics (request counts, bytes and latencies: the facility's monitoring, not the users') is
  open to everyone only on a public service with no scrape guard. A scrape token
  (controller.http_metrics_token, sent as a Bearer token, as Prometheus' `authorization` sends it)
  or a request from an allowed address (controller.http_metrics_allow) opens it, and so do staff
  and admin; configuring either guard closes it to everyone else, and a private service keeps it
  from anonymous callers and plain users whether or not a guard is set (`may_read_metrics`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Iterable

from domas.catalogue.base import public_state, under_embargo  # noqa: F401  (one rule: the catalogue's)
from domas.errors import ConfigError

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


@dataclass(frozen=True)
class MetricsGuard:
    """Who may scrape /metrics besides staff and admin: the holder of `token` (when set) and any
    client address inside `allow` (networks)."""

    token: str = ""
    allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def parse(cls, token: str, allow: Iterable[str]) -> "MetricsGuard":
        """From the configuration; an entry of `allow` that is no address or network is ConfigError."""
        nets = []
        for entry in allow:
            try:
                nets.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                raise ConfigError(f"controller.http_metrics_allow: {entry!r} is not an address or network "
                                  "such as 10.0.0.7 or 10.0.0.0/24") from None
        return cls(token, tuple(nets))

    @classmethod
    def of(cls, controller) -> "MetricsGuard":
        """The guard [controller] configures (http_metrics_token, http_metrics_allow)."""
        return cls.parse(controller.http_metrics_token, controller.http_metrics_allow)

    @property
    def set(self) -> bool:
        return bool(self.token or self.allow)

    def allows_address(self, host: str | None) -> bool:
        try:
            address = ipaddress.ip_address((host or "").strip("[]"))
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in net for net in self.allow)


def may_read_metrics(caller: Caller, *, private: bool, guarded: bool, scraper: bool) -> bool:
    """May this request read /metrics? `guarded`: a scrape token or an address list is configured;
    `scraper`: the request carries that token or comes from an allowed address."""
    if scraper or caller.privileged:
        return True
    return not private and not guarded
