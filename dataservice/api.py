"""The data service: a REST API, a small web portal and file downloads over the catalogue.

A thin HTTP shell over pure modules: access.py decides who sees what (embargo, roles), delivery.py
what may be served and how (paths, replica choice, byte ranges, ETag and Digest), portal.py renders
the pages (routes in portal_routes.py; HEAD, metrics and /docs in httpedge.py). This module reads
the catalogue and the storage tiers and speaks HTTP:
- No byte goes out under the catalogued `Digest` unchecked. A whole file is summed (adler32) as it
  streams: the first byte goes out at once, and if the sum does not match, the last piece is never
  sent and the connection is dropped (the client sees a broken transfer, never a complete response
  of bad bytes). delivery.read_back_first decides when a copy is read back before its first byte
  instead: small whole files, ranges of a copy not read back recently, copies that failed before
  (matches are remembered per copy and stat identity for VERIFIED_FOR seconds). A copy that does not
  match is marked "bad" in the catalogue and never served again; the next verified tier serves.
- Blocking catalogue and storage calls run in worker threads; a file's bytes are streamed in
  PIECE-sized preads and never held whole.
- Every DomasError becomes one sentence with the status from _STATUS: JSON {"error", "kind"} under
  /api, an HTML page elsewhere. A 5xx is the service's own trouble, and its sentence may name the
  server's files (the catalogue database, a copy's path on a tier) or a library's text: the log
  keeps it, the caller reads one sentence per kind of trouble (`client_sentence`).
- Who is asking: `Authorization: Bearer <token>` (or HTTP Basic with the token as password, for
  browsers) carrying the facility token (admin) or a personal token from the user store
  (dataservice/users.py), or an OpenID Connect JWT from the facility's sign-on (dataservice/oidc.py,
  when controller.oidc_issuer is set). A wrong token is 401 everywhere; no token is an anonymous caller, refused
  (401) only when the service has a facility token. What a caller may see is decided by the one
  policy in access.py: a dataset under embargo is 404 for anyone outside its team and staff.
- Cross-site requests cannot change anything: a portal session cookie identifies its holder for
  GET and HEAD only (a write needs the Authorization header, which no other site can make a
  browser send), and a POST, PUT, PATCH or DELETE that a browser says comes from another site
  (Sec-Fetch-Site, else Origin) is refused (403) before any route runs (`refuse_cross_site`).
"""

from __future__ import annotations

import base64
import email.utils
import hmac
import itertools
import json
import logging
import posixpath
import re
import secrets
import threading
import time
from dataclasses import replace
from datetime import datetime, timezone
from typing import Callable
from urllib.parse import quote, urlsplit

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPBearer
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException as StarletteHTTPException

from domas import __version__
from domas.catalogue import Catalogue, Dataset, FileRecord
from domas.catalogue.base import ReplicaUpdate, batched, with_scans
from domas.catalogue.search import FILTERS, SORTS, SearchQuery, decode_cursor, encode_cursor
from domas.checksum import adler32, format_adler32
from domas.errors import (CatalogueUnavailable, ChecksumMismatch, DomasError, ImpossibleRange, InvalidMessage,
                          NotFound, PermissionDenied, ServerRefused, SourceChanged, StorageError, TransientError,
                          Unauthenticated, UnsafePath, Unsupported, UsageError)
from domas.transfer.filesum import read_adler32
from domas.transfer.storage import ReadHandle, resolve

from . import access, delivery, portal
from .access import ANONYMOUS, Caller
from .api_schema import ERRORS, DatasetList, DatasetPage, ErrorOut, FileOut, Health
from .httpedge import CRASH_SENTENCE, add_edge
from .oidc import looks_like_jwt

log = logging.getLogger("domas.dataservice")

PIECE = 4 * 1024 * 1024
VERIFIED_FOR = 300.0     # seconds a copy read back and matched is served without another read
API = "/api/v1"
MAX_FILES_PAGE = 10_000
PORTAL_FILES_PAGE = 500
PORTAL_PAGE = 100

_STATUS: list[tuple[type[DomasError], int]] = [
    (Unauthenticated, 401), (PermissionDenied, 403), (NotFound, 404), (SourceChanged, 412),
    (ImpossibleRange, 416), (UnsafePath, 400), (UsageError, 400), (InvalidMessage, 400),
    (CatalogueUnavailable, 503), (TransientError, 503), (StorageError, 502),
]
# One challenge per header field: browsers (Chromium) give up on a field packing two schemes.
_CHALLENGES = ('Bearer realm="domas data"', 'Basic realm="domas data", charset="UTF-8"')
FACILITY = Caller("facility", "admin")
SESSION_COOKIE = "domas_session"
SESSION_SECONDS = 12 * 3600
MAX_OFFSET = 2**31
MAX_SECONDS = 1e11       # POSIX seconds beyond this (year 5138) are read as a date instead
ACCESS = ("open", "embargoed")
# A file path the service may serve (delivery.check_request_path): '/'-separated parts, none empty,
# '.' or '..', no backslash or NUL.
_PART = r"(?:[^/\\\x00.][^/\\\x00]*|\.[^/\\\x00.][^/\\\x00]*|\.\.[^/\\\x00]+)"
FILE_PATH = Path(description="The file's path inside the dataset, as the dataset lists it",
                 json_schema_extra={"pattern": f"^{_PART}(?:/{_PART})*$"})
