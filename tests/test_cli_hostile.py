"""Careless and hostile input on the CLI, as a new user types it: every mistake is one sentence on
stderr (`domas: ...`) with a documented exit code, never a traceback, an "unexpected internal error"
or a library's raw text, and nothing is half done (no message spooled for a URL that can never work).

Real processes (`python -m domas.cli`) on real files; permission bits bind only without
CAP_DAC_OVERRIDE, so as root those commands run in a child without it (setpriv).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.common import free_port, on_terminal, stop_process, up_config, wait_until

RAW = ("Traceback", "internal error", "Errno", "Connect call failed", "Name or service", "UnicodeDecodeError",
       "ValueError")
DROP_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]


def domas(*args, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "domas.cli", *map(str, args)]
    if os.geteuid() == 0:
        cmd = DROP_DAC + cmd
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOMAS_")}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)


def one_sentence(out: subprocess.CompletedProcess, code: int) -> str:
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("domas: "), out.stderr
    assert not any(t in lines[0] for t in RAW), lines[0]
    assert out.returncode == code, (out.returncode, out.stderr)
    return lines[0]


@pytest.fixture
def deployment(tmp_path):
    (tmp_path / "domas.toml").write_text('data_dir = "data"\n')
    return tmp_path


# -- domas catalogue import FILE --------------------------------------------------------------------

def test_import_of_a_directory_says_give_the_file(deployment):
    (deployment / "office").mkdir()
    line = one_sentence(domas("--config", "domas.toml", "catalogue", "import", "office", cwd=deployment), 2)
    assert "office is a directory" in line


def test_import_of_a_binary_file_says_not_text(deployment):
    (deployment / "export.csv").write_bytes(b"\xff\xfe\x00\x81 spreadsheet, not CSV")
    line = one_sentence(domas("--config", "domas.toml", "catalogue", "import", "export.csv", cwd=deployment), 2)
    assert "export.csv is not UTF-8 text" in line


def test_import_of_an_unreadable_file_says_permission(deployment):
    f = deployment / "office.csv"
    f.write_text("proposal,title\nP-1,Foo\n")
    f.chmod(0)
    line = one_sentence(domas("--config", "domas.toml", "catalogue", "import", "office.csv", cwd=deployment), 4)
    assert "office.csv cannot be read (permission denied)" in line


# -- domas publish closed PATH --url URL ----------------------------------------------------------

def spooled(spool: Path) -> int:
    if not spool.exists():
        return 0
    db = sqlite3.connect(str(spool))
    try:
        return db.execute("SELECT count(*) FROM spool").fetchone()[0]
    finally:
        db.close()


@pytest.mark.parametrize("url,said", [
    ("http://127.0.0.1:5672/", "is not an amqp:// or amqps:// URL"),
    ("amqp://[::1", "is not a valid URL"),
    ("amqp://guest:secret@127.0.0.1:99999/", "is not a valid URL"),
    ("amqp:///", "names no host"),
])
def test_publish_to_a_url_that_cannot_work_is_refused_before_anything_is_spooled(tmp_path, url, said):
    f = tmp_path / "scan_0001.h5"
    f.write_bytes(b"x" * 100)
    spool = tmp_path / "spool.sqlite"
    line = one_sentence(domas("publish", "closed", f, "--url", url, "--spool", spool, cwd=tmp_path), 2)
    assert said in line and "secret" not in line
    assert spooled(spool) == 0


def test_publish_to_an_unreachable_bus_says_why_in_words_and_keeps_the_message(tmp_path):
    f = tmp_path / "scan_0001.h5"
    f.write_bytes(b"x" * 100)
    spool = tmp_path / "spool.sqlite"
    out = domas("publish", "closed", f, "--url", f"amqp://guest:secret@127.0.0.1:{free_port()}/",
                "--spool", spool, "--timeout", "2", cwd=tmp_path)
    line = one_sentence(out, 0)                       # kept on disk: the next publish sends it
    assert "(connection refused)" in line and "1 message(s) kept in the spool" in line and "secret" not in line
    assert spooled(spool) == 1


def test_publish_of_a_directory_is_refused(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    spool = tmp_path / "spool.sqlite"
    line = one_sentence(domas("publish", "closed", raw, "--url", "amqp://127.0.0.1:5672/", "--spool", spool,
                              cwd=tmp_path), 2)
    assert f"{raw} is a directory" in line
    assert spooled(spool) == 0


# -- --controller ADDRESS (submit, status, cancel, agent, archive) and agent.controller ----------------

@pytest.mark.parametrize("address,said", [
    ("http://127.0.0.1:7400", "is a URL; give host:port"),
    ("ctl.example", "is not host:port"),
    ("127.0.0.1:99999", "is not host:port"),
])
@pytest.mark.parametrize("command", [
    ["status"], ["cancel", "d8a1307c78d64d07"], ["submit", "/data/a", "/data/b/"],
    ["agent", "--name", "dtn01", "--metrics-listen", "127.0.0.1:0"],
    ["archive", "--metrics-listen", "127.0.0.1:0"],
], ids=lambda c: c[0])
def test_a_controller_address_that_cannot_work_is_refused_at_once(deployment, command, address, said):
    """Was: 'cannot be reached; check that it runs' (exit 69) for a URL or a missing port, and the
    agent and archive retried such an address forever."""
    out = domas("--config", "domas.toml", *command, "--controller", address, cwd=deployment, timeout=20)
    line = one_sentence(out, 2)
    assert f"--controller {address!r} {said}" in line


def test_a_configured_controller_url_names_the_key(deployment):
    (deployment / "domas.toml").write_text('data_dir = "data"\n[agent]\ncontroller = "grpc://ctl.example:7400"\n')
    line = one_sentence(domas("--config", "domas.toml", "status", cwd=deployment), 78)
    assert line.startswith("domas: agent.controller: 'grpc://ctl.example:7400' is a URL")


# -- domas up --data-dir DIR ---------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["/dev/null", "/proc/1"])
@pytest.mark.parametrize("config,key", [("", "state_dir"), ("state_dir = 'state'", "data_dir")])
def test_up_with_a_data_dir_where_nothing_can_live_names_the_key(tmp_path, where, config, key):
    """Was: 'unexpected internal error (NotADirectoryError / FileExistsError / ...)', exit 70: the
    state directory, or (with state_dir set) the instance's domas.toml, could not be made."""
    (tmp_path / "domas.toml").write_text(config + "\n" + up_config(tmp_path / "unused", metrics=0).split("\n", 1)[1])
    out = domas("--config", "domas.toml", "up", "--data-dir", where, cwd=tmp_path, timeout=20)
    line = one_sentence(out, 78)
    assert line.startswith(f"domas: {key}: cannot ") and f" {where}" in line and "choose another --data-dir" in line


