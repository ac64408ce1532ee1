"""SpooledCatalogue: writes made while the catalogue is down are kept, then replayed in order,
exactly once in effect. "Down" is real: a SecantusDB server stopped by PID, or a port nobody serves."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from domas.catalogue import SpooledCatalogue
from domas.catalogue.base import Dataset, FileRecord, Proposal
from domas.catalogue.mongo import MongoCatalogue
from domas.catalogue.sqlite import SQLiteCatalogue
from domas.errors import CatalogueUnavailable, InvalidMessage
from tests.fixtures.common import free_port

TIMEOUT = 0.4


def down_catalogue() -> MongoCatalogue:
    """A MongoDB catalogue on a loopback port nobody listens on."""
    return MongoCatalogue(f"mongodb://127.0.0.1:{free_port()}/?directConnection=true", timeout=TIMEOUT)


def files(pid, n, size=10):
    return [FileRecord(pid, f"f{i}", size, "0000abcd") for i in range(n)]


def offline_writes(cat) -> str:
    cat.upsert_proposal(Proposal("P1", "Powder", "Ada"))
    pid = cat.upsert_dataset(Dataset("bt1", "/data/scan1")).pid
    cat.upsert_files(files(pid, 3))
    cat.upsert_file(FileRecord(pid, "f1", 10, "0000abcd"))       # a repeat: must not count twice
    cat.set_replica(pid, "f0", "central", "verified", "root://c//f0", 5.0)
    cat.set_dataset_state(pid, "closed")
    cat.set_dataset_state(pid, "archived")                       # order matters: archived wins
    return pid


def check_replayed(cat, pid) -> None:
    got = cat.get_dataset(pid)
    assert (got.file_count, got.bytes, got.state) == (3, 30, "archived")
    assert cat.get_file(pid, "f0").replicas["central"].state == "verified"
    assert cat.get_proposal("P1").pi == "Ada"


def test_server_stops_writes_spool_server_returns_replay(secantus_factory, tmp_path):
    server = secantus_factory()
    inner = MongoCatalogue(server.url, database="spooltest", timeout=TIMEOUT)
    cat = SpooledCatalogue(inner, tmp_path / "spool", retry_seconds=60)
    early = cat.upsert_dataset(Dataset("bt0", "/data/early")).pid
    assert cat.pending() == 0 and inner.get_dataset(early) is not None

    server.stop()
    started = time.monotonic()
    pid = offline_writes(cat)
    assert time.monotonic() - started < 10 * TIMEOUT             # detected once, then straight to the spool
    assert cat.pending() == 7
    with pytest.raises(CatalogueUnavailable):
        cat.get_dataset(pid)

    server.start()                                               # same port, same storage
    assert cat.replay() == 7 and cat.pending() == 0
    check_replayed(cat, pid)
    assert cat.get_dataset(early) is not None
    cat.close()


def test_spool_survives_a_restart_and_replays_into_any_catalogue(tmp_path):
    offline = SpooledCatalogue(down_catalogue(), tmp_path / "spool")
    pid = offline_writes(offline)
    assert offline.pending() == 7
    offline.close()

    sqlite = SQLiteCatalogue(tmp_path / "cat.sqlite")
    back = SpooledCatalogue(sqlite, tmp_path / "spool")
    assert back.pending() == 7
    assert back.replay() == 7
    check_replayed(back, pid)
    back.close()


def test_replaying_twice_after_a_crash_doubles_nothing(tmp_path):
    offline = SpooledCatalogue(down_catalogue(), tmp_path / "spool")
    pid = offline_writes(offline)
    offline.close()
    saved = tmp_path / "saved"
    shutil.copytree(tmp_path / "spool", saved)                   # the spool as it was before replay

    first = SpooledCatalogue(SQLiteCatalogue(tmp_path / "cat.sqlite"), tmp_path / "spool")
    assert first.replay() == 7
    first.close()
    shutil.rmtree(tmp_path / "spool")
    shutil.copytree(saved, tmp_path / "spool")                   # crash: applied, but not yet deleted
    again = SpooledCatalogue(SQLiteCatalogue(tmp_path / "cat.sqlite"), tmp_path / "spool")
    assert again.replay() == 7
    check_replayed(again, pid)
    again.close()


def test_new_writes_queue_behind_the_spool(tmp_path):
    clock = [0.0]
    inner = SQLiteCatalogue(tmp_path / "cat.sqlite")
    cat = SpooledCatalogue(down_catalogue(), tmp_path / "spool", retry_seconds=30, clock=lambda: clock[0])
    pid = cat.upsert_dataset(Dataset("bt1", "/data/scan1")).pid
    cat.set_dataset_state(pid, "closed")
    assert cat.pending() == 2
    cat.inner = inner                                            # the catalogue is back (a different store)
    cat.set_dataset_state(pid, "archived")                       # inside the retry window: spooled behind
    assert cat.pending() == 3 and inner.get_dataset(pid) is None
    clock[0] = 31.0
    cat.upsert_file(FileRecord(pid, "late", 4))                  # window over: replay, then this write
    assert cat.pending() == 0
    got = inner.get_dataset(pid)
    assert (got.state, got.file_count) == ("archived", 1)


def test_refused_writes_are_set_aside_not_blocking(tmp_path):
    cat = SpooledCatalogue(down_catalogue(), tmp_path / "spool")
    cat.upsert_file(FileRecord("CSTR:17058.11.HEPS.unknown", "a", 1))   # its dataset was never catalogued
    pid = cat.upsert_dataset(Dataset("bt1", "/data/scan1")).pid
    cat.upsert_file(FileRecord(pid, "b", 2))
    cat.inner = SQLiteCatalogue(tmp_path / "cat.sqlite")
    assert cat.replay() == 3 and cat.pending() == 0
    assert cat.get_dataset(pid).file_count == 1
    [(op, args, reason)] = cat.rejected()
    assert op == "files" and "not in the catalogue" in reason


def test_bad_records_are_refused_even_offline(tmp_path):
    cat = SpooledCatalogue(down_catalogue(), tmp_path / "spool")
    with pytest.raises(InvalidMessage):
        cat.upsert_file(FileRecord("CSTR:x", "/abs", 1))
    with pytest.raises(InvalidMessage):
        cat.set_replica("CSTR:x", "a", "tape", "maybe")
    assert cat.pending() == 0


def test_files_follow_their_dataset_to_the_pid_the_catalogue_gave(tmp_path):
    inner = SQLiteCatalogue(tmp_path / "cat.sqlite")
    imported = inner.upsert_dataset(Dataset("bt1", "/data/scan1", pid="CSTR:17058.11.HEPS.imported.1"))
    cat = SpooledCatalogue(down_catalogue(), tmp_path / "spool")
    guessed = cat.upsert_dataset(Dataset("bt1", "/data/scan1")).pid
    assert guessed != imported.pid
    cat.upsert_files(files(guessed, 2))
    cat.set_replica(guessed, "f1", "tape", "verified")
    cat.inner = inner
    assert cat.replay() == 3 and cat.rejected() == []
    assert inner.get_dataset(imported.pid).file_count == 2
    assert inner.get_file(imported.pid, "f1").replicas["tape"].state == "verified"


CHILD = """
import os, signal, sys
from tests.test_catalogue_spool import down_catalogue, offline_writes
from domas.catalogue import SpooledCatalogue
cat = SpooledCatalogue(down_catalogue(), sys.argv[1])
print(offline_writes(cat), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_spooled_writes_survive_kill_9(tmp_path):
    """A process spools seven writes and is killed -9 the moment they return: all seven are there."""
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "spool")], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).parent.parent)
    assert proc.returncode == -9, proc.stderr
    pid = proc.stdout.strip()
    back = SpooledCatalogue(SQLiteCatalogue(tmp_path / "cat.sqlite"), tmp_path / "spool")
    assert back.pending() == 7 and back.replay() == 7
    check_replayed(back, pid)
    back.close()


def test_reads_go_to_the_catalogues_own_query_not_a_walk(tmp_path):
    """replicas_due_for_check (the scrubber's question every round) is the catalogue's own bounded
    query; the spool answered it with the generic walk over every verified copy (pages of 2000
    files with their replicas) before."""
    from domas.catalogue.base import Replica

    inner = SQLiteCatalogue(tmp_path / "cat.sqlite")
    cat = SpooledCatalogue(inner, tmp_path / "spool")
    pid = cat.upsert_dataset(Dataset("bt1", "/data/scan1")).pid
    cat.upsert_files([FileRecord(pid, f"f{i:05d}", 1, "00020002", replicas={
        "central": Replica("verified", f"u/{i}", float(i))}) for i in range(4500)])
    statements: list[str] = []
    inner._db.set_trace_callback(statements.append)
    due = cat.replicas_due_for_check("central", 100.0, limit=3)
    inner._db.set_trace_callback(None)
    assert [f.path for f in due] == ["f00000", "f00001", "f00002"]
    assert not [s for s in statements if "r.file_id>" in s], "walked every verified copy"
    assert len([s for s in statements if "coalesce(r.checked_at" in s]) == 1
    cat.close()