YEAR_PATTERN = "(000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})"      # 0001 to 9999
# What `from` and `to` take, as the OpenAPI document states it: POSIX seconds, an RFC 3339 date or
# date-time, or empty (no bound).
TIME_SCHEMA = {"anyOf": [{"type": "number", "minimum": -MAX_SECONDS, "maximum": MAX_SECONDS},
                         {"type": "string", "format": "date"}, {"type": "string", "format": "date-time"},
                         {"type": "string", "maxLength": 0}]}

DESCRIPTION = """\
Find the facility's datasets in the catalogue and download their files.

Downloads are served only from verified replicas (beamline, then central, then tape), support
single HTTP byte ranges and carry the catalogue's adler32 in the RFC 3230 header
`Digest: adler32=<8 hex>`, as XRootD and dCache HTTP do. A dataset under embargo exists only for its
team (the PIs and team of its beamtime and proposal) and staff: for anyone else it is 404 everywhere.
After its end date it is open to all and its state reads "released". Identify with a personal token
(`domas user token NAME`) as `Authorization: Bearer <token>`; a service with a facility token
refuses anonymous calls.
Every GET also answers HEAD (same headers, no body); a GET of file content answers 304 to an
`If-None-Match` naming its ETag, or (without one) an `If-Modified-Since` not before its
Last-Modified. Unknown query parameters are refused (400). Request metrics for Prometheus are at
/metrics.
The command-line client is `domas get PID DEST` (parallel, resumable, verified).
"""


FORM_COOKIE = "domas_form"
FORM_SECONDS = 7 * 86400


def form_token(request: Request) -> str:
    """The browser's form token (its cookie), or a new one when it has none (see portal_routes)."""
    have = request.cookies.get(FORM_COOKIE, "")
    return have if 20 <= len(have) <= 100 and have.isascii() else secrets.token_urlsafe(24)


def html_page(request: Request, page: str, token: str, status: int = 200,
              headers: dict[str, str] | None = None) -> HTMLResponse:
    """A portal page whose forms carry `token`, setting the form cookie when the browser lacks it."""
    resp = HTMLResponse(page, status, headers=headers)
    if request.cookies.get(FORM_COOKIE) != token:
        resp.set_cookie(FORM_COOKIE, token, max_age=FORM_SECONDS, httponly=True, samesite="lax",
                        secure=request.url.scheme == "https", path="/")
    return resp


class _PidConvertor(Convertor):
    """A PID in a URL: CSTR ids have no '/', DOI ids exactly one, right after '10.<digits>'."""

    regex = r"(?:10\.[0-9]{4,9}/)?[^/]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("pid", _PidConvertor())


class _FilePathConvertor(Convertor):
    """A dataset file's path in a URL: any characters the filesystem allows, newline included
    (starlette's `path` stops at a newline); delivery.check_request_path refuses what could escape."""

    regex = r"(?s:.+?)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("filepath", _FilePathConvertor())


SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def is_cross_site(method: str, host: str, origin: str | None, fetch_site: str | None) -> bool:
    """Whether a browser sent this unsafe request from a page of another site (or another origin
    of this site): the browser's Sec-Fetch-Site when it sends one, else its Origin against the
    Host. Requests no browser made (scripts, curl) carry neither and pass."""
    if method.upper() in SAFE_METHODS:
        return False
    if fetch_site:
        return fetch_site.strip().lower() not in ("same-origin", "none")
    if origin is None:
        return False
    return origin.strip().lower() == "null" or urlsplit(origin.strip()).netloc.lower() != host.strip().lower()


def refuse_cross_site(request: Request) -> None:
    """The app-wide guard against cross-site request forgery (see the module docstring)."""
    if is_cross_site(request.method, request.headers.get("host", ""), request.headers.get("origin"),
                     request.headers.get("sec-fetch-site")):
        raise PermissionDenied(f"{request.method} from a page of another site is refused; use this service's "
                               "own pages, or send the request with your token from a script")


_PATH_FREE = (UnsafePath, SourceChanged, ChecksumMismatch)     # _open_on_tier's own sentences about a copy


def client_sentence(err: DomasError, status: int) -> str:
    """What the caller reads of an error (see the module docstring): a 4xx's own sentence, else one
    that names no server path. open_source's ServerRefused is built without one."""
    if status < 500 or isinstance(err, ServerRefused):
        return str(err)
    if isinstance(err, CatalogueUnavailable):
        return "the catalogue cannot be used now; try again in a moment (the service's log says why)"
    if isinstance(err, StorageError):
        return "the storage behind this service failed; try again later (the service's log says why)"
    return CRASH_SENTENCE


def status_for(err: DomasError) -> int:
    for cls, status in _STATUS:
        if isinstance(err, cls):
            return status
    return 500


def presented_token(authorization: str | None) -> str:
    """The token in an Authorization header: Bearer <token>, or Basic with the token as password."""
    scheme, _, value = (authorization or "").partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")[2]
        except (ValueError, UnicodeDecodeError):
            return ""
    return ""


