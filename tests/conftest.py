"""Shared test set-up: every module in tests/fixtures/ is loaded as a pytest plugin.

Each fixture module owns one real server (xrootd, the MongoDB-wire server, Prometheus, the
controller) and starts it on a free loopback port with a readiness poll, never a sleep.
"""

from pathlib import Path

pytest_plugins = sorted(
    f"tests.fixtures.{p.stem}" for p in (Path(__file__).parent / "fixtures").glob("*.py") if p.stem != "__init__"
)
