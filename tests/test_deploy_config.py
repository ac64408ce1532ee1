"""Deployments from a configuration file, as an operator starts them: `domas up --config FILE`
(the option after the subcommand, as the README shows) run as a process from an empty directory.

Nothing may be written to the current directory or to the per-user state dir (HOME points at an
empty directory here), two deployments on one host keep separate state, and the banner and the
written domas.toml show the address the data service really listens on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.fixtures.common import stop_process, wait_until

RAW = "B1/202611/Data/BT0001/raw"


def _config(path: Path, http_host: str = "127.0.0.1", **top: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f'{k} = "{v}"' for k, v in top.items()]
    path.write_text("\n".join(lines) + f"""
[policy]
stability_seconds = 1
[controller]
listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
http_listen = "{http_host}:0"
[agent]
metrics_listen = "127.0.0.1:0"
""")
    return path


def _env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOMAS_")}
    env.update(HOME=str(home), XDG_STATE_HOME="", DOMAS_TOKEN="s3cret")
    env.pop("XDG_STATE_HOME")
    return env


class Deployment:
    def __init__(self, cwd: Path, home: Path, config: Path, instance: Path) -> None:
        self.log_path = config.parent / "up.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "domas.cli", "up", "--config", str(config)],
                                     cwd=cwd, env=_env(home), stdout=self.log, stderr=subprocess.STDOUT)
        self.instance = instance
        wait_until(lambda: instance.exists() and "Stop with" in self.log_path.read_text(), 60, "domas up", self.proc)
        self.cfg = tomllib.loads(instance.read_text())

    def stop(self) -> None:
        stop_process(self.proc, timeout=30)
        self.log.close()


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_up_with_config_after_the_subcommand_from_an_empty_directory(tmp_path):
    cwd, home = tmp_path / "empty", tmp_path / "home"
    cwd.mkdir()
    home.mkdir()
    a = _config(tmp_path / "etc-a" / "domas.toml", http_host="127.0.0.2", data_dir="a-data")  # relative: to the file
    b = _config(tmp_path / "etc-b" / "domas.toml", data_dir=str(tmp_path / "b-data"))
    da = Deployment(cwd, home, a, tmp_path / "etc-a" / "a-data" / "domas.toml")
    db = None
    try:
        db = Deployment(cwd, home, b, tmp_path / "b-data" / "domas.toml")
        http = da.cfg["controller"]["http_listen"]
        assert http.startswith("127.0.0.2:") and not http.endswith(":0")
        assert f"http://{http}/" in da.log_path.read_text()
        assert da.cfg["state_dir"] == str(tmp_path / "etc-a" / "a-data" / "state")
        assert db.cfg["state_dir"] == str(tmp_path / "b-data" / "state")
        data = {"a": os.urandom(70_000), "b": os.urandom(80_000)}
        for name, d in (("a", tmp_path / "etc-a" / "a-data"), ("b", tmp_path / "b-data")):
            (d / "beamline" / RAW).mkdir(parents=True)
            (d / "beamline" / RAW / f"{name}.h5").write_bytes(data[name])
        wait_until(lambda: (tmp_path / "etc-a/a-data/central" / RAW / "a.h5").exists()
                   and (tmp_path / "b-data/central" / RAW / "b.h5").exists(), 60, "central copies")
        assert (tmp_path / "etc-a/a-data/central" / RAW / "a.h5").read_bytes() == data["a"]
        assert not (tmp_path / "b-data/central" / RAW / "a.h5").exists()
        for cfg, mine, other in ((da.instance, "a.h5", "b.h5"), (db.instance, "b.h5", "a.h5")):
            found = subprocess.run([sys.executable, "-m", "domas.cli", "catalogue", "find", "--json",
                                    "--config", str(cfg)], cwd=cwd, env=_env(home), capture_output=True,
                                   text=True, timeout=60)
            assert found.returncode == 0, found.stderr
            assert len(json.loads(found.stdout)) == 1
        assert _tree(cwd) == [] and _tree(home) == [], "nothing in the cwd or the per-user state dir"
    finally:
        da.stop()
        if db:
            db.stop()
    assert "Traceback" not in da.log_path.read_text()


def test_config_before_the_subcommand_and_a_config_without_places(tmp_path):
    cwd, home = tmp_path / "empty", tmp_path / "home"
    cwd.mkdir()
    home.mkdir()
    bare = _config(tmp_path / "etc" / "domas.toml")
    for args in (["--config", str(bare), "up"], ["up", "--config", str(bare)],
                 ["controller", "--config", str(bare), "--root", str(tmp_path)]):
        r = subprocess.run([sys.executable, "-m", "domas.cli", *args], cwd=cwd, env=_env(home),
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 78, r.stderr
        (line,) = r.stderr.strip().splitlines()
        assert line.startswith("domas: storage.beamline: ") or line.startswith("domas: data_dir: "), line
    assert _tree(cwd) == [] and _tree(home) == []


def test_up_with_tls_copies_over_tls_and_the_cli_follows(tmp_path):
    """controller.tls_cert set: the agent and the archiver inside `domas up` reach the controller
    over TLS with the CA (here the self-signed certificate itself), so files are still copied; a
    plaintext client is refused, and the written domas.toml gives other commands the CA."""
    import grpc

    from domas.v1 import domas_pb2 as pb
    from domas.v1 import domas_pb2_grpc as pb_grpc

    cwd, home = tmp_path / "empty", tmp_path / "home"
    cwd.mkdir()
    home.mkdir()
    etc = tmp_path / "etc"
    etc.mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(etc / "key.pem"),
                    "-out", str(etc / "cert.pem")], check=True, capture_output=True, timeout=60)
    cfg = _config(etc / "domas.toml", data_dir=str(tmp_path / "d"))
    cfg.write_text(cfg.read_text().replace("[controller]\n", f'[controller]\ntls_cert = "{etc / "cert.pem"}"\n'
                                                            f'tls_key = "{etc / "key.pem"}"\n'))
    dep = Deployment(cwd, home, cfg, tmp_path / "d" / "domas.toml")
    try:
        assert dep.cfg["agent"]["tls_ca"] == str(etc / "cert.pem")
        assert "(TLS)" in dep.log_path.read_text()
        (tmp_path / "d/beamline" / RAW).mkdir(parents=True)
        data = os.urandom(90_000)
        (tmp_path / "d/beamline" / RAW / "t.h5").write_bytes(data)
        wait_until(lambda: (tmp_path / "d/central" / RAW / "t.h5").exists(), 60, "central copy over TLS", dep.proc)
        assert (tmp_path / "d/central" / RAW / "t.h5").read_bytes() == data
        st = subprocess.run([sys.executable, "-m", "domas.cli", "status", "--config", str(dep.instance)], cwd=cwd,
                            env=_env(home), capture_output=True, text=True, timeout=60)
        assert st.returncode == 0 and " done " in st.stdout, st.stdout + st.stderr
        with grpc.insecure_channel(dep.cfg["agent"]["controller"]) as channel:
            try:
                pb_grpc.ControllerStub(channel).ListTransfers(pb.ListTransfersRequest(), timeout=5)
                raise AssertionError("a plaintext client was served")
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        dep.stop()
    assert "Traceback" not in dep.log_path.read_text()


def test_each_part_runs_alone_from_one_config(tmp_path):
    """One service per host: `domas controller`, `domas agent` and `domas archive` as separate
    processes from the same config file; a file dropped is archived to central and tape; the
    archiver killed (kill -9) and started again takes the next file."""
    import signal as sig

    from tests.fixtures.common import free_port, port_open

    cwd, home = tmp_path / "empty", tmp_path / "home"
    cwd.mkdir()
    home.mkdir()
    port = free_port()
    cfg = _config(tmp_path / "etc" / "domas.toml", data_dir=str(tmp_path / "d"))
    cfg.write_text(cfg.read_text().replace('\nlisten = "127.0.0.1:0"', f'\nlisten = "127.0.0.1:{port}"')
                   .replace("[agent]\n", f'[agent]\ncontroller = "127.0.0.1:{port}"\n'))
    logs = tmp_path / "logs"
    logs.mkdir()

    def start(*args: str) -> subprocess.Popen:
        log = open(logs / f"{args[0]}.log", "a")
        return subprocess.Popen([sys.executable, "-m", "domas.cli", *args, "--config", str(cfg)], cwd=cwd,
                                env=_env(home), stdout=log, stderr=subprocess.STDOUT)

    for tier in ("beamline", "central", "tape"):
        (tmp_path / "d" / tier).mkdir(parents=True)
    procs = [start("controller")]
    wait_until(lambda: port_open(port), 30, "controller", procs[0])
    procs += [start("agent", "--name", "dtn01", "--metrics-listen", "127.0.0.1:0"), start("archive")]
    try:
        for n in range(2):
            rel = f"{RAW}/f{n}.h5"
            data = os.urandom(60_000 + n)
            (tmp_path / "d/beamline" / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / "d/beamline" / rel).write_bytes(data)
            wait_until(lambda: (tmp_path / "d/tape" / rel).exists(), 60, f"tape copy {n}", procs[2])
            assert (tmp_path / "d/tape" / rel).read_bytes() == data
            if n == 0:
                os.kill(procs[2].pid, sig.SIGKILL)
                procs[2].wait(timeout=10)
                procs[2] = start("archive")
    finally:
        for p in procs:
            stop_process(p)
    text = "".join(p.read_text() for p in logs.iterdir())
    assert "Traceback" not in text, text[-3000:]
    assert _tree(cwd) == [] and _tree(home) == []


def test_up_starts_with_the_tape_tier_unreachable_and_central_copies_go_on(tmp_path):
    """A tier down when the system starts degrades it (logged, retried), never stops it: the old
    `domas up` died creating the tape root."""
    from tests.fixtures.common import free_port

    cwd, home = tmp_path / "empty", tmp_path / "home"
    cwd.mkdir()
    home.mkdir()
    cfg = _config(tmp_path / "etc" / "domas.toml", data_dir=str(tmp_path / "d"))
    cfg.write_text(cfg.read_text().replace("[policy]\n", f'[storage]\ntape = "root://127.0.0.1:{free_port()}//tape"\n'
                                                         "[policy]\n"))
    dep = Deployment(cwd, home, cfg, tmp_path / "d" / "domas.toml")
    try:
        (tmp_path / "d/beamline" / RAW).mkdir(parents=True)
        data = os.urandom(40_000)
        (tmp_path / "d/beamline" / RAW / "x.h5").write_bytes(data)
        wait_until(lambda: (tmp_path / "d/central" / RAW / "x.h5").exists(), 60, "central copy", dep.proc)
        assert (tmp_path / "d/central" / RAW / "x.h5").read_bytes() == data
        assert "storage.tape (root://127.0.0.1:" in dep.log_path.read_text()
    finally:
        dep.stop()
    assert "Traceback" not in dep.log_path.read_text()


def test_an_unreadable_certificate_is_one_sentence_naming_its_key(tmp_path):
    cwd, home = tmp_path / "empty", tmp_path / "home"
    cwd.mkdir()
    home.mkdir()
    cfg = _config(tmp_path / "etc" / "domas.toml", data_dir=str(tmp_path / "d"))
    text = cfg.read_text()
    cases = [("up", "[controller]\n", '[controller]\ntls_cert = "/nonexistent/cert.pem"\ntls_key = "/nonexistent/k"\n',
              "controller.tls_key: cannot read /nonexistent/k"),
             ("status", "[agent]\n", '[agent]\ntls_ca = "/nonexistent/ca.pem"\n',
              "agent.tls_ca: cannot read /nonexistent/ca.pem")]
    for command, anchor, new, sentence in cases:
        cfg.write_text(text.replace(anchor, new))
        r = subprocess.run([sys.executable, "-m", "domas.cli", command, "--config", str(cfg)], cwd=cwd, env=_env(home),
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 78, r.stderr
        (line,) = r.stderr.strip().splitlines()
        assert sentence in line, r.stderr
