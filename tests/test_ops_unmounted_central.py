"""A real unmount under a running `domas up`: the central tier is a bind mount that goes away and
comes back, with history in the state (a file archived before), while new files keep arriving.

While it is away the mount point is an empty directory on another file system. Nothing may be
written into it (old code: the new file's central copy landed there and vanished under the mount
when it came back, while the catalogue called it verified); no good copy may be called bad or
deleted. Once it is back, every file is on central and tape once, with its bytes, and no log holds
a traceback. Needs root (mount --bind); skipped otherwise.
"""

from __future__ import annotations

import os
import subprocess
import time
import zlib

import pytest

from tests.fixtures.common import wait_until
from tests.test_up import RAW, Up


def _mount(real, point) -> bool:
    return subprocess.run(["mount", "--bind", str(real), str(point)], capture_output=True).returncode == 0


def test_central_unmounted_and_mounted_again_under_domas_up(tmp_path):
    real, point = tmp_path / "central-disk", tmp_path / "domas-data" / "central"
    real.mkdir()
    point.mkdir(parents=True)
    if not _mount(real, point):
        pytest.skip("cannot bind-mount (needs root)")
    u = None
    try:
        u = Up(tmp_path, beamline_retention="2s")
        a, b = os.urandom(120_000), os.urandom(130_000)
        u.drop(f"{RAW}/a.h5", a)
        wait_until(lambda: u.replica(f"{RAW}/a.h5", "tape") == "verified", 60, "a.h5 on tape")
        assert (real / RAW / "a.h5").read_bytes() == a and (real / ".domas-tier").exists()
        subprocess.run(["umount", str(point)], check=True)          # the file system goes away
        assert os.listdir(point) == []
        wait_until(lambda: "storage tier central" in (tmp_path / "up.log").read_text() and " is down: " in
                   (tmp_path / "up.log").read_text(), 20, "central reported down")
        u.drop(f"{RAW}/b.h5", b)
        wait_until(lambda: u.replica(f"{RAW}/b.h5", "central") == "copying", 30, "b.h5 catalogued, copy queued")
        time.sleep(4.0)                                              # past a.h5's beamline retention
        assert list(point.rglob("*")) == [], "written into the empty mount point"
        files = u.files()
        assert files[f"{RAW}/a.h5"]["replicas"]["central"]["state"] == "verified"   # not bad, not deleted
        assert not any(r["state"] == "bad" for f in files.values() for r in f["replicas"].values()), files
        assert _mount(real, point)                                   # back
        wait_until(lambda: u.replica(f"{RAW}/b.h5", "tape") == "verified", 60, "b.h5 on central and tape")
        files = u.files()
        assert sorted(files) == [f"{RAW}/a.h5", f"{RAW}/b.h5"]
        for name, data in (("a.h5", a), ("b.h5", b)):
            assert files[f"{RAW}/{name}"]["adler32"] == f"{zlib.adler32(data):08x}"
            assert (real / RAW / name).read_bytes() == data == (u.data / "tape" / RAW / name).read_bytes()
            assert files[f"{RAW}/{name}"]["replicas"]["central"]["state"] == "verified"
        assert sorted(p.name for p in (real / RAW).iterdir()) == ["a.h5", "b.h5"]      # no part file left
    finally:
        if u is not None:
            u.stop()
        subprocess.run(["umount", str(point)], capture_output=True)
    log = (tmp_path / "up.log").read_text()
    assert " is back after " in log and "Traceback" not in log, log[-3000:]
