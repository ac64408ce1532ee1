"""Odd requests a script or a hostile client sends to the data service's API, on a real port."""

from __future__ import annotations

import httpx
import pytest

from domas.dataservice.app import create_app

API = "/api/v1"


@pytest.fixture
def base(data_world, serve_app):
    return serve_app(create_app(data_world.catalogue, data_world.tiers, now=data_world.now))


@pytest.mark.parametrize("query", ["q=lysozyme&q=nothing", "limit=1&limit=2", "beamline=B1&beamline=B1",
                                   "q=a&sort=title&sort=newest"])
def test_a_parameter_given_twice_is_refused_not_half_read(base, query):
    """`q=lysozyme&q=nothing` searched for "nothing" alone (the last value won, silently)."""
    r = httpx.get(f"{base}{API}/datasets?{query}")
    assert r.status_code == 400, r.text
    assert "is given more than once" in r.json()["error"] and r.json()["kind"] == "usage"


def test_a_parameter_given_twice_on_a_dataset_is_refused(base, data_world):
    pid = data_world.pids["open"]
    assert httpx.get(f"{base}{API}/datasets/{pid}?offset=0&offset=2").status_code == 400
    assert httpx.get(f"{base}{API}/datasets/{pid}?offset=0&limit=2").status_code == 200
    assert httpx.get(f"{base}{API}/datasets?q=lysozyme&limit=5").status_code == 200