def parse_time(value: str | None, name: str = "since", *, end_of_day: bool = False) -> float | None:
    """POSIX seconds or an ISO 8601 date/time (UTC when no zone is given); a bare date given as an
    upper bound (`end_of_day`) includes that whole day."""
    if not value:
        return None
    try:
        seconds = float(value)
        if seconds == seconds and abs(seconds) <= MAX_SECONDS:
            return seconds
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        seconds = moment.timestamp()
    except (ValueError, OverflowError):
        raise UsageError(f"{name}={value!r} is neither POSIX seconds nor an ISO date such as 2026-11-01") from None
    bare_date = len(value.strip()) == 10
    return seconds + (86400 - 0.001 if end_of_day and bare_date else 0)


def check_params(request: Request, allowed: tuple[str, ...]) -> None:
    """Unknown query parameters are a 400, never silently ignored; so is one given twice (each
    takes one value: `q=a&q=b` searched for b alone)."""
    unknown = sorted(set(request.query_params) - set(allowed))
    if unknown:
        known = ", ".join(allowed) if allowed else "none"
        raise UsageError(f"unknown parameter {unknown[0]!r}; this endpoint takes: {known}")
    names = [name for name, _ in request.query_params.multi_items()]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise UsageError(f"parameter {twice[0]!r} is given more than once; give each parameter once")


def check_choices(*, sort: str, access: str | None, year: str | None) -> None:
    """The API takes the facet values and sort orders exactly as its OpenAPI document lists them
    (the portal's form is more forgiving: blank fields, any case)."""
    if sort not in SORTS:
        raise UsageError(f"sort: use {' or '.join(SORTS)}")
    if access is not None and access not in ACCESS:
        raise UsageError(f"access: use {' or '.join(ACCESS)}")
    if year is not None and not re.search(f"^{YEAR_PATTERN}$", year):     # as the document's pattern reads
        raise UsageError("year: give a year of four digits, e.g. 2025")


def _inside(path: str, root: str) -> bool:
    root = root.rstrip("/") or "/"
    return path == root or path.startswith(root.rstrip("/") + "/")


