"""One controller per state directory: a second `domas controller` (or `domas up`) on the same
directory is refused in one sentence instead of scheduling the same files beside the first; the
lock dies with its process, so a controller killed with -9 is replaced at once."""

from __future__ import annotations

import signal
import subprocess
import sys

from tests.fixtures.common import free_port
from tests.fixtures.facility import Facility, _env


def test_a_second_controller_on_one_state_directory_is_refused_and_a_killed_ones_lock_goes_with_it(tmp_path):
    fac = Facility(tmp_path)
    try:
        fac.start_controller()
        second = subprocess.run([sys.executable, "-m", "domas.cli", "--config", str(fac.config), "controller",
                                 "--listen", f"127.0.0.1:{free_port()}", "--metrics-listen", f"127.0.0.1:{free_port()}"],
                                cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=60)
        assert second.returncode == 75, second.stderr
        line = second.stderr.strip()
        assert line == (f"domas: another controller (PID {fac.ctl.pid}) uses the state directory {tmp_path}/state; "
                        "stop it first, or give this one a state directory of its own"), line
        fac.ctl.send_signal(signal.SIGKILL)
        fac.ctl.wait(timeout=10)
        fac.start_controller()                     # the kernel dropped the dead one's lock
        assert fac.cli("status", "--json").returncode == 0
        new = tmp_path / "beamline" / "after"      # and it takes new work, which an agent copies
        new.mkdir(parents=True)
        (new / "a.h5").write_bytes(b"new work" * 1000)
        fac.start_agents(1)
        done = fac.cli("submit", str(new), f"{tmp_path}/central/", "--wait", "--json")
        assert done.returncode == 0, done.stderr
        assert (tmp_path / "central" / "after" / "a.h5").read_bytes() == b"new work" * 1000
    finally:
        fac.stop()
    assert fac.tracebacks() == {}
