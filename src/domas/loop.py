"""Run a coroutine on uvloop where it is installed, asyncio otherwise: the one event loop runner."""

from __future__ import annotations


def run_async(coro):
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        import asyncio

        return asyncio.run(coro)
    return uvloop.run(coro)