class DataService:
    """The service's state and its blocking operations (run in worker threads by the routes)."""

    def __init__(self, catalogue: Catalogue, tiers: dict[str, str], token: str, now: Callable[[], float],
                 users=None, oidc=None, metrics_guard: access.MetricsGuard = access.MetricsGuard()) -> None:
        self.catalogue, self.token, self.now, self.users, self.oidc = catalogue, token, now, users, oidc
        self.metrics_guard = metrics_guard
        self.tiers = {name: root for name, root in tiers.items() if root}
        self.sessions: dict[str, tuple[Caller, float]] = {}     # portal logins: id -> (caller, expiry)
        self._verify_lock = threading.Lock()
        self._verifying: dict[tuple, threading.Lock] = {}
        self._verified: dict[tuple, float] = {}
        self._suspect: dict[tuple[str, str], float] = {}     # (url, adler32) of copies that failed streaming

    # -- access --------------------------------------------------------------------------------
    def caller_of(self, authorization: str | None) -> Caller:
        """Who presents this Authorization header; a token that is nobody's is 401."""
        given = presented_token(authorization)
        if not given and not (authorization or "").strip():
            return ANONYMOUS
        if self.token and hmac.compare_digest(given.encode(), self.token.encode()):
            return FACILITY
        if self.oidc is not None and looks_like_jwt(given):
            return self.oidc.verify(given)
        found = self.users.caller_for(given) if self.users is not None and given else None
        if found is None:
            raise Unauthenticated("the token you sent is not valid (revoked, mistyped or for another service); "
                                  "ask for a new one with `domas user token NAME`")
        return found

    def login(self, token: str) -> str:
        """A new portal session for the holder of `token` (401 when it is nobody's)."""
        who = self.caller_of(f"Bearer {token.strip()}") if token.strip() else ANONYMOUS
        if who.role == "anonymous":
            raise Unauthenticated("give your API token to log in")
        now = self.now()
        if self.users is not None:                   # kept hashed in users.sqlite: survives a restart
            return self.users.open_session(who, now + SESSION_SECONDS, now)
        self.sessions = {k: v for k, v in self.sessions.items() if v[1] > now}
        sid = secrets.token_urlsafe(32)
        self.sessions[sid] = (who, now + SESSION_SECONDS)
        return sid

    def session_caller(self, request: Request) -> Caller | None:
        sid = request.cookies.get(SESSION_COOKIE, "")
        if self.users is not None:
            return self.users.session_caller(sid, self.now()) if sid else None
        found = self.sessions.get(sid)
        return found[0] if found and found[1] > self.now() else None

    def logout(self, sid: str) -> None:
        self.sessions.pop(sid, None)
        if self.users is not None and sid:
            self.users.end_session(sid)

    def identify(self, request: Request) -> Caller:
        """Who sends this request: its Authorization header, else (GET and HEAD only: a session
        never authorises a change) its portal session cookie, else anonymous."""
        header = request.headers.get("authorization")
        safe = request.method in ("GET", "HEAD")
        session = None if header or not safe else self.session_caller(request)
        return session or self.caller_of(header)

    def caller(self, request: Request) -> Caller:
        """Who sends this request (identify); 401 for anonymous callers of a private service."""
        who = self.identify(request)
        if access.must_authenticate(who, bool(self.token)):
            raise Unauthenticated("this data service needs a token: send 'Authorization: Bearer <token>' "
                                  "(domas get --token or DOMAS_TOKEN)")
        return who

    def check_metrics(self, request: Request) -> None:
        """/metrics for this request, or 401/403 (access.may_read_metrics): the scrape token and the
        allowed addresses are looked at before any other token, which could be nobody's."""
        guard, header = self.metrics_guard, request.headers.get("authorization")
        given = presented_token(header)
        scraper = bool(guard.token and given and hmac.compare_digest(given.encode(), guard.token.encode())) or \
            guard.allows_address(request.client.host if request.client else None)
        who = ANONYMOUS if scraper else self.identify(request)
        if access.may_read_metrics(who, private=bool(self.token), guarded=guard.set, scraper=scraper):
            return
        if who.role == "anonymous":
            raise Unauthenticated("the metrics of this data service are for its monitoring: send the scrape token "
                                  "(controller.http_metrics_token) as 'Authorization: Bearer <token>'")
        raise PermissionDenied("the metrics of this data service are for its monitoring and staff")

    def team_of(self, ds: Dataset) -> tuple[str, ...]:
        """The dataset's team: its beamtime's PI and team and its proposal's PI."""
        bt = self.catalogue.get_beamtime(ds.beamtime)
        if bt is None:
            return ()
        prop = self.catalogue.get_proposal(bt.proposal) if bt.proposal else None
        return tuple(n for n in (bt.pi, *bt.team, prop.pi if prop else "") if n)

    def people(self, ds: Dataset) -> dict[str, str]:
        """Proposal, PI, team and beamline of a dataset, as the portal shows them."""
        bt = self.catalogue.get_beamtime(ds.beamtime)
        if bt is None:
            return {}
        prop = self.catalogue.get_proposal(bt.proposal) if bt.proposal else None
        pis = list(dict.fromkeys(n for n in (prop.pi if prop else "", bt.pi) if n))
        return {"proposal": f"{bt.proposal}: {prop.title}" if prop and prop.title else bt.proposal,
                "pi": ", ".join(pis), "team": ", ".join(bt.team), "beamline": bt.beamline}

    def may_see(self, caller: Caller, ds: Dataset) -> bool:
        now = self.now()
        if not access.under_embargo(ds.state, ds.embargo_end, now):
            return True
        return access.may_see(caller, state=ds.state, embargo_end=ds.embargo_end, team=self.team_of(ds), now=now)

    def scope(self, caller: Caller) -> access.Scope:
        member_of = self.catalogue.beamtimes_of_person(caller.name) if caller.role == "user" else ()
        return access.search_scope(caller, member_of)

    # -- catalogue -----------------------------------------------------------------------------
    def dataset(self, pid: str, caller: Caller) -> Dataset:
        ds = self.catalogue.get_dataset(pid)
        if ds is None or not self.may_see(caller, ds):
            raise NotFound(f"there is no dataset with PID {pid}; search the datasets to find its PID")
        return ds

    def described(self, ds: Dataset) -> Dataset:
        """The dataset as its page and API show it: its scan records under metadata "scans"."""
        return replace(ds, metadata=with_scans(ds.metadata, self.catalogue.scans_of(ds.pid)))

    def file(self, pid: str, path: str, caller: Caller) -> tuple[Dataset, FileRecord]:
        ds = self.dataset(pid, caller)
        rec = self.catalogue.get_file(ds.pid, path)
        if rec is None:
            raise NotFound(f"dataset {pid} has no file {path}; list the dataset to see its files")
        return ds, rec

    def search(self, caller: Caller, *, q: str = "", beamtime: str | None = None, proposal: str | None = None,
               pi: str | None = None, start: float | None = None, end: float | None = None,
               cursor: str | None = None, limit: int = 100, sort: str = "newest", **facets: str | None):
        """`facets`: the filters beamline, data_type, year, access (search.FILTERS)."""
        scope = self.scope(caller)
        return self.catalogue.search_datasets(SearchQuery(
            q=q, beamtime=beamtime, proposal=proposal, pi=pi, start=start, end=end, now=self.now(),
            see_embargoed=scope.see_embargoed, member_of=scope.member_of, after=decode_cursor(cursor),
            limit=limit, sort=sort or "newest", **{k: facets.get(k) for k in FILTERS}))

    def files_page(self, pid: str, offset: int, limit: int) -> tuple[list[FileRecord], bool]:
        rows = list(itertools.islice(self.catalogue.files_of(pid), offset, offset + limit + 1))
        return rows[:limit], len(rows) > limit

    def available(self, ds: Dataset, f: FileRecord) -> bool:
        return bool(delivery.sources(f.replicas, self.tiers, ds.path, f.path))

    # -- JSON views ----------------------------------------------------------------------------
    def dataset_json(self, ds: Dataset) -> dict:
        """A dataset the caller may see (so may download): its state as callers read it."""
        now = self.now()
        return {"pid": ds.pid, "title": portal.title_of(ds), "beamtime": ds.beamtime, "path": ds.path,
                "data_type": ds.data_type, "state": access.public_state(ds.state, ds.embargo_end, now),
                "embargo_end": ds.embargo_end, "embargoed": access.under_embargo(ds.state, ds.embargo_end, now),
                "downloadable": True, "embargo_reason": None,
                "file_count": ds.file_count, "bytes": ds.bytes, "created_at": ds.created_at,
                "metadata": ds.metadata, "url": portal.api_dataset_path(ds.pid)}

    def file_json(self, ds: Dataset, f: FileRecord) -> dict:
        found = delivery.sources(f.replicas, self.tiers, ds.path, f.path)
        return {"path": f.path, "size": f.size, "adler32": f.adler32, "xxh3": f.xxh3, "mtime": f.mtime,
                "etag": delivery.etag(f.size, f.adler32, f.xxh3),
                "replicas": {t: {"state": r.state, "verified_at": r.verified_at} for t, r in f.replicas.items()},
                "available": bool(found), "served_from": found[0].tier if found else None,
                "content_url": portal.content_path(ds.pid, f.path)}

    # -- storage -------------------------------------------------------------------------------
    def open_source(self, ds: Dataset, f: FileRecord,
                    whole: bool = False) -> tuple[ReadHandle, delivery.Source, float, tuple | None]:
        """A reader on the first tier whose verified copy opens and has the catalogued size, read back
        first when delivery.read_back_first says so (`whole`: the whole file will be sent); with the
        copy's identity to hand to `streamed` when the whole file is sent under a catalogued sum."""
        found = delivery.sources(f.replicas, self.tiers, ds.path, f.path)
        if not found:
            raise NotFound(f"{f.path} of dataset {ds.pid} has no verified copy on a storage tier this service "
                           "reads; ask the facility to restore it from tape")
        problems = []
        for src in found:
            try:
                reader, mtime, key = self._open_on_tier(src, f, whole)
                return reader, src, mtime, key
            except DomasError as e:
                log.warning("cannot serve %s of dataset %s from %s: %s", f.path, ds.pid, src.tier, e)
                # the service's own sentences name no server path; a storage library's may: the log has it
                problems.append(f"{src.tier}: {e if isinstance(e, _PATH_FREE) else 'cannot be read'}")
        raise ServerRefused(f"no verified copy of {f.path} can be read now ({'; '.join(problems)}; the service's "
                            "log says why); try again later")

    def _open_on_tier(self, src: delivery.Source, f: FileRecord, whole: bool) -> tuple[ReadHandle, float, tuple | None]:
        try:
            store, path = resolve(src.url)
            root_store, root = resolve(self.tiers[src.tier])
        except ImportError as e:
            raise Unsupported(f"the {src.tier} tier needs a storage backend that is not installed ({e})") from None
        if not _inside(store.realpath(path), root_store.realpath(root)):
            raise UnsafePath(f"the copy of {f.path} on {src.tier} resolves outside the tier root; not served")
        st = store.stat_follow(path)
        if st.is_dir or st.size != f.size:
            raise SourceChanged(f"the copy on {src.tier} has {st.size} bytes where the catalogue records {f.size}")
        if not f.adler32:
            return store.open_read(path), st.mtime, None
        key = (src.url, st.size, st.mtime, st.ident, getattr(st, "ctime", None), f.adler32)
        rep = f.replicas.get(src.tier)
        with self._verify_lock:
            suspect = (src.url, f.adler32) in self._suspect
            seen = self._verified.get(key)
        matched = seen is not None and self.now() - seen < VERIFIED_FOR and not suspect
        if not matched and delivery.read_back_first(
                whole=whole, size=f.size, suspect=suspect, last_checked=rep and (rep.checked_at or rep.verified_at),
                copy_mtime=st.mtime, catalogued_mtime=f.mtime, now=self.now()):
            if suspect:
                with self._verify_lock:
                    self._verified.pop(key, None)
            self._check_content(src, key, f)
            with self._verify_lock:
                self._suspect.pop((src.url, f.adler32), None)
        return store.open_read(path), st.mtime, (key if whole else None)     # a whole file is summed as it goes

    def streamed(self, src: delivery.Source, f: FileRecord, key: tuple, got: str) -> None:
        """The adler32 of a whole copy just streamed, before its last piece goes out: remembered as a
        match, or the copy is rejected (bad, read back first from now on) and the transfer cut off."""
        if got == f.adler32:
            with self._verify_lock:
                self._remember(key)
            return
        with self._verify_lock:
            self._verified.pop(key, None)
            self._suspect[(src.url, f.adler32)] = self.now()
            if len(self._suspect) > 10_000:
                self._suspect.pop(next(iter(self._suspect)))
        try:
            self._reject(src, f, got, "while it was sent; the transfer was cut off before its last byte")
        except ChecksumMismatch as e:
            raise TransferAborted(str(e)) from None

    def _remember(self, key: tuple) -> None:
        self._verified[key] = self.now()
        if len(self._verified) > 10_000:
            self._verified.pop(next(iter(self._verified)))

    def _check_content(self, src: delivery.Source, key: tuple, f: FileRecord) -> None:
        """Read the copy back before its bytes go out under the catalogued Digest; a copy that does
        not match is marked "bad" in the catalogue (the archiver replaces it) and not served.
        One read per copy and stat identity serves every range request for VERIFIED_FOR seconds."""
        with self._verify_lock:
            lock = self._verifying.setdefault(key, threading.Lock())
        with lock:                       # concurrent ranges of one file wait for one read
            seen = self._verified.get(key)
            if seen is not None and self.now() - seen < VERIFIED_FOR:
                return
            got = read_adler32(src.url)
            if got == f.adler32:
                with self._verify_lock:
                    self._remember(key)
        with self._verify_lock:
            self._verifying.pop(key, None)
        if got == f.adler32:
            return
        self._reject(src, f, got, "when it was read back")

    def _reject(self, src: delivery.Source, f: FileRecord, got: str | None, when: str) -> None:
        """Log a copy whose bytes do not match the catalogued adler32, mark it "bad" (not the beamline's
        own copy: the archiver judges that one) and raise ChecksumMismatch."""
        if src.tier == "beamline":      # the detector's own copy may have been rewritten: the archiver
            log.warning("the beamline copy of %r does not match the catalogue (adler32 %s, read %s %s): not "
                        "served", f.path, f.adler32, got, when)     # finds out which, archives new content
            raise ChecksumMismatch(f"the beamline copy of {f.path} does not match its catalogued adler32")
        log.error("the %s copy of %r does not match the catalogue (adler32 %s, read %s %s): marked bad, not "
                  "served", src.tier, f.path, f.adler32, got, when)
        rep = f.replicas[src.tier]
        try:
            self.catalogue.set_replicas([ReplicaUpdate(f.dataset, f.path, src.tier, replace(rep, state="bad"))])
        except DomasError as e:
            log.warning("cannot mark the %s copy of %r bad: %s", src.tier, f.path, e)
        raise ChecksumMismatch(f"the {src.tier} copy of {f.path} does not match its catalogued adler32")


