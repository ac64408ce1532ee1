"""The data service as a security reviewer tries it, on a real port (and in headless Chromium where
a browser's behaviour is the point): security headers and a Content-Security-Policy that the
portal and /docs live with, cross-site form posts refused, session cookies never authorising a
write, and 5xx answers that do not show the server's paths."""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest

from domas.dataservice.app import create_app
from domas.dataservice.users import UserStore

API = "/api/v1"
JS_POLL = ("new Promise(done => { const t0 = Date.now(); (function poll() {"
           " const v = (%s); if (v || Date.now() - t0 > 10000) done(v); else setTimeout(poll, 50); })(); })")


@pytest.fixture
def site(data_world, serve_app, tmp_path):
    """A service with a user store: Grace Hopper (PI of the embargoed beamtime) and an admin."""
    store = UserStore(tmp_path / "users.sqlite")
    store.add("Grace Hopper")
    store.add("Root", "admin")
    tokens = {"grace": store.issue_token("Grace Hopper"), "admin": store.issue_token("Root")}
    base = serve_app(create_app(data_world.catalogue, data_world.tiers, users=store, now=data_world.now))
    yield base, data_world, tokens
    store.close()


def _content(base: str, pid: str, rel: str) -> str:
    return f"{base}{API}/datasets/{quote(pid, safe=':')}/files/{quote(rel)}/content"


def test_every_response_carries_the_security_headers_and_a_csp_without_inline_code(site):
    base, world, _ = site
    pid = world.pids["open"]
    for url in (base + "/", f"{base}/datasets/{pid}", base + "/login", f"{base}{API}/datasets",
                _content(base, pid, "big.bin"), f"{base}/datasets/nope", base + "/docs", base + "/openapi.json"):
        r = httpx.get(url)
        assert r.headers.get("x-content-type-options") == "nosniff", url
        assert r.headers.get("x-frame-options") == "DENY", url
        assert r.headers.get("referrer-policy") == "same-origin", url
        csp = {d.split()[0]: d.split()[1:] for d in r.headers.get("content-security-policy", "").split("; ")}
        assert csp.get("default-src") == ["'none'"] and csp.get("frame-ancestors") == ["'none'"], url
        assert csp.get("form-action") == ["'self'"], url
        if url.endswith("/docs"):                          # Swagger UI: its own script files only
            assert csp["script-src"] == ["'self'"], url
        else:                                              # the portal runs no script, inline or not
            assert "script-src" not in csp and "'unsafe-inline'" not in r.headers["content-security-policy"], url
    page = httpx.get(base + "/").text
    assert "<style" not in page and "<script" not in page and 'rel="stylesheet" href="/assets/style.css?v=' in page
    assert httpx.head(base + "/").headers["x-frame-options"] == "DENY"                   # HEAD as well
    css = httpx.get(base + "/assets/style.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css") and "--accent" in css.text
    docs = httpx.get(base + "/docs").text
    assert "<script>" not in docs and '<script src="/docs/init.js">' in docs
    assert "SwaggerUIBundle" in httpx.get(base + "/docs/init.js").text


def test_the_portal_and_docs_work_under_their_csp_in_a_browser(browser, site):
    """The policy must not break the pages: the stylesheet applies, Swagger UI starts."""
    base, world, _ = site
    browser.viewport(1280, 900)
    browser.navigate(base + "/")
    assert browser.evaluate("getComputedStyle(document.querySelector('header')).backgroundColor") == "rgb(16, 38, 61)"
    browser.navigate(base + "/docs")
    title = browser.evaluate(JS_POLL % "document.querySelector('.swagger-ui .info .title')?.textContent")
    assert title and "domas data service" in title
    assert browser.evaluate("document.querySelectorAll('.opblock').length") >= 5
