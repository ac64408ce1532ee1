"""A facility's week on a compressed clock: the scenario behind tests/test_operations_week.py (short
form) and benchmarks/bench_operations_week.py (long form).

Everything runs as real processes started from one configuration file, from an empty directory:
`domas controller`, two `domas agent`s and `domas archive` (later the whole `domas up`), a
MongoDB-wire catalogue (secantusd-py) and an XRootD server as the tape tier. Files keep arriving on
three beamlines (plain, NeXus, growing ones, raw/ and processed/) while, one fault per round: the
controller is stopped (SIGTERM) and killed (kill -9), an agent is killed, the catalogue goes down
and comes back, the tape server goes down and comes back, an operator sets an embargo and a PI,
and `domas up` replaces the separate parts and is itself stopped and killed.

At the end (`Week.verdict`): every file is on central and tape with the adler32 of what was
written, the catalogue holds exactly one record per file, the operator's fields are intact, no
beamline copy disappeared before an equal downstream copy existed (a watcher checks at the moment
it disappears), and no log holds a traceback.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from tests.fixtures.common import free_port, port_open, stop_process, wait_until

BEAMLINES = ("B1", "B2", "B3")
MONTH = "202611"


@dataclass
class Figures:
    files: int = 0
    bytes: int = 0
    restarts: int = 0
    faults: list[str] = field(default_factory=list)
    rounds: int = 0
    seconds_total: float = 0.0
    seconds_to_converge: float = 0.0
    beamline_copies_expired: int = 0

    def as_dict(self) -> dict:
        return {"files": self.files, "bytes": self.bytes, "restarts": self.restarts, "faults": self.faults,
                "rounds": self.rounds, "seconds_total": round(self.seconds_total, 1),
                "seconds_to_converge": round(self.seconds_to_converge, 1),
                "beamline_copies_expired": self.beamline_copies_expired}


class Week:
    def __init__(self, tmp: Path, mongo, tape_server, *, files_per_drop: int = 1, beamline_retention: str = "6s"):
        self.tmp, self.mongo, self.xrd = tmp, mongo, tape_server
        self.cwd, self.home, self.logs = tmp / "empty", tmp / "home", tmp / "logs"
        for d in (self.cwd, self.home, self.logs):
            d.mkdir(parents=True, exist_ok=True)
        self.data = tmp / "data"
        self.port = free_port()
        self.files_per_drop = files_per_drop
        tape_dir = self.xrd.data / "tape"
        tape_dir.mkdir(exist_ok=True)
        self.xrd.chown(tape_dir)
        self.tape_url = f"{self.xrd.url}//tape"
        self.config = tmp / "etc" / "domas.toml"
        self.config.parent.mkdir(parents=True, exist_ok=True)
        self.config.write_text(f"""data_dir = "{self.data}"