class TransferAborted(Exception):
    """The bytes being sent do not match the Digest announced: the response must never complete."""


class _CheckedStream(StreamingResponse):
    """A streamed response that ends as a broken transfer when its generator raises TransferAborted:
    the last piece is never sent, and uvicorn drops the connection of a response left incomplete
    (its log says "ASGI callable returned without completing response"; ours says why)."""

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except TransferAborted:
            return


def _read_summed(reader: ReadHandle, offset: int, length: int, value: int | None) -> tuple[bytes, int | None]:
    data = reader.pread(offset, length)
    return data, (adler32(data, value) if value is not None else None)


async def _stream(reader: ReadHandle, start: int, end: int, what: str,
                  check: Callable[[str], None] | None = None):
    """The bytes [start, end) in PIECE-sized reads, each in a worker thread; closes the reader.
    With `check` (the whole file): the bytes are summed as they are read, and `check(adler32)` runs
    before the last piece is yielded, so a mismatch (TransferAborted) keeps that piece back."""
    value = 1 if check is not None else None
    try:
        offset = start
        while offset < end:
            data, value = await run_in_threadpool(_read_summed, reader, offset, min(PIECE, end - offset), value)
            if not data:
                log.warning("%s ended at byte %d of %d while it was served; the response is cut short", what,
                            offset, end)
                return
            if check is not None and offset + len(data) >= end:
                await run_in_threadpool(check, format_adler32(value))
            yield data
            offset += len(data)
    finally:
        reader.close()


