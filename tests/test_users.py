"""`domas user add|token|revoke|list` as a user runs them, then the tokens against a real service."""

from __future__ import annotations

import httpx

from domas.dataservice.app import create_app
from domas.dataservice.users import UserStore
from tests.fixtures.common import run_domas, state  # noqa: F401 - the fixture


def test_user_commands_make_tokens_the_service_accepts(state, data_world, serve_app):  # noqa: F811
    assert run_domas("user", "add", "Grace Hopper").returncode == 0
    assert run_domas("user", "add", "sam", "--role", "staff").returncode == 0
    again = run_domas("user", "add", "grace hopper")
    assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr
    r = run_domas("user", "token", "GRACE HOPPER", check=True)
    token = r.stdout.strip()
    assert token.startswith("domas_") and r.stdout == token + "\n"          # stdout holds the token alone
    staff = run_domas("user", "token", "sam", check=True).stdout.strip()
    listed = run_domas("user", "list", check=True).stdout
    assert "Grace Hopper\tuser\ttoken since" in listed and "sam\tstaff" in listed and token not in listed
    assert token not in (state / "users.sqlite").read_bytes().decode("latin-1")

    store = UserStore.in_state_dir(state)
    base = serve_app(create_app(data_world.catalogue, data_world.tiers, users=store, now=data_world.now))
    pid = data_world.pids["embargoed"]
    url = f"{base}/api/v1/datasets/{pid}"
    assert httpx.get(url).status_code == 404
    assert httpx.get(url, headers={"Authorization": f"Bearer {token}"}).json()["state"] == "embargoed"
    assert httpx.get(url, headers={"Authorization": f"Bearer {staff}"}).status_code == 200
    assert run_domas("user", "revoke", "Grace Hopper", check=True).returncode == 0
    assert httpx.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 401
    missing = run_domas("user", "token", "nobody")
    assert missing.returncode == 3 and "no user nobody" in missing.stderr
    store.close()