[storage]
tape = "{self.tape_url}"
[policy]
stability_seconds = 1
rescan_seconds = 2
beamline_retention = "{beamline_retention}"
central_retention = "30d"
[catalogue]
url = "{mongo.url.replace('/?', '/domas_week?')}"
[controller]
listen = "127.0.0.1:{self.port}"
metrics_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
lease_seconds = "3s"
[agent]
controller = "127.0.0.1:{self.port}"
metrics_listen = "127.0.0.1:0"
""")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("DOMAS_", "XDG_"))}
        self.env.update(HOME=str(self.home), DOMAS_TOKEN="week-token")
        self.procs: dict[str, subprocess.Popen] = {}
        self.expected: dict[str, bytes] = {}            # beamline-relative path -> final content
        self.growing: list[threading.Thread] = []
        self.seq = 0
        self.fig = Figures()
        self.t0 = time.monotonic()
        self.violations: list[str] = []
        self._seen_gone: set[str] = set()
        self._stop_watch = threading.Event()
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self.operator: dict = {}

    # -- processes -----------------------------------------------------------------------------
    def start(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "a")
        proc = subprocess.Popen([sys.executable, "-m", "domas.cli", *args, "--config", str(self.config)],
                                cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.procs[name] = proc
        if name in ("controller", "up"):
            wait_until(lambda: port_open(self.port), 60, name, proc)
        return proc

    def start_parts(self) -> None:
        self.start("controller", "controller")
        self.start("dtn01", "agent", "--name", "dtn01")
        self.start("dtn02", "agent", "--name", "dtn02")
        self.start("archive", "archive")
        if not self._watcher.is_alive():
            self._watcher.start()

    def stop(self, name: str) -> None:
        stop_process(self.procs.pop(name), timeout=30)

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        r = subprocess.run([sys.executable, "-m", "domas.cli", *args, "--config", str(self.config)], cwd=self.cwd,
                           env=self.env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"domas {' '.join(args)}: {r.stderr}"
        return r

    def close(self) -> None:
        self._stop_watch.set()
        for t in self.growing:
            t.join(timeout=30)
        for name in list(self.procs):
            self.stop(name)

    # -- files ---------------------------------------------------------------------------------
    def _path(self, beamline: str, area: str, name: str) -> str:
        return f"{beamline}/{MONTH}/Data/BT-{beamline}/{area}/{name}"

    def drop_round(self, *, nexus: bool = False, growing: bool = False, processed: bool = False) -> None:
        """Files on each beamline: plain ones, and a NeXus, a growing and a processed/ one when asked."""
        from tests.test_metadata import write_nexus

        self.fig.rounds += 1
        for bl in BEAMLINES:
            for _ in range(self.files_per_drop):
                self._write(self._path(bl, "raw", f"scan_{self._next():05d}.dat"), os.urandom(20_000 + self.seq))
            if nexus:
                rel = self._path(bl, "raw", f"scan_{self._next():05d}.nxs")
                p = self.data / "beamline" / rel
                p.parent.mkdir(parents=True, exist_ok=True)
                write_nexus(p)
                self._expect(rel, p.read_bytes())
            if processed:
                self._write(self._path(bl, "processed", f"result_{self._next():05d}.dat"), os.urandom(9_000))
            if growing:
                self._grow(self._path(bl, "raw", f"growing_{self._next():05d}.dat"))

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    def _write(self, rel: str, data: bytes) -> None:
        p = self.data / "beamline" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name("." + p.name + ".tmp")          # a detector's writer renames into place
        tmp.write_bytes(data)
        os.replace(tmp, p)
        self._expect(rel, data)

    def _expect(self, rel: str, data: bytes) -> None:
        self.expected[rel] = data
        self.fig.files += 1
        self.fig.bytes += len(data)

    def _grow(self, rel: str) -> None:
        """A file written in pieces, 0.3 s apart (less than the 1 s stability window)."""
        p = self.data / "beamline" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        pieces = [os.urandom(7_000) for _ in range(6)]
        p.write_bytes(pieces[0])
        self._expect(rel, b"".join(pieces))

        def grow() -> None:
            with open(p, "ab") as fh:
                for piece in pieces[1:]:
                    time.sleep(0.3)
                    fh.write(piece)
                    fh.flush()

        t = threading.Thread(target=grow, daemon=True)
        t.start()
        self.growing.append(t)

    def _watch(self) -> None:
        """No beamline copy may disappear before an equal copy exists downstream (central or tape)."""
        while not self._stop_watch.wait(0.1):
            for rel, data in list(self.expected.items()):
                if rel in self._seen_gone or (self.data / "beamline" / rel).exists():
                    continue
                self._seen_gone.add(rel)
                self.fig.beamline_copies_expired += 1
                central = self.data / "central" / rel
                tape = self.xrd.data / "tape" / rel
                if not any(p.exists() and p.read_bytes() == data for p in (central, tape)):
                    self.violations.append(f"beamline copy of {rel} removed before an equal downstream copy")

    # -- faults --------------------------------------------------------------------------------
    def fault(self, what: str) -> None:
        self.fig.faults.append(what)

    def wait_central(self, timeout: float = 120) -> None:
        """Every file dropped so far (growing ones complete) has its central copy."""
        for t in self.growing:
            t.join(timeout=30)

        def arrived() -> bool:
            return all(self._central_ok(rel, data) for rel, data in self.expected.items())

        wait_until(arrived, timeout, "central copies of every file so far")

    def _central_ok(self, rel: str, data: bytes) -> bool:
        p = self.data / "central" / rel
        try:
            return p.stat().st_size == len(data) and p.read_bytes() == data
        except FileNotFoundError:
            return False

    def _tape_ok(self, rel: str, data: bytes) -> bool:
        p = self.xrd.data / "tape" / rel
        try:
            return p.stat().st_size == len(data) and p.read_bytes() == data
        except FileNotFoundError:
            return False

    def find_pid(self, beamline: str, area: str = "raw") -> str:
        found = json.loads(self.cli("catalogue", "find", "--beamtime", f"BT-{beamline}", "--json").stdout)
        (pid,) = [d["pid"] for d in found if d["path"].endswith(f"/{area}")]
        return pid

    # -- the end -------------------------------------------------------------------------------
    def converge(self, timeout: float = 300) -> None:
        t = time.monotonic()
        cat = self.catalogue()
        try:
            def done() -> bool:
                return all(self._tape_ok(rel, d) and self._central_ok(rel, d) for rel, d in self.expected.items()) \
                    and self._all_verified(cat)
            wait_until(done, timeout, "every file verified on central and tape")
        finally:
            cat.close()
        self.fig.seconds_to_converge = time.monotonic() - t

    def catalogue(self):
        from domas.catalogue.mongo import MongoCatalogue

        return MongoCatalogue(self.mongo.url, database="domas_week")

    def records(self, cat) -> dict[str, list]:
        out: dict[str, list] = {}
        for bl in BEAMLINES:
            for ds in cat.find_datasets(beamtime=f"BT-{bl}"):
                for f in cat.files_of(ds.pid):
                    out.setdefault(f"{ds.path.strip('/')}/{f.path}", []).append(f)
        return out

    def _all_verified(self, cat) -> bool:
        recs = self.records(cat)
        return all(rel in recs and all(r.replicas.get(t) and r.replicas[t].state == "verified"
                                       for r in recs[rel] for t in ("central", "tape")) for rel in self.expected)

    def verdict(self) -> list[str]:
        """Every problem found (empty: the week was survived)."""
        problems = list(self.violations)
        cat = self.catalogue()
        try:
            recs = self.records(cat)
            for rel, data in self.expected.items():
                adler = f"{zlib.adler32(data):08x}"
                got = recs.get(rel, [])
                if len(got) != 1:
                    problems.append(f"{rel}: {len(got)} catalogue records")
                    continue
                if got[0].adler32 != adler:
                    problems.append(f"{rel}: catalogue adler32 {got[0].adler32}, written {adler}")
                for tier, ok in (("central", self._central_ok), ("tape", self._tape_ok)):
                    if not ok(rel, data):
                        problems.append(f"{rel}: the {tier} copy is missing or differs")
            extra = set(recs) - set(self.expected)
            problems += [f"{rel}: catalogued but never written" for rel in sorted(extra)]
            for pid, (state, end) in self.operator.get("embargo", {}).items():
                ds = cat.get_dataset(pid)
                if (ds.state, ds.embargo_end) != (state, end):
                    problems.append(f"embargo of {pid} is {ds.state}/{ds.embargo_end}, the operator set {state}/{end}")
            for bt, pi in self.operator.get("pi", {}).items():
                got_pi = cat.get_beamtime(bt).pi
                if got_pi != pi:
                    problems.append(f"PI of {bt} is {got_pi!r}, the operator set {pi!r}")
        finally:
            cat.close()
        for log in sorted(self.logs.iterdir()):
            if "Traceback" in log.read_text(errors="replace"):
                problems.append(f"traceback in {log.name}")
        self.fig.seconds_total = time.monotonic() - self.t0
        return problems


def run_week(tmp: Path, mongo_factory, tape_server, *, rounds: int = 1, files_per_drop: int = 1) -> Week:
    """The scenario; `rounds` repeats the whole cycle of faults (1 = short form). Returns the Week
    (call `verdict()`); the caller closes it."""
    mongo = mongo_factory()
    w = Week(tmp, mongo, tape_server, files_per_drop=files_per_drop)
    w.start_parts()
    w.fig.restarts += 4
    for r in range(rounds):
        w.drop_round(nexus=r == 0, growing=True)
        w.wait_central()

        w.stop("controller")
        w.start("controller", "controller")
        w.fault("controller stopped (SIGTERM) and started")
        w.fig.restarts += 1
        w.drop_round(processed=r == 0)
        w.wait_central()

        w.kill("controller")
        w.start("controller", "controller")
        w.fault("controller killed (kill -9) and started")
        w.fig.restarts += 1
        w.drop_round(growing=True)
        w.wait_central()

        w.kill("dtn01")
        w.fault("agent dtn01 killed (kill -9)")
        w.drop_round()
        w.wait_central()
        w.start("dtn01", "agent", "--name", "dtn01")
        w.fig.restarts += 1

        mongo.stop()
        w.fault("catalogue (MongoDB-wire) down, then back")
        w.drop_round()
        w.wait_central()
        mongo.start()

        w.xrd.stop()
        w.fault("tape tier (XRootD) down, then back")
        w.drop_round(growing=True)
        w.wait_central()
        w.xrd.start()

        if r == 0:
            pid = w.find_pid("B1")
            w.cli("catalogue", "embargo", pid, "--until", "2031-06-01", "--by", "operator")
            w.cli("catalogue", "beamtime", "set", "BT-B2", "--pi", "Ada Lovelace", "--team", "Grace,Linus",
                  "--by", "operator")
            w.operator = {"embargo": {pid: ("embargoed", 1938038400.0)}, "pi": {"BT-B2": "Ada Lovelace"}}
            w.fault("operator set an embargo and a PI")
            w.drop_round(nexus=True, processed=True)      # new NeXus in the embargoed dataset, new dataset
            w.wait_central()

    for name in ("archive", "dtn01", "dtn02", "controller"):
        w.stop(name)
    w.start("up", "up")
    w.fault("everything replaced by `domas up` on the same state")
    w.fig.restarts += 1
    w.drop_round(growing=True)
    w.wait_central()
    w.kill("up")
    w.start("up", "up")
    w.fault("`domas up` killed (kill -9) and started")
    w.fig.restarts += 1
    w.drop_round()
    w.converge()
    return w
