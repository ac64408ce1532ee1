"""`domas catalogue find/show/reconcile` through domas.cli.main, on a real SQLite catalogue."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from domas.archive.cli_catalogue import file_adler32, parse_since
from domas.catalogue import open_catalogue
from domas.catalogue.base import Beamtime, Dataset, FileRecord, Proposal, Replica
from domas.cli import main
from domas.config import CatalogueConfig
from domas.errors import UsageError
from tests.fixtures.common import free_port, on_terminal


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A state directory with a catalogue of two beamtimes; returns (tmp_path, pids)."""
    for var in ("DOMAS_CONFIG", "DOMAS_CATALOGUE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DOMAS_STATE_DIR", str(tmp_path / "state"))
    data = tmp_path / "data"
    (data / "bt1" / "scan1" / "sub").mkdir(parents=True)
    (data / "bt1" / "scan1" / "a.h5").write_bytes(b"a" * 10)
    (data / "bt1" / "scan1" / "sub" / "b.h5").write_bytes(b"b" * 20)
    (data / "bt2" / "scan9").mkdir(parents=True)
    cat = open_catalogue(CatalogueConfig(), tmp_path / "state")
    cat.upsert_proposal(Proposal("P1", "Powders", "Ada"))
    cat.upsert_beamtime(Beamtime("bt1", "B1", "P1", "Grace"))
    cat.upsert_beamtime(Beamtime("bt2", "B2", "P2", "Bob"))
    one = cat.upsert_dataset(Dataset("bt1", str(data / "bt1" / "scan1"), created_at=time.time() - 3600,
                                     metadata={"sample": {"name": "Si"}})).pid
    two = cat.upsert_dataset(Dataset("bt2", str(data / "bt2" / "scan9"), created_at=time.time() - 10 * 86400)).pid
    cat.upsert_files([FileRecord(one, "a.h5", 10, file_adler32(str(data / "bt1" / "scan1" / "a.h5")),
                                 replicas={"central": Replica("verified", "root://c//a.h5", 1.0)}),
                      FileRecord(one, "sub/b.h5", 20, file_adler32(str(data / "bt1" / "scan1" / "sub" / "b.h5")))])
    cat.close()
    return tmp_path, one, two


