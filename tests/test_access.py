"""The access policy (domas.dataservice.access) as tables: roles x embargo x clock, no fixture."""

from __future__ import annotations

import pytest

from domas.dataservice.access import (ANONYMOUS, Caller, Scope, may_see, must_authenticate, public_state,
                                      search_scope, under_embargo)

NOW = 1000.0
TEAM = ("Ada Lovelace", "Grace Hopper")
ada, eve = Caller("ada lovelace ", "user"), Caller("Eve", "user")
staff, admin = Caller("Sam", "staff"), Caller("Root", "admin")
anonymous_ada = Caller("Ada Lovelace", "anonymous")      # a name without credentials is nobody


@pytest.mark.parametrize("state,end,seen_by_anyone,shown_state", [
    ("closed", None, True, "closed"),
    ("archived", 999.0, True, "released"),          # the end has passed: open with no action, "released"
    ("embargoed", 1000.0, True, "released"),        # the end itself is already open
    ("embargoed", 1001.0, False, "embargoed"),
    ("archived", 5000.0, False, "embargoed"),       # an end date in the future embargoes whatever the state
    ("embargoed", None, False, "embargoed"),        # embargoed with no end: until someone releases it
    ("released", None, True, "released"),
    ("deleted", 5000.0, False, "deleted"),
])
def test_embargo_by_clock(state, end, seen_by_anyone, shown_state):
    assert under_embargo(state, end, NOW) is not seen_by_anyone
    assert public_state(state, end, NOW) == shown_state
    for caller in (ANONYMOUS, eve, anonymous_ada):
        assert may_see(caller, state=state, embargo_end=end, team=TEAM, now=NOW) is seen_by_anyone
    for caller in (ada, staff, admin):                  # the team and staff always see it
        assert may_see(caller, state=state, embargo_end=end, team=TEAM, now=NOW)


@pytest.mark.parametrize("caller,private,asked", [
    (ANONYMOUS, True, True), (ANONYMOUS, False, False), (eve, True, False), (admin, True, False)])
def test_a_private_service_asks_anonymous_callers_to_log_in(caller, private, asked):
    assert must_authenticate(caller, private) is asked


@pytest.mark.parametrize("caller,member_of,scope", [
    (ANONYMOUS, ["BT1"], Scope(False)),                 # anonymous is in no team
    (eve, [], Scope(False)),
    (ada, ["BT2", "BT1", "BT1"], Scope(False, ("BT1", "BT2"))),
    (staff, [], Scope(True)), (admin, ["BT1"], Scope(True)),
])
def test_search_scope_matches_may_see(caller, member_of, scope):
    assert search_scope(caller, member_of) == scope


def test_unknown_roles_are_refused():
    with pytest.raises(ValueError):
        Caller("x", "root")


@pytest.mark.parametrize("module", ["dataservice/access.py", "catalogue/search.py",
                                    "dataservice/delivery.py"])
def test_the_policy_and_search_cores_do_no_io(module):
    """Pure cores: no clock, network, database or web framework imports (STYLE.md)."""
    import ast
    from pathlib import Path

    tree = ast.parse((Path(__file__).parent.parent / module).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                 and node.module and node.level == 0}
    assert not imported & {"asyncio", "sqlite3", "pymongo", "httpx", "fastapi", "starlette", "socket", "os",
                           "subprocess", "grpc"}, imported
