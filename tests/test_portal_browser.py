"""The portal in headless Chromium (Debian `chromium`): pages render, login, search, select files
into a manifest, download a file, and nothing overflows at phone width. Screenshots are saved
($DOMAS_SCREENSHOT_DIR, else the test's tmp dir)."""

from __future__ import annotations

import zlib

import httpx
import pytest

from tests.fixtures.common import wait_until



def test_login_search_select_and_download_in_a_browser(browser, private_service):
    base, world, token = private_service
    browser.viewport(1280, 900)
    assert httpx.get(base + "/").status_code == 401                           # private: log in first
    browser.navigate(base + "/login")
    browser.screenshot("login")
    browser.evaluate(f"document.querySelector('input[name=token]').value = {token!r};"
                     "document.querySelector('form.login').submit()", navigates=True)
    text = browser.evaluate("document.body.innerText")
    assert "Grace Hopper" in text and "Embargoed scan" in text and "Log out" in text
    browser.screenshot("datasets")
    browser.evaluate("document.querySelector('input[name=q]').value = 'lysozyme';"
                     "document.querySelector('form.search').submit()", navigates=True)
    text = browser.evaluate("document.body.innerText")
    assert "1 dataset" in text and "Lysozyme" in text and "Embargoed scan" not in text
    assert "Beamline" in browser.evaluate("document.querySelector('aside.facets').textContent")
    browser.screenshot("search")
    browser.evaluate("document.querySelector('aside.facets a[data-facet=access]').click()", navigates=True)
    assert "Access: open" in browser.evaluate("document.querySelector('ul.active').innerText")
    assert browser.evaluate("new URL(location.href).searchParams.get('access')") == "open"
    assert "Lysozyme" in browser.evaluate("document.body.innerText")
    browser.screenshot("facet")
    browser.evaluate("document.querySelector('ul.active a.remove').click()", navigates=True)
    assert browser.evaluate("document.querySelector('ul.active')") is None
    assert browser.evaluate("location.search") == "?q=lysozyme"
    browser.evaluate("document.querySelector('table a').click()", navigates=True)
    text = browser.evaluate("document.body.innerText")
    assert "P-42: Protein crystals" in text and "Ada Lovelace, Grace Hopper" in text
    browser.screenshot("dataset")
    query = browser.evaluate(
        "for (const box of document.querySelectorAll('input[name=path]'))"
        "  box.checked = ['big.bin', 'sub/scan ü 1.h5'].includes(box.value);"
        "const form = document.querySelector('input[name=path]').form;"
        "form.action + '?' + new URLSearchParams(new FormData(form)).toString()")
    manifest = browser.evaluate(f"fetch({query!r}).then(r => r.text())")
    urls = [line for line in manifest.splitlines() if line and not line.startswith("#")]
    assert sorted(u.rsplit("/files/", 1)[1] for u in urls) == ["big.bin/content", "sub/scan%20%C3%BC%201.h5/content"]
    link = browser.evaluate("[...document.querySelectorAll('a[download]')].map(a => a.href)"
                            ".find(h => h.includes('big.bin'))")
    size = browser.evaluate(f"fetch({link!r}).then(r => r.arrayBuffer()).then(b => b.byteLength)")
    assert size == len(world.data["big.bin"])                       # the session cookie opens downloads
    digest = browser.evaluate(f"fetch({link!r}, {{method: 'HEAD'}}).then(r => r.headers.get('digest'))")
    assert digest == f"adler32={zlib.adler32(world.data['big.bin']):08x}"


@pytest.mark.parametrize("page", ["/", "/datasets/{pid}", "/login"])
def test_pages_fit_a_phone_screen(browser, private_service, page):
    base, world, token = private_service
    browser.viewport(390, 844, mobile=True)
    browser.navigate(base + "/login")
    browser.evaluate(f"document.querySelector('input[name=token]').value = {token!r};"
                     "document.querySelector('form.login').submit()", navigates=True)
    browser.navigate(base + page.format(pid=world.pids["open"]))
    overflow = browser.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    name = "phone-" + (page.strip("/").split("/")[0] or "index")
    browser.screenshot(name)
    assert overflow <= 0, f"{page} is {overflow} px wider than the phone"
    assert httpx.get(base + "/healthz").status_code == 200


def test_the_selection_button_with_nothing_ticked_says_so(browser, private_service, tmp_path):
    """"Manifest of the selected files" with no file ticked saved the manifest of EVERY file (for a
    dataset of 10 000 files, 10 000 downloads the scientist never chose); it now says to tick some."""
    base, world, token = private_service
    into = tmp_path / "downloads"
    into.mkdir()
    browser.call("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(into)})
    browser.navigate(base + "/login")
    browser.evaluate(f"document.querySelector('input[name=token]').value = {token!r};"
                     "document.querySelector('form.login').submit()", navigates=True)
    browser.navigate(f"{base}/datasets/{world.pids['open']}")
    browser.evaluate("document.querySelector('form .tools button').click()", navigates=True)
    assert "no file is ticked" in browser.evaluate("document.body.innerText")
    assert list(into.iterdir()) == []
    browser.navigate(f"{base}/datasets/{world.pids['open']}")                  # one ticked: its manifest
    browser.evaluate("document.querySelector('input[name=path][value=\"big.bin\"]').checked = true;"
                     "document.querySelector('form .tools button').click()")
    wait_until(lambda: [p.suffix for p in into.iterdir()] == [".manifest"], timeout=10, what="the manifest")
    urls = [line for line in next(into.iterdir()).read_text().splitlines() if not line.startswith("#")]
    assert len(urls) == 1 and urls[0].endswith("/files/big.bin/content")
