"""The data service application: the REST API (api.py), the portal (portal_routes.py) and the
operator routes (operator_api.py) put together on one FastAPI app, with its edge (httpedge.py)."""

from __future__ import annotations

import time
from typing import Callable

from fastapi import Depends, FastAPI

from domas import __version__
from domas.catalogue import Catalogue

from .api import (DESCRIPTION, DataService, add_api, add_error_handlers, crash_response, document_auth,
                  refuse_cross_site)
from .access import MetricsGuard
from .api_schema import ERRORS, Health
from .httpedge import add_edge
from .operator_api import add_operator_api
from .portal_routes import add_portal


def create_app(catalogue: Catalogue, tiers: dict[str, str], *, token: str = "", users=None, oidc=None,
               metrics_guard: MetricsGuard = MetricsGuard(), now: Callable[[], float] = time.time) -> FastAPI:
    """The data service over `catalogue`, reading files from `tiers` (name -> root URL); `users` is
    the UserStore holding personal tokens (None: only the facility token identifies anyone);
    `metrics_guard` who may scrape /metrics besides staff (access.may_read_metrics)."""
    svc = DataService(catalogue, tiers, token, now, users, oidc, metrics_guard)
    app = FastAPI(title="domas data service", version=__version__, description=DESCRIPTION, docs_url=None,
                  redoc_url=None, dependencies=[Depends(refuse_cross_site)])
    app.state.service = svc
    app.state.metrics = add_edge(app, svc.check_metrics, crash_response)
    add_error_handlers(app)
    add_api(app, svc)
    add_portal(app, svc)
    add_operator_api(app, svc)                     # proposals, beamtimes, embargoes (admin)
    document_auth(app, required=bool(token))

    @app.get("/healthz", tags=["service"], summary="Liveness and catalogue reachability", response_model=Health,
             responses={503: ERRORS[503]})
    def healthz() -> dict:
        catalogue.ping()
        return {"status": "ok", "tiers": sorted(svc.tiers)}

    return app
