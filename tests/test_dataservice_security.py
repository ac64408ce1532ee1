"""The data service as a security reviewer tries it, on a real port (and in headless Chromium where
a browser's behaviour is the point): security headers and a Content-Security-Policy that the
portal and /docs live with, cross-site form posts refused, session cookies never authorising a
write, and 5xx answers that do not show the server's paths."""

from __future__ import annotations

import http.server
import select
import shutil
import socket
import subprocess
import threading
import tracemalloc
from urllib.parse import quote, urlsplit

import httpx
import pytest

from domas.dataservice.app import create_app
from domas.dataservice.users import UserStore
from tests.fixtures.common import wait_until
from tests.fixtures.dataservice import portal_login, portal_logout

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


# -- cross-site request forgery --------------------------------------------------------------------

@pytest.fixture
def attacker_site():
    """Another site's pages: http://localhost:PORT is a different site from the service's
    127.0.0.1 for the browser. `serve(html)` returns the URL of a page with that body."""
    pages: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path, b"")
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def serve(html: str) -> str:
        name = f"/page{len(pages)}.html"
        pages[name] = html.encode()
        return f"http://localhost:{server.server_address[1]}{name}"

    yield serve
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def _auto_post(action: str, fields: dict[str, str]) -> str:
    inputs = "".join(f'<input type="hidden" name="{k}" value="{v}">' for k, v in fields.items())
    return (f'<!doctype html><form id="f" method="post" action="{action}">{inputs}</form>'
            '<script>document.getElementById("f").submit()</script>')


def _landed_on(browser, base: str) -> None:
    """Wait until the attacker's page has posted its form and the service's answer has loaded."""
    wait_until(lambda: browser.evaluate("location.origin + '|' + document.readyState") == base + "|complete",
               timeout=10, what="the cross-site post to be answered")


def _who_is_logged_in(browser, base: str) -> str | None:
    browser.navigate(base + "/")
    return browser.evaluate("document.querySelector('nav .user')?.textContent ?? null")


def test_another_site_cannot_log_a_visitor_in_or_out_in_a_browser(browser, site, attacker_site):
    """Login CSRF: a page elsewhere auto-posted the attacker's token to /login, and the visitor's
    browser was then logged in as the attacker (their searches and downloads under his name).
    Logout CSRF: a page elsewhere logged the visitor out. Both posts are refused now."""
    base, world, tokens = site
    browser.viewport(1280, 900)
    browser.navigate(attacker_site(_auto_post(base + "/login", {"token": tokens["admin"]})))
    _landed_on(browser, base)
    assert _who_is_logged_in(browser, base) is None
    browser.navigate(base + "/login")                         # the visitor logs in, on the service's own page
    browser.evaluate(f"document.querySelector('input[name=token]').value = {tokens['grace']!r};"
                     "document.querySelector('form.login').submit()", navigates=True)
    assert _who_is_logged_in(browser, base) == "Grace Hopper"
    browser.navigate(attacker_site(_auto_post(base + "/logout", {})))
    _landed_on(browser, base)
    assert _who_is_logged_in(browser, base) == "Grace Hopper"
    browser.evaluate("document.querySelector('nav form button').click()", navigates=True)   # her own button works
    assert _who_is_logged_in(browser, base) is None


def test_a_portal_session_never_authorises_a_change(site):
    """An admin logged in to the portal: the operator API (embargo, release, import) took the
    session cookie as the admin, so any page that could make the browser send the request changed
    the catalogue. A change now needs the Authorization header."""
    base, world, tokens = site
    pid = world.pids["open"]
    with httpx.Client(base_url=base) as client:
        assert portal_login(client, tokens["admin"]).status_code == 303
        assert "Root" in client.get("/").text                                # the session works for pages
        r = client.put(f"{API}/datasets/{pid}/embargo", json={"until": "2099-01-01"})
        assert r.status_code == 403 and "Authorization" in r.json()["error"], r.text
        r = client.put(f"{API}/datasets/{pid}/embargo", json={"until": "2099-01-01"},
                       headers={"Authorization": f"Bearer {tokens['admin']}"})
        assert r.status_code == 200 and r.json()["embargo_end"] > 4e9
    assert world.catalogue.get_dataset(pid).embargo_end > 4e9


