"""A local database that fails AFTER it was opened (a read-only file, a damaged table) reaches the user
as one sentence naming the file and what to do, never sqlite's own text ("attempt to write a readonly
database", "database disk image is malformed") or a traceback. Errors at open are test_sqlite_open.py's.

Real files and real processes: `domas user ...` as a user runs it; the catalogue spool is the real
class on a real file. Permission bits bind only without CAP_DAC_OVERRIDE, so as root the command runs
in a child without it (setpriv), as test_sqlite_open.py does.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from domas.catalogue.spool import SPOOL_FILE, SpooledCatalogue
from domas.catalogue.sqlite import SQLiteCatalogue
from domas.errors import DatabaseError

SQLITE_TEXT = ("readonly database", "malformed", "attempt to write", "disk image", "Traceback", "Errno")
DROP_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]


def domas_as_user(*args, cwd: Path) -> subprocess.CompletedProcess:
    """`domas ARGS` where permission bits bind (as root: without CAP_DAC_OVERRIDE)."""
    cmd = [sys.executable, "-m", "domas.cli", *args]
    if os.geteuid() == 0:
        cmd = DROP_DAC + cmd
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=cwd)


def one_sentence(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("domas: ") and not any(t in lines[0] for t in SQLITE_TEXT), lines[0]
    return lines[0]


def damage_table(db_file: Path, table: str) -> None:
    """Overwrite the root page of `table` with garbage; the header and schema page stay intact, so the
    file still opens and the damage shows only when the table is read."""
    db = sqlite3.connect(str(db_file))
    page_size = db.execute("PRAGMA page_size").fetchone()[0]
    root = db.execute("SELECT rootpage FROM sqlite_master WHERE name=?", (table,)).fetchone()[0]
    db.close()                                          # the last connection: the WAL is checkpointed
    assert root > 1
    with open(db_file, "r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(b"\xa5" * page_size)


@pytest.fixture
def users_deployment(tmp_path):
    (tmp_path / "domas.toml").write_text('state_dir = "state"\n')
    out = domas_as_user("--config", "domas.toml", "user", "add", "Ada Lovelace", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    return tmp_path


def test_a_read_only_user_list_is_one_sentence_naming_the_file(users_deployment):
    users = users_deployment / "state" / "users.sqlite"
    users.chmod(0o444)                                  # e.g. copied in by another account
    out = domas_as_user("--config", "domas.toml", "user", "add", "Grace Hopper", cwd=users_deployment)
    line = one_sentence(out.stderr)
    assert out.returncode == 74, out.stderr
    assert str(users) in line and "not writable" in line and "permissions" in line
    listed = domas_as_user("--config", "domas.toml", "user", "list", cwd=users_deployment)
    assert listed.returncode == 0 and listed.stdout.startswith("Ada Lovelace\tuser")   # nothing lost


def test_a_damaged_user_list_is_one_sentence_naming_the_file(users_deployment):
    users = users_deployment / "state" / "users.sqlite"
    damage_table(users, "users")
    out = domas_as_user("--config", "domas.toml", "user", "list", cwd=users_deployment)
    line = one_sentence(out.stderr)
    assert out.returncode == 74, out.stderr
    assert str(users) in line and "damaged" in line and "backup" in line


def test_a_damaged_catalogue_spool_is_one_sentence_naming_the_file(tmp_path):
    inner = SQLiteCatalogue(tmp_path / "catalogue.sqlite")
    SpooledCatalogue(inner, tmp_path).close()
    spool_file = tmp_path / SPOOL_FILE
    damage_table(spool_file, "ops")
    spool = SpooledCatalogue(inner, tmp_path)            # opens: the header and schema are intact
    with pytest.raises(DatabaseError) as err:
        spool.pending()
    text = str(err.value)
    assert str(spool_file) in text and "damaged" in text and "backup" in text
    assert not any(t in text for t in SQLITE_TEXT), text
    assert err.value.exit_code == 74 and not err.value.retriable


_SPOOL_WRITE = """
import sys
from domas.catalogue.spool import SpooledCatalogue
from domas.catalogue.sqlite import SQLiteCatalogue
from domas.errors import DomasError
spool = SpooledCatalogue(SQLiteCatalogue(sys.argv[1] + "/catalogue.sqlite"), sys.argv[1])
try:
    spool._append("state", {"pid": "X", "state": "open"})
    print("written")
except DomasError as e:
    print(type(e).__name__, e.exit_code, e)
"""


def test_a_read_only_catalogue_spool_is_one_sentence_naming_the_file(tmp_path):
    SpooledCatalogue(SQLiteCatalogue(tmp_path / "catalogue.sqlite"), tmp_path).close()
    spool_file = tmp_path / SPOOL_FILE
    spool_file.chmod(0o444)
    cmd = [sys.executable, "-c", _SPOOL_WRITE, str(tmp_path)]
    out = subprocess.run(DROP_DAC + cmd if os.geteuid() == 0 else cmd, capture_output=True, text=True, timeout=60)
    assert "Traceback" not in out.stderr, out.stderr
    assert out.stdout.startswith(f"DatabaseError 74 the catalogue spool {spool_file} "), out.stdout
    assert "not writable" in out.stdout and not any(t in out.stdout for t in SQLITE_TEXT), out.stdout
