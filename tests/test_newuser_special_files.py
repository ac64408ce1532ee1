"""FIFOs, sockets and devices where a new user (or a beamline's stray process) leaves them: a
copy or a checksum never waits on one, never replaces one, and the archiver never hands one to
an agent. Found by hand: `domas copy f.txt /dev/null`, run as root, renamed the copy over
/dev/null (every later `> /dev/null` on the host filled a regular file); `domas copy tree/ out/`
with a FIFO in the tree waited forever for a writer; a socket failed with the raw 'No such device
or address' and left a part file behind.

Real processes on real FIFOs and sockets (no privilege needed; the device case makes one with
mknod and is skipped where that is not allowed).
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from domas.archive.discovery import scan_tree
from domas.transfer.storage import resolve

PLAIN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("DOMAS_")}


def domas(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**PLAIN_ENV, "DOMAS_STATE_DIR": str(cwd / ".state")}
    return subprocess.run([sys.executable, "-m", "domas.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=30, cwd=cwd, env=env)


@pytest.fixture
def tree(tmp_path):
    """tree/a (a file), tree/pipe (a FIFO nobody writes), tree/sock (a listening socket's name)."""
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "a").write_bytes(b"data")
    os.mkfifo(tmp_path / "tree" / "pipe")
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(tmp_path / "tree" / "sock"))
    yield tmp_path
    s.close()


def test_a_tree_holding_a_fifo_and_a_socket_is_copied_without_them_and_without_waiting(tree):
    out = domas("copy", "tree/", "out/", cwd=tree)       # the old code waited here until the timeout
    assert out.returncode != 0, out.stderr
    assert (tree / "out" / "a").read_bytes() == b"data"
    said = out.stdout + out.stderr
    assert "tree/pipe is a FIFO, not a regular file; skipped" in said, said
    assert "tree/sock is a socket, not a regular file; skipped" in said, said
    assert "No such device or address" not in said
    assert sorted(p.name for p in (tree / "out").iterdir()) == ["a"]       # no part file left behind


@pytest.mark.parametrize("command", [["copy", "tree/pipe", "out/"], ["checksum", "tree/pipe"],
                                     ["checksum", "tree/sock"]])
def test_a_fifo_or_socket_named_as_the_source_is_refused_at_once(tree, command):
    out = domas(*command, cwd=tree)
    assert out.returncode == 3, (out.returncode, out.stderr)
    assert "not a regular file" in out.stdout + out.stderr and "Traceback" not in out.stderr


def special_destinations(tmp_path: Path):
    os.mkfifo(tmp_path / "fifo")
    yield tmp_path / "fifo"
    try:
        os.mknod(tmp_path / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except OSError:          # no CAP_MKNOD here: the FIFO case stands for it
        return
    yield tmp_path / "null"


def test_a_copy_never_replaces_a_fifo_or_device_it_is_given_as_destination(tmp_path):
    (tmp_path / "f.txt").write_bytes(b"hello")
    for dest in special_destinations(tmp_path):
        before = os.lstat(dest)
        out = domas("copy", "f.txt", dest.name, cwd=tmp_path)
        assert out.returncode == 3, (out.returncode, out.stdout, out.stderr)
        said = out.stdout + out.stderr
        assert f"destination {dest} is a" in said and "not a regular file; nothing copied" in said, said
        after = os.lstat(dest)
        assert stat.S_IFMT(after.st_mode) == stat.S_IFMT(before.st_mode) and after.st_ino == before.st_ino
        assert not list(tmp_path.glob(f".{dest.name}*"))


def test_the_archivers_tree_scan_leaves_a_fifo_out_and_says_so(tree):
    store, root = resolve(str(tree / "tree"))
    files, problems = scan_tree(store, root)
    assert set(files) == {"a"}
    assert sorted(str(p).split(" is ")[1] for p in problems) == [
        "a FIFO, not a regular file; not archived", "a socket, not a regular file; not archived"]


@pytest.fixture
def looped(tmp_path):
    """tree/a, tree/l1 <-> tree/l2 (a symlink loop), tree/self -> self, then tree/sub/file and tree/z."""
    t = tmp_path / "tree"
    (t / "sub").mkdir(parents=True)
    for rel in ("a", "sub/file", "z"):
        (t / rel).write_bytes(rel.encode())
    os.symlink("l2", t / "l1")
    os.symlink("l1", t / "l2")
    os.symlink("self", t / "self")
    return tmp_path


def test_a_symlink_loop_in_a_tree_skips_that_link_and_copies_the_rest(looped):
    """Was: 'FAILED tree/: Too many levels of symbolic links (tree/l1)' and every entry the walk had
    not reached yet (tree/sub/file, tree/z) silently left out, on every run again."""
    out = domas("copy", "tree/", "out/", cwd=looped)
    assert out.returncode == 3, (out.returncode, out.stdout, out.stderr)      # the links' class: not found
    for rel in ("a", "sub/file", "z"):
        assert (looped / "out" / rel).read_bytes() == rel.encode()
    for link in ("l1", "l2", "self"):
        assert f"symlink {looped / 'tree' / link} cannot be followed (Too many levels of symbolic links" in out.stderr


def test_the_archivers_tree_scan_goes_past_a_symlink_loop(looped):
    """Was: the scan raised at the loop, so no file of the beamline tree was discovered while it stood."""
    store, root = resolve(str(looped / "tree"))
    files, problems = scan_tree(store, root)
    assert set(files) == {"a", "sub/file", "z"}
    assert len(problems) == 3 and all("is a symlink that cannot be followed" in str(p) for p in problems)
