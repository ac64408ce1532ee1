"""OpenID Connect bearer tokens for the data service: JWTs signed by the facility's single sign-on.

Configured by controller.oidc_issuer (and controller.oidc_audience, default "domas"); the issuer's
keys come from its JWKS (`<issuer>/.well-known/openid-configuration` -> jwks_uri), cached and
fetched again, at most once a minute, when a token names an unknown key.

Invariants (tests/test_oidc.py):
- Only RS256 signatures are accepted (no "none", no HMAC with a public key as secret); the key is
  the JWKS key the token's `kid` names.
- `iss` must equal the issuer, `aud` must name the audience, `exp` must lie ahead and `nbf`/`iat`
  not in the future (60 s of clock skew allowed). `check_claims` decides this, pure, `now` passed in.
- The caller's name is preferred_username, else name, else sub (matched with beamtime teams like a
  personal token's user); role staff or admin when the `roles` (or `groups`) claim lists it, else user.
Any failure is Unauthenticated with one sentence; nothing about the token is echoed back.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from typing import Callable

from domas.errors import Unauthenticated

from .access import Caller

SKEW = 60.0
REFETCH_SECONDS = 60.0


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and not token.startswith("domas_")


def split_jwt(token: str) -> tuple[dict, dict, bytes, bytes]:
    """(header, claims, signed bytes, signature) of a compact JWS; Unauthenticated if malformed."""
    try:
        head, body, sig = token.split(".")
        header, claims = json.loads(_b64(head)), json.loads(_b64(body))
        signature = _b64(sig)
    except (ValueError, UnicodeDecodeError):
        raise Unauthenticated("the bearer token is not a well-formed JWT") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise Unauthenticated("the bearer token is not a well-formed JWT")
    return header, claims, f"{head}.{body}".encode(), signature


def check_claims(claims: dict, *, issuer: str, audience: str, now: float) -> Caller:
    """The caller a verified token's claims name, or Unauthenticated (see the module invariants)."""
    if not isinstance(claims.get("iss"), str) or claims["iss"].rstrip("/") != issuer.rstrip("/"):
        raise Unauthenticated("the token was issued by another identity provider than this service trusts")
    aud = claims.get("aud")
    if audience not in (aud if isinstance(aud, list) else [aud]):
        raise Unauthenticated(f"the token is not meant for this service (audience {audience!r})")
    exp = claims.get("exp")
    if not isinstance(exp, (int, float)) or exp + SKEW <= now:
        raise Unauthenticated("the token has expired; log in to the facility's sign-on again")
    for key in ("nbf", "iat"):
        t = claims.get(key)
        if t is not None and (not isinstance(t, (int, float)) or t - SKEW > now):
            raise Unauthenticated("the token is not valid yet; check the clocks")
    name = next((claims[k] for k in ("preferred_username", "name", "sub") if isinstance(claims.get(k), str)
                 and claims[k].strip()), "")
    if not name:
        raise Unauthenticated("the token names nobody (no preferred_username, name or sub)")
    granted = [r for k in ("roles", "groups") for r in (claims.get(k) or []) if isinstance(r, str)]
    role = "admin" if "admin" in granted else "staff" if "staff" in granted else "user"
    return Caller(name.strip(), role)


def rsa_key(jwk: dict):
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicNumbers

    n = int.from_bytes(_b64(jwk["n"]), "big")
    e = int.from_bytes(_b64(jwk["e"]), "big")
    return RSAPublicNumbers(e, n).public_key()


class OIDCVerifier:
    """Verifies RS256 JWTs from one issuer against its JWKS (fetched with httpx, cached)."""

    def __init__(self, issuer: str, audience: str = "domas", *, jwks_url: str = "",
                 now: Callable[[], float] = time.time, timeout: float = 5.0) -> None:
        self.issuer, self.audience, self.now, self.timeout = issuer.rstrip("/"), audience, now, timeout
        self._jwks_url = jwks_url
        self._keys: dict[str, object] = {}
        self._fetched = 0.0
        self._lock = threading.Lock()

    def _discover(self) -> str:
        import httpx

        if not self._jwks_url:
            doc = httpx.get(f"{self.issuer}/.well-known/openid-configuration", timeout=self.timeout).json()
            self._jwks_url = doc["jwks_uri"]
        return self._jwks_url

    def _key(self, kid: str):
        import httpx

        with self._lock:
            if kid not in self._keys and time.monotonic() - self._fetched >= REFETCH_SECONDS or not self._fetched:
                try:
                    jwks = httpx.get(self._discover(), timeout=self.timeout).json()
                    self._keys = {k["kid"]: rsa_key(k) for k in jwks.get("keys", [])
                                  if k.get("kty") == "RSA" and "kid" in k}
                except (httpx.HTTPError, ValueError, KeyError, TypeError) as e:
                    raise Unauthenticated(f"the identity provider's keys cannot be fetched now ({type(e).__name__}); "
                                          "try again later") from None
                self._fetched = time.monotonic()
            found = self._keys.get(kid)
        if found is None:
            raise Unauthenticated("the token is signed with a key the identity provider does not publish")
        return found

    def verify(self, token: str) -> Caller:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        header, claims, signed, signature = split_jwt(token)
        if header.get("alg") != "RS256":
            raise Unauthenticated("the token's signature algorithm is not accepted (RS256 only)")
        key = self._key(str(header.get("kid", "")))
        try:
            key.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise Unauthenticated("the token's signature does not verify") from None
        return check_claims(claims, issuer=self.issuer, audience=self.audience, now=self.now())


def verifier_from(controller_cfg) -> OIDCVerifier | None:
    """The verifier controller.oidc_issuer asks for, or None when it is empty."""
    issuer = controller_cfg.oidc_issuer.strip()
    return OIDCVerifier(issuer, controller_cfg.oidc_audience) if issuer else None
