"""The operator controls over REST (admin callers only): the same writes as `domas catalogue
proposal|beamtime|import|embargo|release|history`, through catalogue/operator.py, each
change recorded with the caller's name and the time.

Routes under /api/v1: PUT proposals/{id}, PUT beamtimes/{id}, POST beamtimes/{id}/embargo,
POST import, PUT datasets/{pid}/embargo, DELETE datasets/{pid}/embargo (release),
GET history/{key}. Anyone but an admin gets 403; errors are the service's one-sentence JSON.
They are left out of the public OpenAPI document (which describes what scientists may call).
"""

from __future__ import annotations

from typing import Any

from fastapi import Body, Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool

from domas.catalogue import operator as op
from domas.errors import InvalidMessage, PermissionDenied

API = "/api/v1"
_ROUTE = {"tags": ["operator"], "include_in_schema": False}


def _date(value: Any, what: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        return op.parse_date(value, what)
    raise InvalidMessage(f"{what} must be a date (YYYY-MM-DD) or POSIX seconds")


def _fields(body: dict, allowed: tuple[str, ...], kind: str) -> dict:
    if not isinstance(body, dict):
        raise InvalidMessage(f"give the {kind}'s fields as a JSON object")
    out = dict(body)
    op._known(out, allowed, kind)
    for key in ("start", "end"):
        if out.get(key) is not None:
            out[key] = _date(out[key], key)
    if "team" in out and not (isinstance(out["team"], list) and all(isinstance(t, str) for t in out["team"])):
        raise InvalidMessage("team must be a list of names")
    for key in ("title", "pi", "proposal", "beamline"):
        if key in out and not isinstance(out[key], str):
            raise InvalidMessage(f"{key} must be a string")
    return out


def add_operator_api(app: FastAPI, svc) -> None:
    """Register the admin routes on the data service's app (`svc`: its DataService)."""

    def admin(request: Request) -> str:
        who = svc.caller(request)
        if who.role == "anonymous":
            raise PermissionDenied("changes to the catalogue need an admin's token in the Authorization header "
                                   "(a portal login does not authorise changes)")
        if who.role != "admin":
            raise PermissionDenied("only an admin (the facility token, or a user with role admin) may change "
                                   "the catalogue's proposals, beamtimes and embargoes")
        return who.name or "admin"

    cat = svc.catalogue

    @app.put(API + "/proposals/{proposal_id}", **_ROUTE, summary="Create or update a proposal (admin)")
    async def put_proposal(proposal_id: str, body: dict = Body(...), who: str = Depends(admin)) -> dict:
        changes = _fields(body, op.PROPOSAL_FIELDS, "proposal")
        p = await run_in_threadpool(op.set_proposal, cat, proposal_id, changes, who=who, now=svc.now())
        return {"id": p.id, "title": p.title, "pi": p.pi}

    @app.put(API + "/beamtimes/{beamtime_id}", **_ROUTE, summary="Create or update a beamtime (admin)")
    async def put_beamtime(beamtime_id: str, body: dict = Body(...), who: str = Depends(admin)) -> dict:
        changes = _fields(body, op.BEAMTIME_FIELDS, "beamtime")
        b = await run_in_threadpool(op.set_beamtime, cat, beamtime_id, changes, who=who, now=svc.now())
        return {"id": b.id, "beamline": b.beamline, "proposal": b.proposal, "pi": b.pi, "team": list(b.team),
                "start": b.start, "end": b.end}

    @app.post(API + "/beamtimes/{beamtime_id}/embargo", tags=["operator"], include_in_schema=False,
              summary="Embargo a beamtime: its datasets now and those catalogued later (admin)")
    async def embargo_beamtime(beamtime_id: str, body: dict = Body(...), who: str = Depends(admin)) -> dict:
        until = _date(body.get("until") if isinstance(body, dict) else None, "until")
        done = await run_in_threadpool(op.embargo_beamtime, cat, beamtime_id, until, who=who, now=svc.now())
        return {"embargoed": [d.pid for d in done], "until": until}

    @app.put(API + "/datasets/{pid:pid}/embargo", **_ROUTE, summary="Embargo a dataset (admin)")
    async def embargo(pid: str, body: dict = Body(...), who: str = Depends(admin)) -> dict:
        until = _date(body.get("until") if isinstance(body, dict) else None, "until")
        d = await run_in_threadpool(op.embargo, cat, pid, until, who=who, now=svc.now())
        return {"pid": d.pid, "state": d.state, "embargo_end": d.embargo_end}

    @app.delete(API + "/datasets/{pid:pid}/embargo", **_ROUTE, summary="Release a dataset now (admin)")
    async def release(pid: str, who: str = Depends(admin)) -> dict:
        d = await run_in_threadpool(op.release, cat, pid, who=who, now=svc.now())
        return {"pid": d.pid, "state": d.state, "embargo_end": d.embargo_end}

    @app.post(API + "/import", **_ROUTE, summary="Import proposals and beamtimes (admin)")
    async def import_rows(body: list = Body(...), who: str = Depends(admin)) -> dict:
        if not all(isinstance(r, dict) for r in body):
            raise InvalidMessage("give a JSON list of objects (one per beamtime or proposal)")
        n_prop, n_bt = await run_in_threadpool(op.import_records, cat, body, who=who, now=svc.now())
        return {"proposals": n_prop, "beamtimes": n_bt}

    @app.get(API + "/history/{key:pid}", **_ROUTE, summary="Recorded changes of a dataset, beamtime or "
                                                                    "proposal (admin)")
    async def history(key: str, who: str = Depends(admin)) -> list:
        changes = await run_in_threadpool(op.history, cat, key)
        return [{"at": c.at, "who": c.who, "target": c.target, "field": c.field, "old": c.old, "new": c.new}
                for c in changes]
