"""One SQLite opener (domas/sqlite.py): every store opens its file with the same pragmas, and a file
that cannot be opened (a parent that is not a directory, not a database, locked by another process)
is one DatabaseError sentence naming the file, never sqlite's text or a traceback.

Each store is the real class on a real file in tmp_path.
"""

from __future__ import annotations

import ast
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from domas.agent.spool import ReportSpool
from domas.archive.sources.amqp import RunIndex
from domas.catalogue.spool import SpooledCatalogue
from domas.catalogue.sqlite import SQLiteCatalogue
from domas.controller.state import StateStore
from domas.dataservice.users import UserStore
from domas.errors import DatabaseError, DatabaseLocked, DomasError
from domas.publish import Spool
from domas.sqlite import open_db

ROOT = Path(__file__).resolve().parent.parent


def _spooled(path: Path):
    return SpooledCatalogue(SQLiteCatalogue(path.parent / "inner.sqlite"), path.parent)


# (name, constructor from the database path, the file it opens)
STORES = [
    ("state", StateStore, lambda p: p),
    ("report spool", ReportSpool, lambda p: p),
    ("users", UserStore, lambda p: p),
    ("catalogue", SQLiteCatalogue, lambda p: p),
    ("catalogue spool", _spooled, lambda p: p.parent / "catalogue-spool.sqlite"),
    ("publish spool", Spool, lambda p: p),
    ("run index", RunIndex, lambda p: p),
]


def pragmas(db: sqlite3.Connection) -> dict:
    return {name: db.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("journal_mode", "busy_timeout", "foreign_keys")}


@pytest.mark.parametrize("name,make,file_of", STORES, ids=[s[0] for s in STORES])
def test_every_store_opens_with_the_same_pragmas(tmp_path, name, make, file_of):
    store = make(tmp_path / "db.sqlite")
    got = pragmas(store._db)
    assert got["journal_mode"] == "wal" and got["foreign_keys"] == 1 and got["busy_timeout"] >= 2000, got
    store._db.close()


@pytest.mark.parametrize("name,make,file_of", STORES, ids=[s[0] for s in STORES])
def test_a_file_that_is_not_a_database_is_one_sentence(tmp_path, name, make, file_of):
    target = file_of(tmp_path / "db.sqlite")
    target.write_bytes(b"this is not an SQLite file, it is a note someone left here\n" * 50)
    with pytest.raises(DatabaseError) as err:
        make(tmp_path / "db.sqlite")
    text = str(err.value)
    assert str(target) in text and "not an SQLite database" in text and "\n" not in text
    assert not err.value.retriable and err.value.exit_code == 74


@pytest.mark.parametrize("name,make,file_of", STORES, ids=[s[0] for s in STORES])
def test_a_parent_that_is_not_a_directory_is_one_sentence(tmp_path, name, make, file_of):
    (tmp_path / "plain").write_text("a file where a directory should be")
    with pytest.raises(DomasError) as err:
        make(tmp_path / "plain" / "db.sqlite")
    assert "plain" in str(err.value) and "\n" not in str(err.value)
    assert "Errno" not in str(err.value)


_OPEN_IN = """
import sys
from domas.controller.state import StateStore
from domas.errors import DomasError
try:
    StateStore(sys.argv[1])
    print("opened")
except DomasError as e:
    print(type(e).__name__, e.exit_code, e)
"""


def test_an_unwritable_directory_is_one_sentence(tmp_path):
    """Run where permission bits bind: as root, in a child without CAP_DAC_OVERRIDE."""
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    cmd = [sys.executable, "-c", _OPEN_IN, str(ro / "controller.sqlite")]
    if os.geteuid() == 0:
        cmd = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--", *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    ro.chmod(0o755)
    assert "Traceback" not in out.stderr, out.stderr
    assert out.stdout.startswith("DatabaseError 74 the controller's state store ") and "not writable" in out.stdout


def test_a_database_locked_by_another_process_is_retriable(tmp_path):
    path = tmp_path / "locked.sqlite"
    holder = sqlite3.connect(str(path), isolation_level=None)
    holder.execute("CREATE TABLE t (x)")                 # a rollback-journal database ...
    holder.execute("BEGIN EXCLUSIVE")                    # ... held exclusively: WAL cannot be switched on
    try:
        with pytest.raises(DatabaseLocked) as err:
            open_db(path, what="test store", busy_timeout=0.2)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert err.value.retriable and "locked by another process" in str(err.value) and str(path) in str(err.value)
    db = open_db(path, what="test store")                # free again: opens
    assert pragmas(db)["journal_mode"] == "wal"
    db.close()


def test_settings_are_applied(tmp_path):
    db = open_db(tmp_path / "a.sqlite", synchronous="FULL", busy_timeout=3, foreign_keys=False, cache_kib=4096)
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2
    assert db.execute("PRAGMA cache_size").fetchone()[0] == -4096
    assert pragmas(db) == {"journal_mode": "wal", "busy_timeout": 3000, "foreign_keys": 0}
    db.close()
    with pytest.raises(ValueError):
        open_db(tmp_path / "b.sqlite", synchronous="sometimes")


def test_no_module_but_the_opener_connects_to_sqlite():
    """A new store goes through open_db: no other production module calls sqlite3.connect."""
    callers = []
    for folder in ("src", "agent", "archive", "catalogue", "controller", "dataservice", "transfer", "ext"):
        for f in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(f.read_text())):
                if isinstance(node, ast.Call) and ast.unparse(node.func) == "sqlite3.connect":
                    callers.append(f"{f.relative_to(ROOT)}:{node.lineno}")
    assert [c.split(":")[0] for c in callers] == ["src/domas/sqlite.py"], callers
