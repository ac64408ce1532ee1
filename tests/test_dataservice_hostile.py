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


def _raw(base: str, target: str, method: str = "GET") -> tuple[int, str, bytes]:
    """A request with its target sent exactly as written."""
    import socket
    from urllib.parse import urlsplit

    u = urlsplit(base)
    with socket.create_connection((u.hostname, u.port), timeout=10) as sock:
        sock.sendall(f"{method} {target} HTTP/1.1\r\nHost: {u.netloc}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    ctype = next((v for k, _, v in (h.partition(": ") for h in lines[1:]) if k.lower() == "content-type"), "")
    return int(lines[0].split()[1]), ctype, body


def test_a_target_in_absolute_form_is_served_as_its_path(base, data_world):
    """`GET http://host/path HTTP/1.1`, which a server must accept (RFC 9112 3.2.2), was a 404 page:
    uvicorn passes the whole URL on as the path."""
    pid = data_world.pids["open"]
    status, ctype, body = _raw(base, f"{base}{API}/datasets?q=lysozyme")
    assert status == 200 and ctype == "application/json" and pid in body.decode()
    status, _, body = _raw(base, f"{base}{API}/datasets/{pid}/files/sub/scan%20%C3%BC%201.h5/content")
    assert status == 200 and body == data_world.data["sub/scan ü 1.h5"]
    assert _raw(base, base)[0] == 200 and _raw(base, f"{base}/no/such")[0] == 404
