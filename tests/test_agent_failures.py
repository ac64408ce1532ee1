"""An agent never drops a failure: an exception that is not a DomasError, raised while it works on
a lease, is reported to the controller as a failed chunk of kind "internal" (one sentence) and
logged once; the lease is not left to expire in silence.

Real parts: the controller (gRPC, scheduler, SQLite state) and an agent, in one event loop.
The lease is made to fail with a ValueError by a source name the OS refuses (a NUL byte), put in
the queue through the controller's one way into the scheduler.
"""

from __future__ import annotations

import asyncio
import logging

from domas.agent.accounting import Accounting
from domas.agent.worker import Agent, run_lease
from domas.config import Config, ControllerConfig, StorageConfig
from domas.controller import events as ev
from domas.controller.server import start_controller
from domas.v1 import domas_pb2 as pb


def test_run_lease_reports_a_foreign_exception_as_an_internal_failure(caplog):
    lease = pb.ChunkLease(lease_id="1-1", transfer_id="t", file_id=1, chunk_index=0, offset=0, length=10,
                          file_size=10, src_url="/tmp/bad\x00name", dst_url="/tmp/domas-never-written")
    acct = Accounting()
    with caplog.at_level(logging.ERROR, logger="domas.agent"):
        res = run_lease(lease, acct)
    assert (res.error_kind, res.retriable) == ("internal", True)
    assert res.error_message == ("the agent hit an unexpected ValueError while copying this chunk; "
                                 "the agent's log has the details")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info, "logged once, with its traceback"


def test_agent_reports_an_unexpected_exception_to_the_controller(tmp_path, caplog):
    async def scenario() -> list[dict]:
        cfg = Config(state_dir=str(tmp_path / "state"), storage=StorageConfig(central=str(tmp_path)),
                     controller=ControllerConfig(listen="127.0.0.1:0", metrics_listen="127.0.0.1:0"))
        ctl = await start_controller(cfg, "127.0.0.1:0", tmp_path / "ctl", "127.0.0.1:0")
        stop = asyncio.Event()
        agent = Agent(controller=f"127.0.0.1:{ctl.port}", name="dtn", streams=2, state_dir=tmp_path / "agent")
        run = asyncio.create_task(agent.run(stop))
        try:
            spec = ev.TransferSpec("t-bad", chunk_size=8192, max_attempts=1)
            ctl.service.event(ev.TransferSubmitted(spec, (ev.FileSpec("/tmp/bad\x00name", str(tmp_path / "x"), 10),)))
            for _ in range(200):              # readiness poll: the report arrives well before a lease expires
                rows = ctl.store.files("t-bad")
                if rows[0]["state"] == "failed":
                    return rows
                await asyncio.sleep(0.05)
            return ctl.store.files("t-bad")
        finally:
            stop.set()
            await run
            await ctl.stop()

    with caplog.at_level(logging.ERROR, logger="domas.agent"):
        rows = asyncio.run(scenario())
    assert [(r["state"], r["error_kind"]) for r in rows] == [("failed", "internal")]
    assert "\n" not in rows[0]["error_message"] and "null byte" not in rows[0]["error_message"]