def attachment(name: str) -> str:
    """Content-Disposition for a download named `name` (RFC 6266): the exact name as UTF-8 in
    filename*, which browsers and wget use, and a printable-ASCII stand-in in filename for clients
    that read only that one (curl -OJ saved every file as "content", the URL's last part)."""
    plain = "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in name)
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(name, safe='')}"


def _content_headers(f: FileRecord, mtime: float) -> dict[str, str]:
    headers = {"Accept-Ranges": "bytes", "ETag": delivery.etag(f.size, f.adler32, f.xxh3),
               "Last-Modified": email.utils.formatdate(mtime, usegmt=True),
               "Content-Type": "application/octet-stream",
               "Content-Disposition": attachment(posixpath.basename(f.path))}
    digest = delivery.digest_header(f.adler32)
    if digest:
        headers["Digest"] = digest
    return headers


async def serve_content(svc: DataService, request: Request, caller: Caller, pid: str, path: str) -> Response:
    delivery.check_request_path(path)
    ds, f = await run_in_threadpool(svc.file, pid, path, caller)
    tag = delivery.etag(f.size, f.adler32, f.xxh3)
    if not delivery.etag_matches(request.headers.get("if-match"), tag):
        raise SourceChanged(f"{path} of dataset {pid} changed (its ETag is now {tag}); download it again")
    if delivery.etag_matches_none(request.headers.get("if-none-match"), tag):
        return Response(status_code=304, headers={"ETag": tag, "Accept-Ranges": "bytes"})
    if delivery.not_modified_since(request.headers.get("if-modified-since"), request.headers.get("if-none-match"),
                                   f.mtime):                      # wget -N, curl -z
        return Response(status_code=304, headers={"ETag": tag, "Accept-Ranges": "bytes",
                                                  "Last-Modified": email.utils.formatdate(f.mtime, usegmt=True)})
    if_range = request.headers.get("if-range")
    try:
        rng = delivery.parse_range(request.headers.get("range"), f.size) if if_range in (None, tag) else None
    except ImpossibleRange as e:
        return JSONResponse({"error": str(e), "kind": e.kind}, 416, headers={
            "Content-Range": f"bytes */{f.size}", "Accept-Ranges": "bytes", "ETag": tag,
            "X-Domas-Error": header_safe(str(e))})
    whole = rng is None or rng == (0, f.size)
    reader, src, disk_mtime, key = await run_in_threadpool(svc.open_source, ds, f, whole)
    headers = _content_headers(f, f.mtime or disk_mtime)
    headers["X-Domas-Tier"] = src.tier
    start, end = rng or (0, f.size)
    if rng:
        headers["Content-Range"] = delivery.content_range(start, end, f.size)
    headers["Content-Length"] = str(end - start)
    status = 206 if rng else 200
    if request.method == "HEAD":
        reader.close()
        return Response(status_code=status, headers=headers)
    check = (lambda got: svc.streamed(src, f, key, got)) if key is not None else None
    return _CheckedStream(_stream(reader, start, end, f"{pid}/{path}", check), status_code=status, headers=headers)


