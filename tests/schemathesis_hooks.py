"""Schemathesis hooks for tests/test_schemathesis.py (loaded by the CLI through SCHEMATHESIS_HOOKS).

A search cursor is an opaque token the service hands out (`next`); no schema can describe which
strings are real ones, so a request the fuzzer means to be valid gets a real cursor of its sort
order (DOMAS_ST_CURSORS, JSON {sort: cursor}). Requests meant to be invalid keep what was generated.
"""

from __future__ import annotations

import json
import os

import schemathesis

CURSORS: dict[str, str] = json.loads(os.environ.get("DOMAS_ST_CURSORS", "{}"))


@schemathesis.hook
def map_case(context, case):
    positive = case.meta is not None and case.meta.generation.mode.is_positive
    if positive and case.query and case.query.get("cursor"):
        case.query["cursor"] = CURSORS.get(case.query.get("sort") or "newest", case.query["cursor"])
    return case
