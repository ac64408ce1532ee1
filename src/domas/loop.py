"""Run a coroutine on uvloop where it is installed, asyncio otherwise: the one event loop runner.

Nothing is imported until a coroutine runs: `domas get` imports its event loop while its dataset
listing is on the network."""

from __future__ import annotations


def run_async(coro, *, fast_loop: bool = True):
    """Run `coro` to completion. `fast_loop=False` keeps the standard loop: for a short command
    whose loop only hands work to threads (`domas get`: ~1100 chunks a GiB), importing uvloop
    (~4 ms of CPU at start) costs more than its faster loop saves."""
    if fast_loop:
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
            pass
        else:
            return uvloop.run(coro)
    import asyncio

    return asyncio.run(coro)
