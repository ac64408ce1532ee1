"""The web portal's routes on the data service: pages, login with a session cookie, manifests.

The pages are rendered by portal.py (pure); who may see what is the data service's (access.py
through DataService). A login exchanges an API token for a random session id (SESSION_SECONDS)
kept hashed in users.sqlite (users.py: it survives a restart; without a user store, in memory),
sent in an HttpOnly, SameSite=Lax cookie, Secure behind HTTPS. The form posts are parsed here (no multipart dependency).

Forms that post (log in, log out) carry a random form token that must equal the one in the
browser's HttpOnly, SameSite=Lax `domas_form` cookie (set with the first page that needs it):
another site can make a browser post, but cannot read or set that cookie, so it cannot log a
visitor in under its own token or log them out. (Cross-site posts are also refused by the app-wide
Sec-Fetch-Site/Origin check, api.refuse_cross_site; the token covers browsers that send neither.)
"""

from __future__ import annotations

import hmac
from urllib.parse import parse_qs

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from domas.catalogue.search import FILTERS, encode_cursor
from domas.errors import NotFound, PermissionDenied, Unauthenticated, UsageError

from . import access, delivery, portal
from .access import Caller
from .api import (FORM_COOKIE, MAX_OFFSET, PORTAL_FILES_PAGE, PORTAL_PAGE, SESSION_COOKIE, SESSION_SECONDS,
                  DataService, attachment, form_token, html_page, parse_time)

PORTAL_PARAMS = ("q", "beamtime", "proposal", "pi", "from", "to", "cursor", "sort", *FILTERS)
def check_form(request: Request, fields: dict[str, list[str]]) -> None:
    """A posted form's token must equal the browser's form cookie (timing-safe comparison)."""
    sent = (fields.get(portal.FORM_TOKEN) or [""])[0]
    have = request.cookies.get(FORM_COOKIE, "")
    if not (sent and have and hmac.compare_digest(sent.encode(), have.encode())):
        raise PermissionDenied("this form is out of date or was sent from another site; open the page again "
                               "and send it from there")


def local_path(target: str) -> str:
    """Where to go after logging in: a path on this service (never another site: '//host',
    'http://...' or a backslash trick), else the front page."""
    ok = target.startswith("/") and not target.startswith("//") and "\\" not in target and target.isprintable()
    return target if ok and len(target) < 4000 else "/"


FORM_LIMIT = 10_000        # bytes: a login form is a token and two hidden fields


async def posted_form(request: Request) -> dict[str, list[str]]:
    """The fields of a posted form, read only up to FORM_LIMIT bytes (no more is ever held)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > FORM_LIMIT:
            raise UsageError(f"the form sent is larger than {FORM_LIMIT} bytes; send the page's own form")
    return parse_qs(body.decode("utf-8", "replace"))


def add_portal(app: FastAPI, svc: DataService) -> None:
    """The portal's pages, login/logout and manifests on the data service's app."""
    def portal_caller(request: Request) -> Caller:
        return svc.caller(request)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index(request: Request, caller: Caller = Depends(portal_caller)) -> HTMLResponse:
        form = {k: request.query_params.get(k, "").strip() for k in PORTAL_PARAMS}
        found = svc.search(caller, q=form["q"], beamtime=form["beamtime"] or None, proposal=form["proposal"] or None,
                           pi=form["pi"] or None, start=parse_time(form["from"], "from"),
                           end=parse_time(form["to"], "to", end_of_day=True), cursor=form["cursor"] or None,
                           limit=PORTAL_PAGE, sort=form["sort"] or "newest",
                           **{k: form[k] or None for k in FILTERS})
        del form["cursor"]
        token = form_token(request)
        return html_page(request, portal.render_index(found.datasets, form, svc.now(), total=found.total,
                                                      facets=found.facets, next_cursor=encode_cursor(found.next),
                                                      user=caller.name, form_token=token), token)

    @app.get(portal.STYLE_PATH, include_in_schema=False)
    def stylesheet() -> Response:
        return Response(portal.STYLE, media_type="text/css", headers={"Cache-Control": "public, max-age=86400"})

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_form(request: Request) -> HTMLResponse:
        token = form_token(request)
        who = svc.session_caller(request)                    # already logged in: the header says so
        return html_page(request, portal.render_login(user=who.name if who else "", form_token=token), token)

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        fields = await posted_form(request)
        again = form_token(request)
        try:
            check_form(request, fields)
        except PermissionDenied as e:
            return html_page(request, portal.render_login(str(e), form_token=again), again, 403)
        token, then = (fields.get("token") or [""])[0], local_path((fields.get("next") or ["/"])[0])
        try:
            sid = svc.login(token)
        except Unauthenticated as e:
            return html_page(request, portal.render_login(str(e), form_token=again, next_path=then), again, 401)
        resp = RedirectResponse(then, status_code=303)
        resp.set_cookie(SESSION_COOKIE, sid, max_age=SESSION_SECONDS, httponly=True, samesite="lax",
                        secure=request.url.scheme == "https", path="/")
        return resp

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        check_form(request, await posted_form(request))
        await run_in_threadpool(svc.logout, request.cookies.get(SESSION_COOKIE, ""))
        resp = RedirectResponse("/", status_code=303)
        resp.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax",
                           secure=request.url.scheme == "https")
        return resp

    @app.get("/datasets/{pid:pid}/manifest", response_class=PlainTextResponse, include_in_schema=False)
    def manifest(request: Request, pid: str, caller: Caller = Depends(portal_caller)) -> Response:
        ds = svc.dataset(pid, caller)
        chosen = [delivery.check_request_path(p) for p in request.query_params.getlist("path")]
        if request.query_params.get("selected") and not chosen:     # the button pressed with no file ticked
            raise UsageError("no file is ticked: tick the files you want, or take the manifest of every file "
                             f"({portal.manifest_path(ds.pid)})")
        for path in chosen:                      # a manifest names only files the dataset has (else 404)
            svc.file(ds.pid, path, caller)
        paths = chosen or [f.path for f in svc.catalogue.files_of(ds.pid)]
        if not paths:
            raise NotFound(f"dataset {ds.pid} has no files yet, so there is nothing to download")
        text = portal.render_manifest(ds, str(request.base_url).rstrip("/"), paths)
        name = f"{ds.pid}.manifest".replace("/", "_")
        return PlainTextResponse(text, headers={"Content-Disposition": attachment(name)})

    @app.get("/datasets/{pid:pid}", response_class=HTMLResponse, include_in_schema=False)
    def dataset_page(request: Request, pid: str, caller: Caller = Depends(portal_caller),
                     offset: int = Query(0, ge=0, le=MAX_OFFSET)) -> HTMLResponse:
        ds = svc.described(svc.dataset(pid, caller))
        files, more = svc.files_page(ds.pid, offset, PORTAL_FILES_PAGE)
        token = form_token(request)
        page = portal.render_dataset(ds, [(f, svc.available(ds, f)) for f in files], now=svc.now(),
                                     server=str(request.base_url).rstrip("/"), offset=offset,
                                     limit=PORTAL_FILES_PAGE, more=more, people=svc.people(ds),
                                     state=access.public_state(ds.state, ds.embargo_end, svc.now()),
                                     user=caller.name, form_token=token)
        return html_page(request, page, token)
