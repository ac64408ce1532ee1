"""The operator controls over REST: admin only, each change recorded with the caller and time, and
the same one-sentence errors as the rest of the data service (a real uvicorn on a free port)."""

from __future__ import annotations

import httpx

from domas.dataservice.app import create_app

ADMIN = {"Authorization": "Bearer facility-secret"}


def test_admin_sets_proposal_beamtime_embargo_and_reads_history(data_world, serve_app):
    base = serve_app(create_app(data_world.catalogue, data_world.tiers, token="facility-secret",
                                now=data_world.now)) + "/api/v1"
    pid = data_world.pids["open"]
    r = httpx.put(f"{base}/proposals/P-42", json={"pi": "Barbara Liskov"}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["pi"] == "Barbara Liskov"
    r = httpx.put(f"{base}/beamtimes/2025-0042", json={"team": ["Linus", "Ken"], "end": "2026-12-01"}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["team"] == ["Linus", "Ken"] and r.json()["end"] == 1796083200.0
    r = httpx.put(f"{base}/datasets/{pid}/embargo", json={"until": "2031-01-01"}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["state"] == "embargoed"
    r = httpx.post(f"{base}/import", json=[{"proposal": "P-7", "title": "Anodes", "beamtime": "BT7", "pi": "Ada"}],
                   headers=ADMIN)
    assert r.json() == {"proposals": 1, "beamtimes": 1}
    assert data_world.catalogue.get_beamtime("BT7").pi == "Ada"
    hist = httpx.get(f"{base}/history/{pid}", headers=ADMIN).json()
    assert {(h["who"], h["target"], h["field"]) for h in hist} >= {
        ("facility", "proposal:P-42", "pi"), ("facility", "beamtime:2025-0042", "team"),
        ("facility", f"dataset:{pid}", "state")}
    r = httpx.delete(f"{base}/datasets/{pid}/embargo", headers=ADMIN)
    assert r.status_code == 200 and r.json()["state"] == "released"


def test_only_admins_and_mistakes_are_one_sentence(data_world, serve_app):
    base = serve_app(create_app(data_world.catalogue, data_world.tiers, token="facility-secret",
                                now=data_world.now)) + "/api/v1"
    assert httpx.put(f"{base}/proposals/P-42", json={"pi": "Mallory"}).status_code == 401
    assert data_world.catalogue.get_proposal("P-42").pi == "Ada Lovelace"
    r = httpx.put(f"{base}/beamtimes/2025-0042", json={"colour": "red"}, headers=ADMIN)
    assert r.status_code == 400 and "beamtime has no field 'colour'" in r.json()["error"]
    r = httpx.put(f"{base}/datasets/{data_world.pids['open']}/embargo", json={"until": "soon"}, headers=ADMIN)
    assert r.status_code == 400 and r.json()["error"].startswith("until 'soon' is not a date")
    r = httpx.delete(f"{base}/datasets/CSTR:nothing/embargo", headers=ADMIN)
    assert r.status_code == 404


def test_a_beamtime_embargo_through_the_api_covers_datasets_catalogued_later(data_world, serve_app):
    from domas.catalogue import Dataset
    base = serve_app(create_app(data_world.catalogue, data_world.tiers, token="facility-secret",
                                now=data_world.now)) + "/api/v1"
    r = httpx.post(f"{base}/beamtimes/2025-0042/embargo", json={"until": "2031-01-01"}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["embargoed"] == [data_world.pids["open"]]
    later = data_world.catalogue.upsert_dataset(Dataset("2025-0042", "/B1/202611/Data/2025-0042/later",
                                                        metadata={"title": "catalogued later"}))
    assert later.state == "embargoed" and later.embargo_end == 1924992000.0
    seen = httpx.get(f"{base}/datasets", params={"q": "later"}, headers=ADMIN).json()
    assert seen["total"] == 1 and seen["datasets"][0]["pid"] == later.pid
    hist = httpx.get(f"{base}/history/2025-0042", headers=ADMIN).json()
    assert ("facility", "beamtime:2025-0042", "embargo_end") in {(h["who"], h["target"], h["field"]) for h in hist}
    r = httpx.post(f"{base}/beamtimes/NOPE-1/embargo", json={"until": "2031-01-01"}, headers=ADMIN)
    assert r.status_code == 404 and "beamtime NOPE-1 is not in the catalogue" in r.json()["error"]