# -- the application -------------------------------------------------------------------------------

SEARCH_PARAMS = ("q", "beamtime", "proposal", "pi", "from", "to", "cursor", "limit", "sort", *FILTERS)


def add_api(app: FastAPI, svc: DataService) -> None:
    bearer = HTTPBearer(auto_error=False, description="A personal token (`domas user token NAME`) or the "
                                                      "facility token; optional unless the service has one.")

    def api_caller(request: Request, _doc=Depends(bearer)) -> Caller:
        return svc.caller(request)

    @app.get(f"{API}/datasets", tags=["datasets"], summary="Search datasets, newest first, with facets",
             response_model=DatasetList, responses=ERRORS)
    def list_datasets(request: Request, caller: Caller = Depends(api_caller),
                      q: str = Query("", description="Free text: every word must prefix a word of the title, "
                                                     "metadata, file names, PI, team or proposal title"),
                      beamtime: str | None = Query(None, description="Beamtime id (case ignored)"),
                      proposal: str | None = Query(None, description="Proposal id (case ignored)"),
                      pi: str | None = Query(None, description="The beamtime's or proposal's PI (case ignored)"),
                      from_: str | None = Query(None, alias="from", description="Experiment time from: POSIX "
                                                "seconds or ISO date", json_schema_extra=TIME_SCHEMA),
                      to: str | None = Query(None, description="Experiment time until (a bare date: the whole day)",
                                             json_schema_extra=TIME_SCHEMA),
                      beamline: str | None = Query(None, description="Facet filter: beamline (case ignored)"),
                      data_type: str | None = Query(None, description="Facet filter: data type (raw, processed…)"),
                      year: str | None = Query(None, description="Facet filter: experiment year, e.g. 2025",
                                               json_schema_extra={"pattern": f"^{YEAR_PATTERN}$"}),
                      access: str | None = Query(None, description="Facet filter: open or embargoed",
                                                 json_schema_extra={"enum": list(ACCESS)}),
                      sort: str = Query("newest", description="newest (created, newest first) or title",
                                        json_schema_extra={"enum": list(SORTS)}),
                      cursor: str | None = Query(None, description="`next` of the previous page"),
                      limit: int = Query(100, ge=1, le=1000)) -> dict:
        check_params(request, SEARCH_PARAMS)
        check_choices(sort=sort, access=access, year=year)
        found = svc.search(caller, q=q, beamtime=beamtime, proposal=proposal, pi=pi,
                           start=parse_time(from_, "from"), end=parse_time(to, "to", end_of_day=True),
                           cursor=cursor, limit=limit, sort=sort, beamline=beamline, data_type=data_type,
                           year=year, access=access)
        return {"datasets": [svc.dataset_json(ds) for ds in found.datasets], "count": len(found.datasets),
                "total": found.total, "facets": found.facets, "next": encode_cursor(found.next), "limit": limit}

    content_route = API + "/datasets/{pid:pid}/files/{path:filepath}/content"
    content_doc = dict(tags=["files"], response_class=StreamingResponse,
                       responses={**ERRORS, 206: {"description": "One byte range"},
                                  304: {"description": "If-None-Match names this version, or "
                                                        "If-Modified-Since is not before it"},
                                  412: {"model": ErrorOut, "description": "If-Match names another version"},
                                  416: {"model": ErrorOut, "description": "Range not satisfiable"}})

    @app.head(content_route, operation_id="head_file_content", summary="The file's headers only", **content_doc)
    @app.get(content_route, operation_id="get_file_content", summary="The file's bytes (byte ranges, Digest: adler32)",
             **content_doc)
    async def content(request: Request, pid: str, path: str = FILE_PATH,
                      caller: Caller = Depends(api_caller)) -> Response:
        check_params(request, ())
        return await serve_content(svc, request, caller, pid, path)

    @app.get(API + "/datasets/{pid:pid}/files/{path:filepath}", tags=["files"],
             summary="One file's record: size, checksums, replicas", response_model=FileOut, responses=ERRORS)
    def file_record(request: Request, pid: str, path: str = FILE_PATH, caller: Caller = Depends(api_caller)) -> dict:
        check_params(request, ())
        delivery.check_request_path(path)
        ds, f = svc.file(pid, path, caller)
        return svc.file_json(ds, f)

    @app.get(API + "/datasets/{pid:pid}/files", tags=["files"],
             summary="Every file of a dataset as JSON lines, streamed (for clients of large datasets)",
             response_class=StreamingResponse,
             responses={**ERRORS, 200: {"content": {"application/x-ndjson": {}},
                                        "description": "One FileOut object per line, by path"}})
    async def all_files(request: Request, pid: str, caller: Caller = Depends(api_caller)) -> Response:
        check_params(request, ())
        ds = await run_in_threadpool(svc.dataset, pid, caller)

        async def lines():
            async for batch in iterate_in_threadpool(batched(svc.catalogue.files_of(ds.pid), 1000)):
                yield "".join(json.dumps(svc.file_json(ds, f)) + "\n" for f in batch).encode()

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    @app.get(API + "/datasets/{pid:pid}", tags=["datasets"],
             summary="One dataset with a page of its files (by path)", response_model=DatasetPage,
             responses=ERRORS)
    def get_dataset(request: Request, pid: str, caller: Caller = Depends(api_caller),
                    offset: int = Query(0, ge=0, le=MAX_OFFSET),
                    limit: int = Query(1000, ge=1, le=MAX_FILES_PAGE)) -> dict:
        check_params(request, ("offset", "limit"))
        ds = svc.described(svc.dataset(pid, caller))
        files, more = svc.files_page(ds.pid, offset, limit)
        nxt = f"{portal.api_dataset_path(ds.pid)}?offset={offset + limit}&limit={limit}" if more else None
        return {**svc.dataset_json(ds), "files": [svc.file_json(ds, f) for f in files],
                "offset": offset, "limit": limit, "next": nxt}


