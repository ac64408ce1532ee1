"""A storage admin's limits as a copy meets them: a file-size limit (`ulimit -f`, or a file system's
largest file) and a read-only mount. Each says what it is; neither is advice that sends the admin
the wrong way ('free space' for a size limit, 'check the owner and mode' for a read-only mount).
The copy keeps its part file, so raising the limit and running the same command again resumes.
"""

from __future__ import annotations

import errno
import os
import resource
import subprocess
import sys

from domas.errors import NoSpace, PermissionDenied, from_oserror

PLAIN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("DOMAS_")}


def _limit_file_size(limit: int):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))


def test_a_file_size_limit_says_so_and_the_copy_resumes_once_it_is_raised(tmp_path):
    """Was: 'No space left on the destination; free space and run the same command again to
    resume: File too large' with the disk nearly empty."""
    (tmp_path / "big.dat").write_bytes(os.urandom(3_000_000))
    env = {**PLAIN_ENV, "DOMAS_STATE_DIR": str(tmp_path / "state")}
    cmd = [sys.executable, "-m", "domas.cli", "copy", "--chunk-size", "256KiB", "big.dat", "out/"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env,
                         preexec_fn=_limit_file_size(1_000_000))
    assert out.returncode == 5, (out.returncode, out.stderr)
    assert "The file is larger than the destination takes (this process's file-size limit, `ulimit -f`" in out.stderr
    assert "free space" not in out.stderr, out.stderr
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "out" / "big.dat").read_bytes() == (tmp_path / "big.dat").read_bytes()
    assert "resuming" in again.stderr, again.stderr


def test_a_read_only_mount_is_named_as_such():
    """Was: 'Permission denied; check the owner and mode of the path: Read-only file system'."""
    err = from_oserror(OSError(errno.EROFS, "Read-only file system"), "/tape/B1/.f.domas-part")
    assert isinstance(err, PermissionDenied) and err.exit_code == 4
    assert str(err) == ("The destination's file system is mounted read-only; nothing can be written there "
                        "(/tape/B1/.f.domas-part)")
    assert isinstance(from_oserror(OSError(errno.EFBIG, "File too large")), NoSpace)