# -- file names a beamline writes: `domas up` goes on archiving --------------------------------------

def test_a_file_name_that_is_not_utf8_is_refused_and_archiving_goes_on(tmp_path):
    """Was: the catalogue refused the batch (UnicodeEncodeError), the archiver's loop ended without a
    word, and no file was archived any more, in any dataset, while `domas up` kept running."""
    data = tmp_path / "domas-data"
    (tmp_path / "domas.toml").write_text(up_config(data, metrics=0, stability=1))
    log = open(tmp_path / "up.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "domas.cli", "--config", "domas.toml", "up"], cwd=tmp_path,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "Stop with Ctrl-C." in (tmp_path / "up.log").read_text(), 60, "domas up", proc=proc)
        raw = data / "beamline" / "B1" / "202611" / "Data" / "BT0001" / "raw"
        raw.mkdir(parents=True)
        (raw / "plain.dat").write_bytes(b"a" * 100)
        with open(os.path.join(os.fsencode(raw), b"lat\xe9.dat"), "wb") as f:     # a Latin-1 name
            f.write(b"b" * 100)
        later = data / "beamline" / "B1" / "202611" / "Data" / "BT0002" / "raw"

        def archived() -> str:
            found = domas("--config", "domas.toml", "catalogue", "find", cwd=tmp_path).stdout
            return "".join(domas("--config", "domas.toml", "catalogue", "show", line.split("\t")[0],
                                 cwd=tmp_path).stdout for line in found.splitlines())

        wait_until(lambda: "plain.dat" in archived(), 60, "plain.dat catalogued", proc=proc)
        later.mkdir(parents=True)                                     # archiving goes on after it
        (later / "next.dat").write_bytes(b"c" * 100)
        wait_until(lambda: "next.dat\t100\t" in archived() and archived().count("tape:verified") == 2, 60,
                   "next.dat catalogued and on tape", proc=proc)
        text = (tmp_path / "up.log").read_text()
        assert "lat\ufffd.dat' is not a UTF-8 file name" in text and "rename it" in text, text
        assert "lat" not in archived() and "Traceback" not in text
    finally:
        stop_process(proc, timeout=30)
        log.close()


def test_domas_copy_takes_a_file_name_that_is_not_utf8(tmp_path):
    """Was: 'unexpected internal error (UnicodeEncodeError)', exit 70, nothing copied (the part-file
    name and the journal key encoded the name as UTF-8)."""
    src = tmp_path / "scan"
    src.mkdir()
    name = b"lat\xe9.dat"                                     # a Latin-1 name, as old writers make them
    with open(os.path.join(os.fsencode(src), name), "wb") as f:
        f.write(b"x" * 5000)
    (src / "plain.dat").write_bytes(b"y" * 10)
    env_dir = tmp_path / "state"
    for expect in ("2 copied", "2 up to date"):
        out = subprocess.run([sys.executable, "-m", "domas.cli", "copy", "scan", "dst/"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=60,
                             env={**os.environ, "DOMAS_STATE_DIR": str(env_dir)})
        assert out.returncode == 0 and expect in out.stdout + out.stderr, out.stderr
    with open(os.path.join(os.fsencode(tmp_path / "dst" / "scan"), name), "rb") as f:
        assert f.read() == b"x" * 5000


# -- TLS files that are not what their setting says -----------------------------------------------------

GRPC_CORE = ("add_port.cc", "tls_security_connector", "E11", "another process holds the port")


@pytest.mark.parametrize("pair", ["garbage", "certificate as key"])
def test_a_controller_tls_pair_that_is_not_one_names_both_keys(deployment, loopback_certificate, pair):
    """Was: gRPC's own log line on stderr, then 'cannot listen on 127.0.0.1:0 (another process holds
    the port ...)', which sent the operator after a port."""
    cert, key = loopback_certificate
    if pair == "garbage":
        cert = key = deployment / "junk.pem"
        cert.write_text("not a certificate\n")
    else:
        key = cert
    (deployment / "domas.toml").write_text(f'data_dir = "data"\n[controller]\ntls_cert = "{cert}"\n'
                                           f'tls_key = "{key}"\n')
    out = domas("--config", "domas.toml", "controller", "--listen", "127.0.0.1:0", "--metrics-listen",
                "127.0.0.1:0", "--root", deployment, cwd=deployment, timeout=30)
    line = one_sentence(out, 78)
    assert line.startswith("domas: controller.tls_cert, controller.tls_key: ") and "private key" in line
    assert not any(t in out.stderr for t in GRPC_CORE), out.stderr


@pytest.mark.parametrize("command", [["status"], ["agent", "--name", "dtn01", "--metrics-listen", "127.0.0.1:0"]],
                         ids=lambda c: c[0])
def test_a_tls_ca_that_holds_no_certificate_names_the_key(deployment, command):
    """Was: gRPC's log line and 'the controller ... cannot be reached' (exit 69); the agent retried forever."""
    (deployment / "junk.pem").write_text("not a certificate\n")
    (deployment / "domas.toml").write_text(f'data_dir = "data"\n[agent]\ntls_ca = "{deployment / "junk.pem"}"\n')
    out = domas("--config", "domas.toml", *command, cwd=deployment, timeout=20)
    line = one_sentence(out, 78)
    assert line.startswith(f"domas: agent.tls_ca: {deployment / 'junk.pem'} holds no PEM certificate")
    assert not any(t in out.stderr for t in GRPC_CORE), out.stderr


# -- domas catalogue: numbers and dates as a user types them ----------------------------------------------

@pytest.mark.parametrize("args", [["find", "--limit", "99999999999999999999"], ["find", "--limit", "-1"],
                                  ["show", "CSTR:X", "--limit", "99999999999999999999"]])
def test_a_limit_out_of_range_is_a_usage_error(deployment, args):
    """Was: 'the catalogue refused the record: datatype mismatch' (sqlite's text) for a huge --limit, and
    every dataset for a negative one."""
    out = domas("--config", "domas.toml", "catalogue", *args, cwd=deployment)
    assert out.returncode == 2 and "is not a count from 0 to 2147483647" in out.stderr, out.stderr
    assert "datatype" not in out.stderr and out.stdout == ""


def test_a_beamtime_ending_before_it_starts_says_the_dates(deployment):
    """Was: 'end 1793491200.0 is before start 1793836800.0' (POSIX seconds)."""
    out = domas("--config", "domas.toml", "catalogue", "beamtime", "set", "BT1", "--start", "2026-11-05",
                "--end", "2026-11-01", cwd=deployment)
    line = one_sentence(out, 2)
    assert "end 2026-11-01 00:00 is before start 2026-11-05 00:00 (UTC)" in line



# -- names with brackets on a terminal -----------------------------------------------------------------------

def test_domas_copy_on_a_terminal_shows_names_as_they_are(tmp_path, monkeypatch):
    """Was: the live display read names as rich markup: 'a[/x].h5' (a file 'x].h5' in a folder 'a[')
    ended the copy with 'unexpected internal error (MarkupError)', exit 70, and '[red]y.h5' was shown
    as a red 'y.h5'."""
    src = tmp_path / "scan"
    (src / "a[").mkdir(parents=True)
    (src / "a[" / "x].h5").write_bytes(b"x" * 10)
    (src / "[red]y.h5").write_bytes(b"y" * 10)
    monkeypatch.setenv("DOMAS_STATE_DIR", str(tmp_path / "state"))
    code, shown = on_terminal("copy", src, f"{tmp_path}/out/", cwd=tmp_path)
    assert code == 0, shown
    assert "out/scan/a[/x].h5" in shown and "out/scan/[red]y.h5" in shown and "MarkupError" not in shown
    assert (tmp_path / "out" / "scan" / "a[" / "x].h5").read_bytes() == b"x" * 10


@pytest.mark.parametrize("args", [["copy", "f.dat", ""], ["copy", "", "out/"], ["checksum", ""]])
def test_an_empty_path_is_a_usage_error(tmp_path, args):
    """Was: '' read as the current directory: 'f.dat and f.dat are the same file', 'cannot copy the
    directory ... into itself', ' is a directory'."""
    (tmp_path / "f.dat").write_bytes(b"x")
    line = one_sentence(domas(*args, cwd=tmp_path), 2)
    assert "empty ('')" in line


def test_an_unreachable_mongodb_catalogue_is_one_sentence_without_errno(deployment):
    """Was: 'the catalogue cannot be reached (127.0.0.1:N: [Errno 111] Connection refused)'."""
    (deployment / "domas.toml").write_text(f'data_dir = "data"\n[catalogue]\n'
                                           f'url = "mongodb://127.0.0.1:{free_port()}/domas"\n')
    line = one_sentence(domas("--config", "domas.toml", "catalogue", "find", cwd=deployment), 69)
    assert "the catalogue cannot be reached" in line and "Connection refused" in line


@pytest.mark.parametrize("command", [["serve"], ["up", "--data-dir", "data"]], ids=lambda c: c[0])
def test_a_configured_http_listen_that_is_no_address_names_the_key(deployment, command):
    """Was: `domas up` 'unexpected internal error (OverflowError)', `domas serve` '--listen ...' (a flag
    the user never gave)."""
    (deployment / "domas.toml").write_text('data_dir = "data"\n[controller]\nlisten = "127.0.0.1:0"\n'
                                           'metrics_listen = "127.0.0.1:0"\nhttp_listen = "127.0.0.1:99999"\n'
                                           '[agent]\nmetrics_listen = "127.0.0.1:0"\n')
    line = one_sentence(domas("--config", "domas.toml", *command, cwd=deployment, timeout=30), 78)
    assert line.startswith("domas: controller.http_listen: '127.0.0.1:99999' is not host:port")


def test_permission_denied_is_said_once(tmp_path):
    """Was: 'Permission denied; check the owner and mode of the path: Permission denied (PATH)'."""
    f = tmp_path / "run.h5"
    f.write_bytes(b"x")
    f.chmod(0)
    out = domas("checksum", f, cwd=tmp_path)
    assert out.returncode == 4, out.stderr
    assert out.stderr.strip() == f"domas checksum: Permission denied; check the owner and mode of the path ({f})"


@pytest.mark.parametrize("listen", ["nonsense", "127.0.0.1:99999"])
def test_a_controller_listen_that_is_no_address_says_so(deployment, listen):
    """Was: 'cannot listen on nonsense (another process holds the port, or the address is not local)'."""
    out = domas("--config", "domas.toml", "controller", "--listen", listen, "--metrics-listen", "127.0.0.1:0",
                "--root", deployment, cwd=deployment)
    line = one_sentence(out, 78)
    assert line.startswith(f"domas: controller.listen: {listen!r} is not host:port")


def test_checksum_lists_a_name_with_a_newline_on_one_line_as_sha256sum_does(tmp_path):
    """Was: the raw newline split one file over two lines ('HEX  a' then 'b')."""
    (tmp_path / "a\nb").write_bytes(b"x")
    (tmp_path / "c\\d").write_bytes(b"y")
    (tmp_path / "plain").write_bytes(b"z")
    out = domas("checksum", "a\nb", "c\\d", "plain", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["\\00790079  a\\nb", "\\007a007a  c\\\\d", "007b007b  plain"]


# -- the config file, sizes and URLs every command takes --------------------------------------------

@pytest.mark.parametrize("make, expect", [
    (lambda p: p.mkdir(), "is a directory; give the TOML file in it"),
    (lambda p: p.write_bytes(b"\xff\xfe\x00 not text"), "is not valid TOML: it is not UTF-8 text"),
    (lambda p: (p.write_text('data_dir = "d"\n'), p.chmod(0)), "cannot be read (Permission denied)"),
])
def test_a_config_file_that_cannot_be_read_as_toml_is_one_sentence(tmp_path, make, expect):
    make(tmp_path / "site.toml")
    line = one_sentence(domas("--config", "site.toml", "copy", "a", "b", cwd=tmp_path), 78)
    assert "config file site.toml" in line and expect in line


@pytest.mark.parametrize("args", [["copy", "--chunk-size", "abc", "a", "b"],
                                  ["get", "--chunk-size", "12 furlongs", "--server", "http://127.0.0.1:9", "P", "d"],
                                  ["submit", "--chunk-size", "-1", "a", "b"]])
def test_a_size_flag_that_is_no_size_is_a_usage_error(deployment, args):
    line = one_sentence(domas("--config", "domas.toml", *args, cwd=deployment), 2)
    assert "--chunk-size" in line and ("is not a size" in line or "must be positive" in line)


@pytest.mark.parametrize("server", ["http://[::1", "http://127.0.0.1:99999", "https://host:port"])
def test_a_data_service_url_that_cannot_be_parsed_is_a_usage_error(deployment, server):
    line = one_sentence(domas("--config", "domas.toml", "get", "--server", server, "PID", "d", cwd=deployment), 2)
    assert "not a valid URL" in line
    line = one_sentence(domas("get", f"{server}/x.h5", "d", cwd=deployment), 2)
    assert "not a valid URL" in line


@pytest.mark.parametrize("args", [["copy", "--streams", "0", "a", "b"], ["get", "--streams", "-2", "http://h/x", "d"],
                                  ["agent", "--streams", "0"], ["copy", "--streams", "many", "a", "b"]])
def test_streams_out_of_range_is_a_usage_error_naming_the_flag(deployment, args):
    out = domas("--config", "domas.toml", *args, cwd=deployment, timeout=30)
    assert out.returncode == 2 and "argument --streams:" in out.stderr.splitlines()[-1], out.stderr
    assert not any(t in out.stderr for t in RAW)
