"""The data service's HTTP edge: HEAD for every GET, request metrics, security headers, and API
docs served locally.

- HEAD: a route declaring only GET is run as GET for a HEAD request and its body is dropped here,
  so the headers (Content-Length, ETag, ...) are exactly those of the GET. Routes that declare HEAD
  themselves (file content: no bytes are read) are left alone.
- Metrics (Prometheus, one registry per app, at /metrics): requests by route template, method and
  status; response body bytes by route; latency histogram by route (until the last byte is sent).
  Routes are labelled by their template (/api/v1/datasets/{pid}), never by the raw path, so a
  scan of random URLs cannot grow the label set ("unmatched" for those).
- /openapi.json tells what the service does: 400 (not FastAPI's 422) for invalid input, and a
  HEAD operation beside every GET.
- /docs: Swagger UI from the swagger-ui-bundle package's files, served by this service, so it works
  on a facility network without internet; without that package /docs is off (404) and
  /openapi.json still describes the API. Its start script is a file too (/docs/init.js), so no
  page needs an inline script.
- Request bodies are capped at MAX_BODY: one declared larger is refused (413) before a byte of it
  is read, and one sent in chunks is cut off there. FastAPI reads a route's whole body before
  its dependencies run, so without the cap anyone could make the service hold gigabytes (an
  anonymous POST to an admin route, or to /login).
- Cache-Control: private, no-cache on every response that sets none (what the service answers
  depends on who asks: an embargoed file fetched with a session cookie, which a shared proxy
  would otherwise be free to keep, Last-Modified being there, and hand to the next caller).
  Browsers keep their own copy and revalidate it (ETag, 304); the stylesheet is public.
- A request whose handling raises what no error handler knows (a bug, a record the catalogue
  cannot read back) is answered as every other error is (`on_crash`: JSON {"error", "kind"} under
  /api, the portal's page elsewhere; one sentence naming no server path and no exception text)
  and logged once, with its traceback, in the service's log only. Starlette's own answer was a
  plain-text "Internal Server Error", and uvicorn logged the traceback again. A response whose
  first bytes are already sent cannot be replaced: it is left incomplete (the client sees a broken
  transfer).
- A request target in absolute-form (`GET http://host/path`, RFC 9112 3.2.2) is read as its path.
- Security headers on every response (a route's own value is kept): X-Content-Type-Options:
  nosniff, Referrer-Policy: same-origin, X-Frame-Options: DENY, and a Content-Security-Policy
  that allows only this service's own files: the portal has no script at all and one stylesheet
  (/assets/style.css); /docs runs Swagger UI's script from /docs/assets (its inline styles
  allowed); no page may be framed (frame-ancestors 'none') or post a form elsewhere.
"""

from __future__ import annotations

import json
import logging
import time
from html import escape
from typing import Callable
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.staticfiles import StaticFiles

log = logging.getLogger("domas.dataservice")

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
DOCS = "/docs"
DOCS_ASSETS = "/docs/assets"
_CSP_COMMON = ("default-src 'none'; img-src 'self' data:; connect-src 'self'; form-action 'self'; "
               "frame-ancestors 'none'; base-uri 'none'")
PAGE_CSP = f"{_CSP_COMMON}; style-src 'self'"
DOCS_CSP = f"{_CSP_COMMON}; script-src 'self'; style-src 'self' 'unsafe-inline'"
SECURITY_HEADERS = ((b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"same-origin"),
                    (b"x-frame-options", b"DENY"), (b"cache-control", b"private, no-cache"))


MAX_BODY = 16 * 1024 * 1024          # the largest request body (an operator's import of proposals and beamtimes)


class BodyTooLarge(Exception):
    """A request body went past MAX_BODY while it was read."""


CRASH_SENTENCE = "the service failed to answer this request; try again later (the service's log says why)"


def _crash_json() -> Response:
    return Response(json.dumps({"error": CRASH_SENTENCE, "kind": "error"}), 500, media_type="application/json",
                    headers={"X-Domas-Error": CRASH_SENTENCE})


def _too_large_response() -> tuple[dict, dict]:
    body = json.dumps({"error": f"the request body is larger than {MAX_BODY // (1024 * 1024)} MiB; send less",
                       "kind": "usage"}).encode()
    start = {"type": "http.response.start", "status": 413,
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                         (b"connection", b"close")]}
    return start, {"type": "http.response.body", "body": body}