@pytest.mark.parametrize("headers,refused", [
    ({}, False),                                                          # a script: no browser headers
    ({"Sec-Fetch-Site": "same-origin"}, False), ({"Sec-Fetch-Site": "none"}, False),
    ({"Sec-Fetch-Site": "cross-site"}, True), ({"Sec-Fetch-Site": "same-site"}, True),
    ({"Origin": "null"}, True), ({"Origin": "http://evil.example"}, True),
    ({"Origin": "{base}"}, False),
    ({"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}, True),
])
def test_writes_from_another_site_are_refused_before_any_route(site, headers, refused):
    base, world, tokens = site
    sent = {k: v.format(base=base) for k, v in headers.items()}
    r = httpx.put(f"{base}{API}/datasets/{world.pids['open']}/embargo", json={"until": "2099-01-01"},
                  headers={"Authorization": f"Bearer {tokens['admin']}", **sent})
    assert r.status_code == (403 if refused else 200), r.text
    if refused:
        assert "another site" in r.json()["error"]
        assert world.catalogue.get_dataset(world.pids["open"]).embargo_end is None
    assert httpx.get(f"{base}{API}/datasets", headers=sent).status_code == 200       # reading is never refused


def test_login_and_logout_forms_need_their_form_token(site):
    base, _, tokens = site
    with httpx.Client(base_url=base) as client:
        r = client.post("/login", data={"token": tokens["grace"]})                      # no form token
        assert r.status_code == 403 and "domas_session" not in r.headers.get("set-cookie", "")
        assert "out of date" in r.text and 'name="csrf"' in r.text                     # a fresh form to try again
        assert portal_login(client, tokens["grace"]).status_code == 303
        assert client.post("/logout", data={"csrf": "forged-forged-forged-forged"}).status_code == 403
        assert "Grace Hopper" in client.get("/").text                                   # still logged in
        assert portal_logout(client).status_code == 303
        assert "Grace Hopper" not in client.get("/").text


# -- what errors tell ------------------------------------------------------------------------------

def test_5xx_answers_name_no_server_path_and_the_log_keeps_why(data_world, serve_app, caplog):
    """A copy missing from its tier answered 503 with the copy's full path on the server, and a
    failing catalogue 500 with the database's path and SQLite's own text; now the caller reads what
    failed and what to do, and the service's log has the details."""
    base = serve_app(create_app(data_world.catalogue, data_world.tiers, now=data_world.now))
    pid = data_world.pids["open"]
    data_world.on_tier("central", "big.bin").unlink()                   # its only verified copy
    caplog.set_level("WARNING", logger="domas.dataservice")
    r = httpx.get(_content(base, pid, "big.bin"))
    assert r.status_code == 503
    assert "no verified copy of big.bin can be read now (central: cannot be read;" in r.json()["error"]
    data_world.catalogue._db.close()                                   # the catalogue fails from now on
    answers = [httpx.get(base + path) for path in (f"{API}/datasets", "/", f"{API}/datasets/{pid}")]
    assert [a.status_code for a in answers] == [500, 500, 500]
    assert "try again later" in answers[0].json()["error"] and "Something went wrong" in answers[1].text
    root = str(data_world.root)
    for answer in (r, *answers):
        assert root not in answer.text and root not in answer.headers.get("x-domas-error", "")
        assert "closed database" not in answer.text and "sqlite" not in answer.text.lower()
    logged = caplog.text
    assert str(data_world.on_tier("central", "big.bin")) in logged and "catalogue.sqlite" in logged


# -- a private portal in a browser -----------------------------------------------------------------

def test_an_ended_session_shows_the_login_form_and_returns_to_the_page(browser, private_service):
    """A scientist's session ended (12 h) on a private portal: the next page was a 401 with a Basic
    challenge, so Chromium showed a blank page (a headed one asks for a user name and password in
    its own dialog). Now the page is the login form, saying why, and logging in returns to it."""
    from domas.dataservice.api import SESSION_SECONDS

    base, world, token = private_service
    page = f"{base}/datasets/{world.pids['embargoed']}"
    browser.viewport(1280, 900)
    browser.navigate(base + "/login")
    browser.evaluate(f"document.querySelector('input[name=token]').value = {token!r};"
                     "document.querySelector('form.login').submit()", navigates=True)
    browser.navigate(page)
    assert browser.evaluate("document.querySelector('h1').textContent") == "Embargoed scan"
    world.clock[0] += SESSION_SECONDS + 1
    browser.navigate(page)
    assert "Your session has ended; log in again." in browser.evaluate("document.body.innerText")
    browser.screenshot("session-ended")
    browser.evaluate(f"document.querySelector('input[name=token]').value = {token!r};"
                     "document.querySelector('form.login').submit()", navigates=True)
    assert browser.evaluate("location.href") == page
    assert browser.evaluate("document.querySelector('h1').textContent") == "Embargoed scan"


@pytest.mark.parametrize("target", ["//evil.example/x", "http://evil.example/", "/\\evil.example", "javascript:x"])
def test_login_never_sends_the_browser_to_another_site(private_service, target):
    base, _, token = private_service
    with httpx.Client(base_url=base) as client:
        client.get("/login")
        r = client.post("/login", data={"token": token, "csrf": client.cookies["domas_form"], "next": target})
        assert r.status_code == 303 and r.headers["location"] == "/"


# -- downloads as scientists' tools name them -----------------------------------------------------

@pytest.mark.parametrize("rel,saved_as", [("big.bin", "big.bin"), ("sub/scan ü 1.h5", "scan _ 1.h5")])
def test_curl_oj_saves_a_file_under_its_name(site, tmp_path, rel, saved_as):
    """`curl -OJ LINK` (the portal's download link) saved every file as "content": curl reads only
    the plain filename parameter, and the service sent only filename* (RFC 5987)."""
    base, world, _ = site
    into = tmp_path / "downloads"
    into.mkdir()
    curl = shutil.which("curl")
    if curl is None:
        pytest.fail("curl is not installed (Debian: apt-get install curl); scripts/test installs it")
    done = subprocess.run([curl, "-sSfOJ", _content(base, world.pids["open"], rel)], cwd=into,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert [p.name for p in into.iterdir()] == [saved_as]
    assert (into / saved_as).read_bytes() == world.data[rel]


def test_a_browser_saves_a_download_link_under_its_unicode_name(browser, site, tmp_path):
    base, world, _ = site
    into = tmp_path / "downloads"
    into.mkdir()
    browser.call("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(into)})
    browser.navigate(f"{base}/datasets/{world.pids['open']}")
    browser.evaluate("[...document.querySelectorAll('a[download]')].find(a => a.href.includes('scan')).click()")
    wait_until(lambda: [p.name for p in into.iterdir()] == ["scan ü 1.h5"], timeout=10, what="the download")
    assert (into / "scan ü 1.h5").read_bytes() == world.data["sub/scan ü 1.h5"]


def test_an_error_page_still_shows_who_is_logged_in(private_service):
    """A logged-in scientist who followed a dead link got a 404 page whose header offered "Log in",
    as if the session had gone (so did the login page itself); it shows her name and "Log out"
    like every other page."""
    base, _, token = private_service
    with httpx.Client(base_url=base) as client:
        assert portal_login(client, token).status_code == 303
        for path in ("/datasets/CSTR:nope", "/no/such/page", "/?year=0000", "/login"):
            r = client.get(path)
            assert r.status_code in (200, 400, 404), path
            assert 'class="user">Grace Hopper<' in r.text and "Log out" in r.text, path
            assert '<a href="/login">Log in</a>' not in r.text, path
        assert portal_logout(client).status_code == 303
    r = httpx.get(base + "/no/such/page")
    assert r.status_code == 404 and '<a href="/login">Log in</a>' in r.text and "Grace Hopper" not in r.text


def test_answers_that_depend_on_the_caller_are_not_for_shared_caches(private_service):
    """An embargoed file fetched with a portal session (no Authorization header) went out with
    Last-Modified and no Cache-Control: a facility proxy may keep such a response and hand it to
    the next person asking. Every answer now says private (the stylesheet alone is public)."""
    base, world, token = private_service
    pid = world.pids["embargoed"]
    with httpx.Client(base_url=base) as client:
        assert portal_login(client, token).status_code == 303
        for path in (f"{API}/datasets/{pid}/files/secret.h5/content", f"/datasets/{pid}", f"{API}/datasets", "/"):
            r = client.get(path)
            assert r.status_code == 200 and r.headers["cache-control"] == "private, no-cache", path
        tag = client.get(f"{API}/datasets/{pid}/files/secret.h5/content").headers["etag"]
        assert client.get(f"{API}/datasets/{pid}/files/secret.h5/content",
                          headers={"If-None-Match": tag}).status_code == 304          # the browser's copy revalidates
    assert httpx.get(base + "/assets/style.css").headers["cache-control"].startswith("public")


# -- request bodies ----------------------------------------------------------------------------------

def _post_huge(base: str, path: str, size: int) -> tuple[int, int]:
    """POST `size` declared bytes of zeros (sent until the service answers) over a raw socket:
    (the status answered, bytes sent before it answered)."""
    host, port = urlsplit(base).hostname, urlsplit(base).port
    with socket.create_connection((host, port), timeout=20) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/x-www-form-urlencoded"
                     f"\r\nContent-Length: {size}\r\n\r\n".encode())
        chunk, sent = b"0" * (1 << 20), 0
        sock.setblocking(False)
        answer = b""
        while b"\r\n" not in answer:
            try:
                answer += sock.recv(65536)
                continue
            except BlockingIOError:
                pass
            if sent < size:
                try:
                    sent += sock.send(chunk[:size - sent])
                except BlockingIOError:
                    select.select([sock], [sock], [], 1)
            else:
                select.select([sock], [], [], 20)
        return int(answer.split()[1]), sent


@pytest.mark.parametrize("path", ["/login", f"{API}/import"])
def test_a_huge_body_is_refused_without_being_held(site, path):
    """POST /login read the whole body before looking at 10 kB of it, and FastAPI reads an admin
    route's whole JSON body before checking who sends it: anyone could make the service hold a
    body of any size in memory. Now a declared size over the cap is 413 before a byte is read."""
    base, _, _ = site
    tracemalloc.start()
    try:
        status, _ = _post_huge(base, path, 200 * 1024 * 1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert status == 413 and peak < 20 * 1024 * 1024, (status, peak)
    r = httpx.post(base + "/login", content=b"token=" + b"x" * 20_000)       # over the form's own 10 kB
    assert r.status_code == 400 and "larger than 10000 bytes" in r.text
    assert httpx.get(base + "/healthz").status_code == 200


# -- the embargo, every door at once ---------------------------------------------------------------

def test_an_embargoed_dataset_is_404_at_every_url_for_outsiders_and_open_to_its_team(data_world, serve_app,
                                                                                      tmp_path):
    """Anonymous, a stranger (by token and by portal session) and a team member, against every
    URL under an embargoed dataset with GET and HEAD, the manifests included, and search counts
    and facets: outsiders get the same 404 as for a PID that does not exist."""
    store = UserStore(tmp_path / "users.sqlite", clock=data_world.now)
    for name in ("Grace Hopper", "Eve"):
        store.add(name)
    tokens = {name: store.issue_token(name) for name in ("Grace Hopper", "Eve")}
    base = serve_app(create_app(data_world.catalogue, data_world.tiers, users=store, now=data_world.now))
    pid = data_world.pids["embargoed"]
    nobody = pid[:-4] + "ZZZZ"                                            # a PID no dataset has
    urls = [f"{API}/datasets/{pid}", f"{API}/datasets/{pid}/files", f"{API}/datasets/{pid}/files/secret.h5",
            f"{API}/datasets/{pid}/files/secret.h5/content", f"/datasets/{pid}", f"/datasets/{pid}?offset=1",
            f"/datasets/{pid}/manifest", f"/datasets/{pid}/manifest?path=secret.h5"]
    eve_session = httpx.Client(base_url=base)
    assert portal_login(eve_session, tokens["Eve"]).status_code == 303
    outsiders = {"anonymous": httpx.Client(base_url=base), "eve by token": httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {tokens['Eve']}"}), "eve by session": eve_session}
    member = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {tokens['Grace Hopper']}"})
    try:
        for who, client in outsiders.items():
            for url in urls:
                for method in ("GET", "HEAD"):
                    r = client.request(method, url)
                    ghost = client.request(method, url.replace(pid, nobody))
                    assert r.status_code == ghost.status_code == 404, (who, method, url)
                    assert r.text.replace(pid, nobody) == ghost.text, (who, method, url)    # word for word
            for query in ({}, {"q": "embargoed"}, {"beamtime": "2025-0099"}, {"access": "embargoed"}, {"pi": "grace"}):
                found = client.get(f"{API}/datasets", params=query).json()
                assert pid not in [d["pid"] for d in found["datasets"]], (who, query)
                assert "embargoed" not in found["facets"]["access"] and found["total"] == len(found["datasets"])
            assert "Embargoed scan" not in client.get("/", params={"access": "embargoed"}).text
        for url in urls:
            for method in ("GET", "HEAD"):
                assert member.request(method, url).status_code == 200, (method, url)
        assert member.get(f"{API}/datasets", params={"access": "embargoed"}).json()["total"] == 1
    finally:
        for client in (*outsiders.values(), member):
            client.close()
        store.close()