def document_auth(app: FastAPI, required: bool) -> None:
    """The OpenAPI document says how callers identify as the service behaves: a Bearer token, or
    HTTP Basic with the token as password; optional (an empty requirement) unless the service has
    a facility token."""
    built = app.openapi

    def openapi() -> dict:
        spec = built()
        schemes = spec.setdefault("components", {}).setdefault("securitySchemes", {})
        schemes.setdefault("HTTPBasic", {"type": "http", "scheme": "basic",
                                         "description": "Any user name, the token as password (for browsers)."})
        options = [{"HTTPBearer": []}, {"HTTPBasic": []}]
        for ops in spec.get("paths", {}).values():
            for op in ops.values():
                if "security" in op:
                    op["security"] = options if required else [{}, *options]
        return spec

    app.openapi = openapi


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/") or request.url.path in ("/healthz", "/metrics")


def header_safe(text: str) -> str:
    """Printable ASCII for a header value (a HEAD answer has no body to carry the sentence)."""
    return "".join(c if " " <= c <= "~" else "?" for c in text)[:500]


def _session_name(request: Request) -> str:
    """The name of the portal user whose page this error is (shown in the page's header as on every
    page, with "Log out"), or "" when no session is open or it cannot be read now."""
    svc = getattr(request.app.state, "service", None)
    if svc is None or request.headers.get("authorization") or not request.cookies.get(SESSION_COOKIE):
        return ""
    try:
        found = svc.session_caller(request)
    except DomasError:
        return ""
    return found.name if found else ""


def _error_response(request: Request, status: int, message: str, kind: str,
                    extra: dict[str, str] | None = None) -> Response:
    headers = {"X-Domas-Error": header_safe(message), **(extra or {})}
    if _wants_json(request):
        resp: Response = JSONResponse({"error": message, "kind": kind}, status, headers=headers)
    elif status == 401:
        # A portal page a browser may not see yet: the login form, back to this page afterwards. Only
        # the Bearer challenge: a Basic one makes the browser ask for a user name and password in its
        # own dialog (or, headless, show nothing) instead of this page.
        token = form_token(request)
        ended = request.cookies.get(SESSION_COOKIE) and not request.headers.get("authorization")
        note = "Your session has ended; log in again." if ended else message
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        resp = html_page(request, portal.render_login(note, form_token=token, next_path=target), token, 401,
                         headers)
        resp.headers.append("WWW-Authenticate", _CHALLENGES[0])
        return resp
    else:
        heading = {403: "Not available", 404: "Not found"}.get(status, "Something went wrong")
        token = form_token(request)
        page = portal.render_error(heading, message, _session_name(request), token)
        resp = html_page(request, page, token, status, headers)
    if status == 401:
        for challenge in _CHALLENGES:
            resp.headers.append("WWW-Authenticate", challenge)
    return resp


def crash_response(request: Request) -> Response:
    """The answer to a request whose handling raised what no handler knows (httpedge logs it): the
    shape of every other error, the sentence of any other failure of the service."""
    return _error_response(request, 500, client_sentence(DomasError(), 500), DomasError().kind)


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomasError)
    async def on_domas_error(request: Request, exc: DomasError) -> Response:
        status = status_for(exc)
        if status >= 500:
            log.warning("%s %s: %s", request.method, request.url.path, exc)
        return _error_response(request, status, client_sentence(exc, status), exc.kind)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        message = f"{where}: {first.get('msg', 'invalid value')}".rstrip(".") + "."
        return _error_response(request, 400, message, "usage")

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            message = f"there is no page or API endpoint at {request.url.path}; see /docs for the API"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}; see /docs for the API"
        else:
            message = str(exc.detail)
        allow = None
        if exc.headers and "Allow" in exc.headers:
            methods = [m.strip() for m in exc.headers["Allow"].split(",")]
            allow = {"Allow": ", ".join(methods + (["HEAD"] if "GET" in methods and "HEAD" not in methods else []))}
        return _error_response(request, exc.status_code, message, "http", allow)
