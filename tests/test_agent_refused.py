"""An agent against a real controller: a refusal that asking again cannot mend ends the agent with
one sentence and the error's exit code; a controller that is not there (yet) is asked again.

Was: any refusal but a wrong token was logged '...; retrying' and asked again forever (here: a name
the controller refuses, which `domas agent` checks at start, but a controller of another version,
or a caller of the Agent class, meets the controller's rule only there).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from domas.agent.worker import Agent
from domas.errors import InvalidMessage
from tests.fixtures.facility import Facility


@pytest.fixture
def facility(tmp_path):
    fac = Facility(tmp_path)
    yield fac
    fac.stop()


def _agent(fac: Facility, name: str, tmp_path) -> Agent:
    return Agent(controller=f"127.0.0.1:{fac.port}", name=name, streams=2, state_dir=tmp_path / "agent")


def test_a_registration_the_controller_refuses_ends_the_agent(facility, tmp_path):
    facility.start_controller()
    agent = _agent(facility, "dtn 01", tmp_path)

    async def run() -> None:
        await asyncio.wait_for(agent.run(asyncio.Event()), timeout=15)

    with pytest.raises(InvalidMessage) as got:
        asyncio.run(run())
    said = str(got.value)
    assert said.startswith(f"the controller at 127.0.0.1:{facility.port} refused this agent: ") and \
        "contains a space" in said and said.endswith("asking again cannot help"), said
    assert got.value.exit_code == 2 and "\n" not in said


def test_a_controller_not_there_yet_is_asked_again_until_it_answers(facility, tmp_path):
    agent = _agent(facility, "dtn01", tmp_path)

    async def run() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        await asyncio.sleep(1.5)
        assert not task.done(), task                 # no controller yet: still trying
        await asyncio.to_thread(facility.start_controller)
        for _ in range(200):
            if agent.connected:
                break
            await asyncio.sleep(0.05)
        assert agent.connected
        stop.set()
        await asyncio.wait_for(task, timeout=20)

    asyncio.run(run())


def test_domas_agent_exits_with_one_sentence_on_a_refusal(facility, tmp_path):
    """The same through `domas agent`: a controller that refuses the token ends it, exit 77."""
    facility.config.write_text(facility.config.read_text().replace("[controller]\n",
                                                                   '[controller]\ntoken = "right-token-0123"\n'))
    facility.start_controller()
    agent_cfg = tmp_path / "agent.toml"
    agent_cfg.write_text(f'state_dir = "{tmp_path}/astate"\n[agent]\ncontroller = "127.0.0.1:{facility.port}"\n')
    out = subprocess.run([sys.executable, "-m", "domas.cli", "--config", str(agent_cfg), "agent", "--name", "dtn01",
                          "--metrics-listen", "127.0.0.1:0"], capture_output=True, text=True, timeout=30,
                         env={"PATH": "/usr/bin:/bin", "DOMAS_TOKEN": "wrong-token-0123"})
    assert out.returncode == 77, out.stderr
    assert out.stderr.strip().splitlines()[-1] == (f"domas: the controller at 127.0.0.1:{facility.port} refused "
                                                   "this agent's token; set DOMAS_TOKEN to the controller's token")