def run_json(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr().out
    return code, json.loads(out)


def test_find_filters(env, capsys):
    _, one, two = env
    code, found = run_json(capsys, "catalogue", "find", "--json")
    assert code == 0 and [d["pid"] for d in found] == [one, two]
    assert [d["pid"] for d in run_json(capsys, "catalogue", "find", "--pi", "Ada", "--json")[1]] == [one]
    assert [d["pid"] for d in run_json(capsys, "catalogue", "find", "--beamtime", "bt2", "--json")[1]] == [two]
    assert [d["pid"] for d in run_json(capsys, "catalogue", "find", "--since", "2d", "--json")[1]] == [one]
    assert run_json(capsys, "catalogue", "find", "--proposal", "P9", "--json")[1] == []


def test_find_into_a_pipe_is_tab_separated_lines(env, capsys):
    """Into a pipe the output was a rich box table (wrapped at 160 columns): scripts could not cut it."""
    tmp, one, two = env
    assert main(["catalogue", "find"]) == 0
    got = capsys.readouterr()
    rows = [line.split("\t") for line in got.out.splitlines()]
    assert [r[:6] for r in rows] == [[one, "bt1", "raw", "open", "2", "30"], [two, "bt2", "raw", "open", "0", "0"]]
    assert rows[0][7] == str(tmp / "data" / "bt1" / "scan1") and rows[0][6].endswith("Z")
    assert not set(got.out) & BOX and got.err == "2 dataset(s)\n"


BOX = set("┏┃┡│└━─╇┩┳┴")


def _cli(*argv, tty: bool, columns: int = 300) -> str:
    """`domas ...` as a process, its stdout a pseudo-terminal (tty, `columns` wide) or a pipe; returns
    what it wrote."""
    if not tty:
        return subprocess.run([sys.executable, "-m", "domas.cli", *argv], capture_output=True, text=True, timeout=60,
                              check=True).stdout
    code, shown = on_terminal(*argv, columns=columns)
    assert code == 0, shown
    return shown


def test_an_80_column_terminal_shows_every_pid_and_path_whole(env):
    """Was: the table squeezed into 80 columns cut the PID to 'CSTR:170…' and the path to '/B1/202…',
    so the PID the README's next step needs could not be copied. Too wide for the terminal, each row
    is a block instead: the PID (or file path) on its own line, the other columns below it."""
    tmp, one, _ = env
    scan = str(tmp / "data" / "bt1" / "scan1")
    for argv, whole in ((("catalogue", "find"), (one, scan)), (("catalogue", "reconcile", scan), (one, scan))):
        shown = _cli(*argv, tty=True, columns=80)
        assert "…" not in shown and all(w in shown for w in whole), shown
        assert not set(shown) & BOX, shown
    assert set(_cli("catalogue", "find", tty=True)) & BOX       # fits: still a table


def test_names_in_a_table_are_shown_as_they_are_never_as_markup(env):
    """Was: a file 'x].h5' in a directory 'a[' (path 'a[/x].h5') made `domas catalogue show` on a terminal
    fail with 'unexpected internal error (MarkupError)', and '[red]x.h5' was shown as 'x.h5'."""
    tmp, one, _ = env
    cat = open_catalogue(CatalogueConfig(), tmp / "state")
    cat.upsert_files([FileRecord(one, "a[/x].h5", 3, "00000001"), FileRecord(one, "[red]x.h5", 4, "00000002")])
    cat.close()
    shown = _cli("catalogue", "show", one, tty=True)
    assert "a[/x].h5" in shown and "[red]x.h5" in shown, shown


def test_a_terminal_gets_tables_a_pipe_gets_plain_lines(env):
    tmp, one, _ = env
    scan = str(tmp / "data" / "bt1" / "scan1")
    for argv in (("catalogue", "find"), ("catalogue", "show", one), ("catalogue", "reconcile", scan)):
        assert set(_cli(*argv, tty=True)) & BOX, argv
        assert not set(_cli(*argv, tty=False)) & BOX, argv
    shown = _cli("catalogue", "show", one, tty=False).splitlines()
    assert [line.split("\t") for line in shown if line.startswith("file\t")] == [
        ["file", "a.h5", "10", file_adler32(f"{scan}/a.h5"), "central:verified"],
        ["file", "sub/b.h5", "20", file_adler32(f"{scan}/sub/b.h5"), ""]]
    assert shown[0].startswith(one) and "  sample: {'name': 'Si'}" in shown
    assert _cli("catalogue", "reconcile", scan, tty=False).split("\t") == ["dataset", one, scan, "2", "0", "0", "0",
                                                                             "0\n"]


def test_show_lists_files_with_replicas(env, capsys):
    tmp, one, _ = env
    code, doc = run_json(capsys, "catalogue", "show", one, "--json")
    assert code == 0 and doc["dataset"]["file_count"] == 2
    assert [(f["path"], f["size"], f["replicas"]) for f in doc["files"]] == [
        ("a.h5", 10, {"central": {"state": "verified", "url": "root://c//a.h5", "verified_at": 1.0, "version": "",
                                  "checked_at": None}}),
        ("sub/b.h5", 20, {})]
    assert main(["catalogue", "show", str(tmp / "data" / "bt1" / "scan1"), "--limit", "1"]) == 0
    got = capsys.readouterr()
    assert "central:verified" in got.out and "first 1 of 2 files" in got.err and "sample" in got.out


def test_show_unknown_pid_is_one_sentence(env, capsys):
    assert main(["catalogue", "show", "CSTR:17058.11.HEPS.nope"]) == 3
    err = capsys.readouterr().err
    assert err.startswith("domas: no dataset CSTR:17058.11.HEPS.nope") and "Traceback" not in err


def test_reconcile_clean_then_drift(env, capsys):
    tmp, one, _ = env
    scan = tmp / "data" / "bt1" / "scan1"
    code, doc = run_json(capsys, "catalogue", "reconcile", str(scan), "--checksum", "--json")
    assert code == 0 and doc["clean"] and doc["datasets"][0]["matched"] == 2
    (scan / "new.h5").write_bytes(b"n")
    (scan / "sub" / "b.h5").write_bytes(b"c" * 20)                  # same size, other content
    (scan / "a.h5").unlink()
    code, doc = run_json(capsys, "catalogue", "reconcile", str(tmp / "data"), "--checksum", "--json")
    [first] = [d for d in doc["datasets"] if d["pid"] == one]
    assert code == 1 and not doc["clean"]
    assert [e["path"] for e in first["missing_in_catalogue"]] == ["new.h5"]
    assert first["missing_on_disk"] == ["a.h5"] and first["checksum_drift"][0]["path"] == "sub/b.h5"
    assert main(["catalogue", "reconcile", str(scan)]) == 1           # without --checksum: size only
    lines = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert lines == [["dataset", one, str(scan), "1", "1", "1", "0", "0"], ["not-catalogued", one, f"{scan}/new.h5"],
                     ["not-on-disk", one, f"{scan}/a.h5"]]


def test_reconcile_errors(env, capsys, tmp_path):
    assert main(["catalogue", "reconcile", str(tmp_path / "nowhere")]) == 3
    (tmp_path / "empty").mkdir()
    assert main(["catalogue", "reconcile", str(tmp_path / "empty")]) == 3
    assert "no catalogued dataset" in capsys.readouterr().err


def test_unreachable_mongodb_is_reported_quickly(env, capsys, monkeypatch):
    monkeypatch.setenv("DOMAS_CATALOGUE_URL", f"mongodb://127.0.0.1:{free_port()}/domas?directConnection=true")
    started = time.monotonic()
    assert main(["catalogue", "find"]) == 69
    assert time.monotonic() - started < 8
    assert "catalogue cannot be reached" in capsys.readouterr().err


def test_bad_catalogue_url_and_since(env, capsys, monkeypatch):
    assert main(["catalogue", "find", "--since", "yesterday-ish"]) == 2
    monkeypatch.setenv("DOMAS_CATALOGUE_URL", "postgres://x")
    assert main(["catalogue", "find"]) == 78
    assert "catalogue.url" in capsys.readouterr().err


def test_parse_since():
    assert parse_since("100", 0) == 100.0
    assert parse_since("1970-01-02", 0) == 86400.0
    assert parse_since("1970-01-01T08:00:00+08:00", 0) == 0.0
    assert parse_since("1d", 100000.0) == 100000.0 - 86400
    with pytest.raises(UsageError):
        parse_since("soon", 0)
