"""Errors across the gRPC edge, both ways, with one mapping table.

Invariants: whatever a servicer method raises leaves the controller as a gRPC status whose details
are one sentence meant for a user, with the domas error kind in the trailing metadata `domas-kind`;
a foreign exception (sqlite3, grpc, a bug) is logged once with its traceback and its text never
leaves. On the client side `error_from_rpc` turns any status back into the DomasError class of that
kind, or, for a status without a kind (the channel's own), into a sentence chosen here, never the
raw grpc text.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sqlite3

import grpc

from domas.channel import KIND_KEY
from domas.errors import (CatalogueUnavailable, ConfigError, ControllerUnavailable, DomasError, InternalError,
                          InvalidMessage, NotFound, PermissionDenied, SameFile, StorageError, TransientError,
                          Unauthenticated, UnsafePath, UsageError, from_kind)

log = logging.getLogger("domas.controller")


# DomasError class -> status code; the first class in the error's MRO found here wins.
STATUS_OF: dict[type, grpc.StatusCode] = {
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    InvalidMessage: grpc.StatusCode.INVALID_ARGUMENT,
    UsageError: grpc.StatusCode.INVALID_ARGUMENT,
    ConfigError: grpc.StatusCode.INVALID_ARGUMENT,
    UnsafePath: grpc.StatusCode.INVALID_ARGUMENT,
    SameFile: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    TransientError: grpc.StatusCode.UNAVAILABLE,
    CatalogueUnavailable: grpc.StatusCode.UNAVAILABLE,
    InternalError: grpc.StatusCode.INTERNAL,
    StorageError: grpc.StatusCode.FAILED_PRECONDITION,
    DomasError: grpc.StatusCode.FAILED_PRECONDITION,
}

_BUSY = ("database is locked", "database is busy")


def as_domas_error(exc: BaseException, where: str = "the controller") -> DomasError:
    """A DomasError for any exception; foreign ones are logged here (once) with their traceback."""
    if isinstance(exc, DomasError):
        return exc
    if isinstance(exc, sqlite3.OperationalError) and any(b in str(exc) for b in _BUSY):
        log.warning("%s: state store busy: %s", where, exc)
        return TransientError(f"{where}'s state store is busy (another process holds it); try again shortly")
    log.error("%s: unexpected %s: %s", where, type(exc).__name__, exc, exc_info=exc)
    return InternalError(f"{where} hit an unexpected error ({type(exc).__name__}); it was logged there, "
                         "and the request was not carried out")


def status_of(err: DomasError) -> grpc.StatusCode:
    for cls in type(err).__mro__:
        if cls in STATUS_OF:
            return STATUS_OF[cls]
    return grpc.StatusCode.INTERNAL


async def _abort(context, exc: BaseException):
    err = as_domas_error(exc)
    await context.abort(status_of(err), str(err), trailing_metadata=((KIND_KEY, err.kind),))


def _wrap_unary(inner):
    async def behavior(request, context):
        try:
            return await inner(request, context)
        except (grpc.aio.AbortError, asyncio.CancelledError):
            raise
        except Exception as e:       # noqa: BLE001 - the one place foreign errors become a status
            await _abort(context, e)
    return behavior


def _wrap_stream(inner):
    async def behavior(request, context):
        try:
            result = inner(request, context)
            if inspect.isasyncgen(result):
                async for item in result:
                    yield item
            else:
                await result
        except (grpc.aio.AbortError, asyncio.CancelledError):
            raise
        except Exception as e:       # noqa: BLE001
            await _abort(context, e)
    return behavior


class ErrorMapping(grpc.aio.ServerInterceptor):
    """Server interceptor: every method's exceptions go through `as_domas_error` and `status_of`."""

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        kw = {"request_deserializer": handler.request_deserializer,
              "response_serializer": handler.response_serializer}
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(_wrap_unary(handler.unary_unary), **kw)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(_wrap_unary(handler.stream_unary), **kw)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(_wrap_stream(handler.unary_stream), **kw)
        return grpc.stream_stream_rpc_method_handler(_wrap_stream(handler.stream_stream), **kw)


def error_from_rpc(e: grpc.RpcError, address: str) -> DomasError:
    """The client side: a failed call as the DomasError a user reads (one sentence)."""
    code = e.code()
    kind = dict(e.trailing_metadata() or ()).get(KIND_KEY, "")
    if kind:
        return from_kind(kind, e.details() or "")
    if code == grpc.StatusCode.UNAVAILABLE or code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return ControllerUnavailable(f"the controller at {address} cannot be reached; check that it runs")
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return Unauthenticated()
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION,
                grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ALREADY_EXISTS,
                grpc.StatusCode.PERMISSION_DENIED):
        return InvalidMessage(f"the controller refused: {e.details()}")     # its own sentences (context.abort)
    return InternalError(f"the controller at {address} failed to answer ({code.name.lower()}); "
                         "its log has the details")
