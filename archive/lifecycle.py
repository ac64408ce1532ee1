"""The data policy engine: which copies to make, verify, protect and expire. Pure: `now` is passed in.

Tiers are ordered beamline -> central -> tape; tape is permanent.
Invariants (tests/test_lifecycle.py checks each):
- A copy to the next tier is asked for only when the tier before it holds a verified copy.
- A replica counts as downstream protection only when its state is "verified" (its checksum was
  compared with the catalogued adler32) — "copying", "failed" or "missing" never count.
- No copy is ever deleted unless a verified replica on a later tier is on record. A failing tape
  tier therefore keeps the central copy however long it takes.
- A tier's copy expires only after its retention, counted from when that copy was verified
  (beamline: from when the file was discovered).
- `raw` files are made read-only on the beamline once a verified central copy exists.
- A "bad" replica (read back, it does not match the catalogued adler32) is never a source and never
  protection; it is replaced by a copy from an earlier tier holding the content, or, when none is
  left, from a later verified tier (tape -> central). It is repaired at once, without back-off.
- A replica of another content than the file's current one reaches the policy as "failed" (the
  shell decides that, from the versions the catalogue records), so the current content is copied
  again and nothing is deleted on its strength.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TIERS = ("beamline", "central", "tape")


@dataclass(frozen=True)
class ReplicaState:
    state: str                       # copying | verified | failed | bad | deleted | missing
    since: float                     # when it entered that state (verified: when verified)


@dataclass(frozen=True)
class FileView:
    """What the policy needs to know about one catalogued file."""

    key: str
    area: str                        # raw | processed | ...
    discovered_at: float
    replicas: dict[str, ReplicaState] = field(default_factory=dict)
    read_only: bool = False


@dataclass(frozen=True)
class Retention:
    beamline: float
    central: float
    retry_failed_after: float = 300.0


@dataclass(frozen=True)
class Action:
    kind: str                        # copy | delete | make_read_only
    key: str
    tier: str                        # copy: destination tier; delete/make_read_only: the tier acted on
    source_tier: str = ""


def _verified(view: FileView, tier: str) -> bool:
    r = view.replicas.get(tier)
    return r is not None and r.state == "verified"


def _present(view: FileView, tier: str) -> bool:
    r = view.replicas.get(tier)
    if tier == "beamline":
        return r is None or r.state not in ("deleted", "missing", "bad")
    return r is not None and r.state == "verified"


def _protected(view: FileView, tier: str) -> bool:
    """True when a verified replica exists on a tier after `tier`."""
    later = TIERS[TIERS.index(tier) + 1:]
    return any(_verified(view, t) for t in later)


def _age(view: FileView, tier: str, now: float) -> float:
    if tier == "beamline":
        r = view.replicas.get("beamline")
        return now - (r.since if r is not None and r.state == "verified" else view.discovered_at)
    return now - view.replicas[tier].since


def decide(view: FileView, retention: Retention, now: float) -> list[Action]:
    """The actions due for one file now (empty when nothing is to be done)."""
    actions: list[Action] = []
    for src, dst in zip(TIERS, TIERS[1:]):
        if not _present(view, src) or _verified(view, dst):
            continue
        r = view.replicas.get(dst)
        if r is not None and r.state == "copying":
            continue
        if r is not None and r.state == "failed" and now - r.since < retention.retry_failed_after:
            continue
        actions.append(Action("copy", view.key, dst, src))
        break
    actions += _repairs(view, {a.tier for a in actions if a.kind == "copy"})
    if view.area == "raw" and not view.read_only and _verified(view, "central") and _present(view, "beamline"):
        actions.append(Action("make_read_only", view.key, "beamline"))
    limits = {"beamline": retention.beamline, "central": retention.central}
    for tier, limit in limits.items():
        if _present(view, tier) and _protected(view, tier) and _age(view, tier, now) >= limit:
            actions.append(Action("delete", view.key, tier))
    return actions


def _repairs(view: FileView, copying: set[str]) -> list[Action]:
    """Bad copies that the forward copies above do not already replace: taken from a later tier."""
    out = []
    for i, tier in enumerate(TIERS):
        r = view.replicas.get(tier)
        if tier == "beamline" or r is None or r.state != "bad" or tier in copying:
            continue
        if any(_present(view, t) for t in TIERS[:i]):
            continue                 # the forward loop copies from the earlier tier
        later = [t for t in TIERS[i + 1:] if _verified(view, t)]
        if later:
            out.append(Action("copy", view.key, tier, later[0]))
    return out


def may_delete(view: FileView, tier: str) -> bool:
    """The last guard before any deletion, checked again by the shell right before it deletes."""
    return tier != "tape" and _protected(view, tier)