def security_headers(path: str, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """`headers` (ASGI form) with the security headers added where the response has none of its own."""
    have = {name.lower() for name, _ in headers}
    csp = DOCS_CSP if path == DOCS or path.startswith(DOCS + "/") else PAGE_CSP
    extra = [*SECURITY_HEADERS, (b"content-security-policy", csp.encode())]
    return list(headers) + [(name, value) for name, value in extra if name not in have]


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("domas_dataservice_requests_total", "HTTP requests answered",
                                ["route", "method", "status"], registry=self.registry)
        self.bytes = Counter("domas_dataservice_response_bytes_total", "Response body bytes sent",
                             ["route"], registry=self.registry)
        self.latency = Histogram("domas_dataservice_request_seconds", "Time from request to last byte sent",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=self.registry)

    def observe(self, route: str, method: str, status: int, sent: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        if sent:
            self.bytes.labels(route).inc(sent)
        self.latency.labels(route).observe(seconds)


def origin_form(scope: dict) -> dict:
    """The scope of a request whose target is in absolute-form (`GET http://host/path HTTP/1.1`,
    which a server must accept: RFC 9112 3.2.2) as if it were sent in origin-form (`GET /path`):
    uvicorn passes the whole URL on as the path, and no route matched it (404)."""
    raw = scope.get("raw_path") or scope["path"].encode()
    return {**scope, "path": urlsplit(scope["path"]).path or "/",
            "raw_path": urlsplit(raw.decode("latin-1")).path.encode("latin-1") or b"/"}


class HttpEdge:
    """ASGI middleware: HEAD as GET without a body, security headers, and one metrics observation
    per request."""

    def __init__(self, app, metrics: ServiceMetrics, on_crash: Callable[[Request], Response] | None = None,
                 head_routes: tuple[str, ...] = ("/content",)) -> None:
        self.app, self.metrics, self.on_crash, self.head_routes = app, metrics, on_crash, head_routes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"].startswith(("http://", "https://")):
            scope = origin_form(scope)
        method = scope["method"]
        head = method == "HEAD" and not scope["path"].endswith(self.head_routes)
        if head:
            scope = dict(scope, method="GET")
        started, status, sent, answered = time.perf_counter(), [500], [0], [False]

        async def edge_send(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                answered[0] = True
                message = {**message, "headers": security_headers(scope["path"], message.get("headers", []))}
            elif message["type"] == "http.response.body":
                if head:
                    message = {**message, "body": b""}
                sent[0] += len(message.get("body", b""))
            await send(message)

        received = [0]

        async def edge_receive():
            message = await receive()
            if message["type"] == "http.request":
                received[0] += len(message.get("body", b""))
                if received[0] > MAX_BODY:
                    raise BodyTooLarge()
            return message

        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        try:
            if declared.isdigit() and int(declared) > MAX_BODY:
                raise BodyTooLarge()
            await self.app(scope, edge_receive, edge_send)
        except BodyTooLarge:
            if not answered[0]:                          # nothing sent yet: say why
                for message in _too_large_response():
                    await edge_send(message)
        except Exception:
            log.exception("%s %s failed", method, scope["path"])        # the traceback: the log only
            if not answered[0]:
                await self._crashed(scope, receive, edge_send)
        finally:
            route = scope.get("route")
            self.metrics.observe(getattr(route, "path_format", None) or "unmatched", method, status[0], sent[0],
                                 time.perf_counter() - started)


    async def _crashed(self, scope, receive, send) -> None:
        """Answer a request whose handling raised (see the module docstring)."""
        try:
            response = self.on_crash(Request(scope)) if self.on_crash is not None else _crash_json()
        except Exception:                                # the error page itself failed: the plain JSON
            log.exception("the error answer to %s failed", scope["path"])
            response = _crash_json()
        await response(scope, receive, send)


def tidy_openapi(app: FastAPI) -> None:
    """The OpenAPI document as the service behaves: invalid input is 400 (ErrorOut), never
    FastAPI's 422, and every GET also has its HEAD (same responses, no body)."""
    original = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is not None:
            return app.openapi_schema
        spec = original()
        for ops in spec.get("paths", {}).values():
            for op in ops.values():
                op.get("responses", {}).pop("422", None)
            if "get" in ops and "head" not in ops:
                get = ops["get"]
                ops["head"] = {**get, "operationId": get.get("operationId", "") + "_head",
                               "summary": "Headers only: " + get.get("summary", ""),
                               "responses": {code: {"description": r.get("description", "")}
                                             for code, r in get.get("responses", {}).items()}}
        schemas = spec.get("components", {}).get("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        app.openapi_schema = spec
        return spec

    app.openapi = openapi


def _swagger_assets():
    try:
        import swagger_ui_bundle
    except ImportError:
        return None
    return swagger_ui_bundle.swagger_ui_path


def add_edge(app: FastAPI, metrics_guard: Callable[[Request], None] | None = None,
             on_crash: Callable[[Request], Response] | None = None) -> ServiceMetrics:
    """HEAD for every GET, /metrics (behind `metrics_guard`, which raises when the request may not
    read them), the answer to an unexpected exception (`on_crash`), and /docs from local files
    (see the module docstring)."""
    metrics = ServiceMetrics()
    app.add_middleware(HttpEdge, metrics=metrics, on_crash=on_crash)
    tidy_openapi(app)

    @app.get("/metrics", include_in_schema=False, dependencies=[Depends(metrics_guard)] if metrics_guard else [])
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    assets = _swagger_assets()
    if assets is not None:
        app.mount(DOCS_ASSETS, StaticFiles(directory=str(assets)), name="docs-assets")

        @app.get(DOCS, include_in_schema=False)
        def docs() -> HTMLResponse:
            return HTMLResponse(swagger_page(app.title))

        @app.get(f"{DOCS}/init.js", include_in_schema=False)
        def docs_init() -> Response:
            return Response(swagger_init(app.openapi_url or "/openapi.json"), media_type="text/javascript")

    return metrics


def swagger_page(title: str) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)} - API</title>
<link rel="stylesheet" href="{DOCS_ASSETS}/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="{DOCS_ASSETS}/swagger-ui-bundle.js"></script>
<script src="{DOCS}/init.js"></script>
</body></html>
"""


def swagger_init(openapi_url: str) -> str:
    return f'SwaggerUIBundle({{url: {json.dumps(openapi_url)}, dom_id: "#swagger-ui"}});\n'

