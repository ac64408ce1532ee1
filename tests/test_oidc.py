"""OpenID Connect bearer tokens: keys the test mints, a real issuer (discovery + JWKS) on a loopback
port, and the data service trusting it."""

from __future__ import annotations

import base64
import json

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from fastapi import FastAPI

from domas.dataservice.access import Caller
from domas.dataservice.app import create_app
from domas.dataservice.oidc import OIDCVerifier, check_claims
from domas.errors import Unauthenticated

NOW = 1_790_000_000.0


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(key, claims: dict, kid: str = "k1", alg: str = "RS256") -> str:
    head = b64(json.dumps({"alg": alg, "kid": kid, "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = key.sign(f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{head}.{body}.{b64(sig)}"


def jwk(key, kid: str) -> dict:
    nums = key.public_key().public_numbers()
    return {"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
            "n": b64(nums.n.to_bytes((nums.n.bit_length() + 7) // 8, "big")), "e": b64(nums.e.to_bytes(3, "big"))}


@pytest.mark.parametrize("change,problem", [
    ({}, None),
    ({"iss": "https://evil.example"}, "another identity provider"),
    ({"aud": "other"}, "not meant for this service"),
    ({"aud": ["other", "domas"]}, None),
    ({"exp": NOW - 61}, "expired"), ({"exp": NOW - 30}, None), ({"exp": "soon"}, "expired"),
    ({"nbf": NOW + 120}, "not valid yet"), ({"iat": NOW + 120}, "not valid yet"),
    ({"preferred_username": "", "name": "", "sub": ""}, "names nobody"),
])
def test_claims_table(change, problem):
    claims = {"iss": "https://sso.example/realms/heps", "aud": "domas", "exp": NOW + 300, "iat": NOW - 5,
              "preferred_username": "grace hopper", "sub": "u-17", **change}
    if problem is None:
        assert check_claims(claims, issuer="https://sso.example/realms/heps/", audience="domas",
                            now=NOW).name in ("grace hopper", "u-17")
    else:
        with pytest.raises(Unauthenticated, match=problem):
            check_claims(claims, issuer="https://sso.example/realms/heps", audience="domas", now=NOW)


def test_roles_from_claims():
    base = {"iss": "i", "aud": "domas", "exp": NOW + 60, "sub": "x"}
    assert check_claims({**base, "roles": ["staff"]}, issuer="i", audience="domas", now=NOW) == Caller("x", "staff")
    assert check_claims({**base, "groups": ["admin"]}, issuer="i", audience="domas", now=NOW).role == "admin"
    assert check_claims(base, issuer="i", audience="domas", now=NOW).role == "user"


@pytest.fixture
def issuer(serve_app):
    key, other = (rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2))
    idp = FastAPI()
    idp.state.url = ""

    @idp.get("/healthz")
    def healthz():
        return {}

    @idp.get("/.well-known/openid-configuration")
    def discovery():
        return {"issuer": idp.state.url, "jwks_uri": idp.state.url + "/keys"}

    @idp.get("/keys")
    def keys():
        return {"keys": [jwk(key, "k1")]}

    idp.state.url = serve_app(idp)
    return idp.state.url, key, other


def test_the_data_service_trusts_tokens_its_issuer_signed(issuer, data_world, serve_app):
    url, key, other = issuer
    verifier = OIDCVerifier(url, "domas", now=data_world.now)
    base = serve_app(create_app(data_world.catalogue, data_world.tiers, oidc=verifier, now=data_world.now))
    pid = data_world.pids["embargoed"]
    claims = {"iss": url, "aud": "domas", "exp": data_world.now() + 300, "preferred_username": "Grace Hopper"}

    def get(token: str) -> httpx.Response:
        return httpx.get(f"{base}/api/v1/datasets/{pid}", headers={"Authorization": f"Bearer {token}"})

    assert get(mint(key, claims)).status_code == 200                 # the beamtime's PI: her embargoed dataset
    assert get(mint(key, {**claims, "preferred_username": "Eve"})).status_code == 404     # a user outside it
    assert get(mint(key, {**claims, "preferred_username": "Sam", "roles": ["staff"]})).status_code == 200
    for bad, why in ((mint(other, claims), "does not verify"),
                     (mint(other, claims, kid="k9"), "does not publish"),
                     (mint(key, {**claims, "exp": data_world.now() - 3600}), "expired"),
                     (mint(key, claims, alg="HS256"), "RS256 only"),
                     ("a.b.c", "well-formed")):
        r = get(bad)
        assert r.status_code == 401 and why in r.json()["error"], why
    unsigned = mint(key, claims).rsplit(".", 1)[0] + "."
    assert get(unsigned).status_code == 401
