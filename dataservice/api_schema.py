"""The data service's JSON shapes, declared so the OpenAPI document (/docs) describes every answer.

The routes build plain dicts (DataService.dataset_json / file_json); these models only state and
check their shape. Every error answer is ErrorOut: one sentence and the error's stable kind.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorOut(BaseModel):
    error: str = Field(description="What happened and what to do, in one sentence")
    kind: str = Field(description="Stable error name, e.g. not_found, permission_denied, unauthenticated")


class ReplicaOut(BaseModel):
    state: str = Field(description="pending, copying, verified, failed, stale, deleting or deleted")
    verified_at: float | None = Field(None, description="POSIX seconds when the copy was last verified")


class FileOut(BaseModel):
    path: str = Field(description="Path inside the dataset, '/'-separated")
    size: int
    adler32: str = Field(description="8 lowercase hex digits ('' when not known yet)")
    xxh3: str = Field(description="16 lowercase hex digits ('' when not known)")
    mtime: float
    etag: str = Field(description="The ETag the content endpoint sends for this file")
    replicas: dict[str, ReplicaOut] = Field(description="Replica per storage tier (beamline, central, tape)")
    available: bool = Field(description="A verified replica on a tier this service reads can serve it")
    served_from: str | None = Field(description="The tier a download is served from now")
    content_url: str = Field(description="Path of the content endpoint (GET, HEAD, byte ranges)")


class DatasetOut(BaseModel):
    pid: str
    title: str
    beamtime: str
    path: str
    data_type: str
    state: str = Field(description="open, closed, archived, embargoed (until embargo_end), released (after it)")
    embargo_end: float | None
    embargoed: bool = Field(description="Under embargo now: the caller sees it as a team member or staff")
    downloadable: bool = Field(description="The caller may download its files (always, for what it may see)")
    embargo_reason: str | None = Field(description="Always null: a dataset the caller may not see is a 404")
    file_count: int
    bytes: int
    created_at: float | None
    metadata: dict[str, Any]
    url: str


class DatasetPage(DatasetOut):
    files: list[FileOut] = Field(description="One page of files, by path")
    offset: int
    limit: int
    next: str | None = Field(description="Path of the next page, or null on the last page")


class DatasetList(BaseModel):
    datasets: list[DatasetOut] = Field(description="One page of matches, newest first")
    count: int = Field(description="Datasets on this page")
    total: int = Field(description="Every dataset matching the query (that the caller may see)")
    facets: dict[str, dict[str, int]] = Field(
        description="Counts over every match by beamline, data_type, year (experiment) and access (open/embargoed)")
    next: str | None = Field(description="Cursor for the next page (pass as `cursor`), null on the last page")
    limit: int


class Health(BaseModel):
    status: str
    tiers: list[str]


ERRORS = {status: {"model": ErrorOut, "description": text} for status, text in (
    (400, "Bad request: unknown or invalid parameter, or unsafe path"),
    (401, "The token is wrong, or missing on a service that has a facility token"),
    (404, "Unknown dataset or file, or one under embargo the caller is not in the team of"), (503, "Catalogue or storage unavailable; retry later"))}
