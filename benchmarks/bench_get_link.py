"""`domas get` over a shaped link, side by side with curl, aria2c -x4 and iperf3 (issue 11).

Run as root (network namespaces, tc):  python benchmarks/bench_get_link.py

What it builds:
- a network namespace holding the server side, joined to this namespace by a veth pair (10.77.0.1
  here, 10.77.0.2 there); both ends shaped with `tc qdisc ... tbf` to each rate in turn (netem is not
  available on this kernel, tbf is);
- in the namespace: `domas serve` over a SQLite catalogue with two datasets on its central tier
  ("large": one 1 GiB file and three of 32 MiB; "small": 256 MiB and three of 8 MiB), and `iperf3 -s`;
- here: the clients, run one after another, the order rotated every repetition:
  `domas get PID DEST` (default streams: 16, and `domas-sN` for --streams N), `curl` with every file's content URL in
  one process, `aria2c -x4 -s4` with the same URLs, and `iperf3 -c -R` (server to client, the
  direction the downloads use).
- `domas` is this checkout as installed here (editable; its modules byte-compiled first, as
  scripts/install does), started by this interpreter, whose site-packages runs .pth hooks at
  every start (the editable finder, and on this machine a CA hook of the sandbox). `domas-venv` is
  the same code as a scientist installs it: `pip install` of the checkout into a fresh venv
  (built once per run under --work), whose interpreter starts without those hooks.

Goodput of a download = bytes of the dataset / wall time of the client process, start to exit
(startup, listing and verification included). iperf3's goodput is its receiver figure. Peak RSS of
each client is GNU time's %M (its ru_maxrss). Servers listen only on the veth
address; they are stopped by PID and the namespace and veth are removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import GiB, MiB, first_line, load, machine_info, median, write_random_file  # noqa: E402

NS = f"domasbench{os.getpid()}"
HOST_IF, NS_IF = f"dbh{os.getpid() % 100000}", f"dbn{os.getpid() % 100000}"
HOST_IP, NS_IP = "10.77.0.1", "10.77.0.2"
HTTP_PORT, IPERF_PORT = 8400, 5201
DATASETS = {"large": [("big.bin", 1 * GiB)] + [(f"part{i}.h5", 32 * MiB) for i in range(3)],
            "small": [("big.bin", 256 * MiB)] + [(f"part{i}.h5", 8 * MiB) for i in range(3)]}


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


# -- the link -----------------------------------------------------------------------------------
def link_up() -> None:
    sh("ip", "netns", "add", NS)
    sh("ip", "netns", "exec", NS, "ip", "link", "set", "lo", "up")
    sh("ip", "link", "add", HOST_IF, "type", "veth", "peer", "name", NS_IF, "netns", NS)
    sh("ip", "addr", "add", f"{HOST_IP}/30", "dev", HOST_IF)
    sh("ip", "link", "set", HOST_IF, "up")
    sh("ip", "netns", "exec", NS, "ip", "addr", "add", f"{NS_IP}/30", "dev", NS_IF)
    sh("ip", "netns", "exec", NS, "ip", "link", "set", NS_IF, "up")


def shape(rate_mbit: int) -> str:
    """tbf on both ends of the veth (data leaves the namespace's end, ACKs this one)."""
    burst = max(64 * 1024, rate_mbit * 1_000_000 // 8 // 250)        # >= one 4 ms tick of the rate
    spec = ["root", "tbf", "rate", f"{rate_mbit}mbit", "burst", str(burst), "latency", "20ms"]
    sh("tc", "qdisc", "replace", "dev", HOST_IF, *spec)
    sh("ip", "netns", "exec", NS, "tc", "qdisc", "replace", "dev", NS_IF, *spec)
    return " ".join(spec[1:])


def link_down() -> None:
    sh("ip", "link", "del", HOST_IF, check=False)
    sh("ip", "netns", "del", NS, check=False)


# -- the data service ---------------------------------------------------------------------------
def build_catalogue(work: Path) -> dict[str, dict]:
    """Both datasets on the central tier, catalogued with their adler32: {name: {pid, files, bytes}}."""
    from domas.catalogue import Beamtime, Dataset, FileRecord, Proposal, Replica
    from domas.catalogue.sqlite import SQLiteCatalogue

    central = work / "central"
    cat = SQLiteCatalogue(work / "catalogue.sqlite")
    now = time.time()
    cat.upsert_proposal(Proposal("P-BENCH", "Link benchmark", "Ada Lovelace"))
    cat.upsert_beamtime(Beamtime("2026-0001", "B1", "P-BENCH", "Ada Lovelace", start=now - 86400, end=now - 3600))
    out = {}
    for name, files in DATASETS.items():
        dpath = f"/B1/202611/Data/2026-0001/{name}"
        ds = cat.upsert_dataset(Dataset(beamtime="2026-0001", path=dpath, metadata={"title": f"link bench {name}"},
                                        created_at=now - 7200))
        records = []
        for rel, size in files:
            p = central / dpath.lstrip("/") / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            write_random_file(p, size)
            s = 1
            with open(p, "rb") as fh:
                while block := fh.read(16 * MiB):
                    s = zlib.adler32(block, s)
            records.append(FileRecord(ds.pid, rel, size, f"{s:08x}", mtime=p.stat().st_mtime,
                                      replicas={"central": Replica("verified", verified_at=now)}))
        cat.upsert_files(records)
        out[name] = {"pid": ds.pid, "files": [rel for rel, _ in files], "bytes": sum(s for _, s in files)}
    cat.close()
    (work / "domas.toml").write_text(f'state_dir = "{work / "state"}"\n[storage]\ncentral = "{central}"\n'
                                     f'[catalogue]\nurl = "sqlite:///{work / "catalogue.sqlite"}"\n')
    return out


def wait_port(port: int, what: str, timeout: float = 30.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((NS_IP, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {NS_IP}:{port} within {timeout} s")


def start_servers(work: Path) -> list[subprocess.Popen]:
    log = open(work / "servers.log", "ab")
    serve = subprocess.Popen(["ip", "netns", "exec", NS, sys.executable, "-m", "domas.cli", "--config",
                              str(work / "domas.toml"), "serve", "--listen", f"{NS_IP}:{HTTP_PORT}"],
                             stdout=log, stderr=log, start_new_session=True)
    iperf = subprocess.Popen(["ip", "netns", "exec", NS, "iperf3", "-s", "-B", NS_IP, "-p", str(IPERF_PORT)],
                             stdout=log, stderr=log, start_new_session=True)
    wait_port(HTTP_PORT, "domas serve")
    wait_port(IPERF_PORT, "iperf3 -s")
    return [serve, iperf]


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)        # its own session: the netns exec and its child only
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


# -- the clients --------------------------------------------------------------------------------
def run_client(cmd: list[str]) -> tuple[float, int, str, float]:
    """(wall seconds, peak RSS in bytes, stdout, CPU seconds user + system) of one client process,
    which must exit 0. The peak RSS is GNU time's %M for that process (ru_maxrss of a child forked
    from this Python process would start at this process's own RSS)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r") as rss:
        start = time.perf_counter()
        proc = subprocess.run(["/usr/bin/time", "-f", "%M %U %S", "-o", rss.name, *cmd], stdout=out, stderr=err)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {err.read().decode(errors='replace')[-800:]}")
        text = out.read().decode(errors="replace")
        peak_kib, user, system = rss.read().split()[-3:]
    return wall, int(peak_kib) * 1024, text, float(user) + float(system)


def retransmitted() -> int:
    """TCP segments retransmitted so far in the server's namespace (the sending side)."""
    snmp = subprocess.run(["ip", "netns", "exec", NS, "cat", "/proc/net/snmp"], capture_output=True, text=True,
                          check=True).stdout.splitlines()
    names, values = [line.split() for line in snmp if line.startswith("Tcp:")][:2]
    return int(values[names.index("RetransSegs")])


def content_urls(ds: dict) -> list[str]:
    from urllib.parse import quote

    base = f"http://{NS_IP}:{HTTP_PORT}/api/v1/datasets/{quote(ds['pid'], safe=':/')}/files"
    return [f"{base}/{quote(rel)}/content" for rel in ds["files"]]


REPO = Path(__file__).resolve().parent.parent
PACKAGE_DIRS = ("src", "agent", "archive", "catalogue", "controller", "dataservice", "ext", "proto", "transfer")


def compile_checkout() -> None:
    """Byte-compile the checkout, as scripts/install does (an editable install is not compiled by pip,
    and PYTHONDONTWRITEBYTECODE would make every client start compile its modules again)."""
    sh(sys.executable, "-m", "compileall", "-q", "-j", "0", *(str(REPO / d) for d in PACKAGE_DIRS))


def build_venv(work: Path) -> Path:
    """A fresh venv holding this checkout's files installed by pip (not editable): its python.
    `work` is a temporary directory outside the checkout (a copy of tests/ inside it would be collected)."""
    src, venv = work / "src", work / "venv"
    files = sh("git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard").stdout.split()
    for rel in files:
        if (REPO / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel)
    sh(sys.executable, "-m", "venv", str(venv))
    sh(str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(src))
    return venv / "bin" / "python"


CLIENT_PYTHON = {"domas": sys.executable}


def client_cmd(tool: str, ds: dict, dest: Path, iperf_seconds: int) -> list[str]:
    if tool.startswith("domas"):
        python = CLIENT_PYTHON["domas-venv" if tool == "domas-venv" else "domas"]
        cmd = [python, "-m", "domas.cli", "get", "--server", f"http://{NS_IP}:{HTTP_PORT}", ds["pid"],
               str(dest), "--json", "--no-resume"]
        return cmd + (["--streams", tool.removeprefix("domas-s")] if tool.startswith("domas-s") else [])
    if tool == "curl":
        cmd = ["curl", "-sS", "--fail"]
        for rel, url in zip(ds["files"], content_urls(ds)):
            cmd += ["-o", str(dest / rel), url]
        return cmd
    if tool == "aria2c-x4":
        listing = dest.parent / "aria2.list"
        listing.write_text("".join(f"{url}\n  out={rel}\n" for rel, url in zip(ds["files"], content_urls(ds))))
        return ["aria2c", "-x4", "-s4", "-j1", "-d", str(dest), "-i", str(listing), "--file-allocation=none",
                "--allow-overwrite=true", "--auto-file-renaming=false", "--console-log-level=warn",
                "--summary-interval=0", "--download-result=hide", "-q"]
    if tool == "iperf3":
        return ["iperf3", "-c", NS_IP, "-p", str(IPERF_PORT), "-R", "-t", str(iperf_seconds), "-J"]
    raise ValueError(tool)


def one_run(tool: str, ds: dict, scratch: Path, iperf_seconds: int) -> dict:
    dest = scratch / "dest"
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    retrans = retransmitted()
    wall, rss, out, cpu = run_client(client_cmd(tool, ds, dest, iperf_seconds))
    row = {"tool": tool, "wall_s": wall, "peak_rss": rss, "cpu_s": cpu, "retrans": retransmitted() - retrans}
    if tool == "iperf3":
        doc = json.loads(out)
        row["goodput_bps"] = doc["end"]["sum_received"]["bits_per_second"]
        row["bytes"] = doc["end"]["sum_received"]["bytes"]
    else:
        got = sum((dest / rel).stat().st_size for rel in ds["files"])
        if got != ds["bytes"]:
            raise RuntimeError(f"{tool} left {got} bytes where the dataset has {ds['bytes']}")
        row["bytes"] = got
        row["goodput_bps"] = got * 8 / wall
        if tool.startswith("domas"):
            t = json.loads(out)["totals"]
            row["domas_seconds"] = t["seconds"]
            row["verified"] = t.get("verified")
    shutil.rmtree(dest, ignore_errors=True)
    os.sync()
    return row


# -- the report ---------------------------------------------------------------------------------
def summarise(rows: list[dict], rate_mbit: int) -> dict[str, dict]:
    out = {}
    for tool in dict.fromkeys(r["tool"] for r in rows):
        mine = [r for r in rows if r["tool"] == tool]
        out[tool] = {"goodput": median([r["goodput_bps"] for r in mine]),
                     "all": [r["goodput_bps"] for r in mine],
                     "rss": max(r["peak_rss"] for r in mine),
                     "wall": median([r["wall_s"] for r in mine]),
                     "cpu_gib": median([r["cpu_s"] / (r["bytes"] / GiB) for r in mine]),
                     "retrans": median([r["retrans"] for r in mine]),
                     "domas_s": median([r["domas_seconds"] for r in mine]) if "domas_seconds" in mine[0] else None}
    return out


def table(summary: dict[str, dict], rate_mbit: int) -> list[str]:
    iperf, curl = summary["iperf3"]["goodput"], summary["curl"]["goodput"]
    lines = ["| client | goodput, median (Mbit/s) | % of link | × iperf3 | × curl | runs (Mbit/s) | "
             "peak RSS | wall, median | client CPU s/GiB | TCP retransmits |", "|---|---|---|---|---|---|---|---|---|---|"]
    for tool, s in summary.items():
        runs = ", ".join(f"{x / 1e6:.0f}" for x in s["all"])
        extra = f" (own timer {s['domas_s']:.2f} s)" if s["domas_s"] else ""
        lines.append(f"| `{tool}` | {s['goodput'] / 1e6:.1f} | {100 * s['goodput'] / (rate_mbit * 1e6):.1f} % | "
                     f"{s['goodput'] / iperf:.3f} | {s['goodput'] / curl:.3f} | {runs} | "
                     f"{s['rss'] / MiB:.1f} MiB | {s['wall']:.2f} s{extra} | {s['cpu_gib']:.2f} | {s['retrans']:.0f} |")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="1000:large,100:small",
                    help="RATE_MBIT:DATASET pairs (datasets: large = 1 GiB + 3 x 32 MiB, small = 256 MiB + 3 x 8 MiB)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--tools", default="domas,domas-s8,curl,aria2c-x4,iperf3")
    ap.add_argument("--work", default=str(Path(__file__).resolve().parent / "work" / "get_link"))
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "get_link.md"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_get_link.py needs root (ip netns, tc)", file=sys.stderr)
        return 2
    for tool in ("iperf3", "curl", "aria2c", "tc", "ip", "/usr/bin/time"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (apt-get install -y iperf3 aria2 curl iproute2)", file=sys.stderr)
            return 2
    tools = args.tools.split(",")
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    info = machine_info(work)
    compile_checkout()
    venv_dir = tempfile.mkdtemp(prefix="domas-bench-venv-")
    if "domas-venv" in tools:
        print("installing the checkout into a venv ...", flush=True)
        CLIENT_PYTHON["domas-venv"] = str(build_venv(Path(venv_dir)))
    print("building the datasets ...", flush=True)
    datasets = build_catalogue(work)
    procs: list[subprocess.Popen] = []
    results = []
    try:
        link_up()
        procs = start_servers(work)
        for pair in args.rates.split(","):
            rate_s, ds_name = pair.split(":")
            rate, ds = int(rate_s), datasets[ds_name]
            spec = shape(rate)
            iperf_seconds = max(5, round(ds["bytes"] * 8 / (rate * 1e6)))
            for url in content_urls(ds):             # the server reads each file back once (cached 300 s)
                run_client(["curl", "-sSfI", "-o", "/dev/null", url])
            rows = []
            for rep in range(args.reps):
                order = tools[rep % len(tools):] + tools[:rep % len(tools)]
                for tool in order:
                    row = one_run(tool, ds, work / "scratch", iperf_seconds)
                    row["rep"] = rep
                    rows.append(row)
                    print(f"{rate} Mbit/s rep {rep} {tool:10s} {row['goodput_bps'] / 1e6:7.1f} Mbit/s "
                          f"rss {row['peak_rss'] / MiB:7.1f} MiB wall {row['wall_s']:.2f} s cpu {row['cpu_s']:.2f} s "
                          f"retrans {row['retrans']}  ({load()})", flush=True)
            results.append((rate, ds_name, ds, spec, iperf_seconds, rows))
    finally:
        stop(procs)
        link_down()
        shutil.rmtree(venv_dir, ignore_errors=True)
    write_report(args, info, tools, results)
    return 0


def write_report(args, info: dict, tools: list[str], results: list) -> None:
    lines = ["# `domas get` over a shaped link (issue 11)", "",
             f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: `python benchmarks/bench_get_link.py "
             f"--rates {args.rates} --reps {args.reps} --tools {args.tools}` (root).", "",
             "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()) + ".",
             f"Tools: {first_line(['curl', '--version'])}; {first_line(['aria2c', '--version'])}; "
             f"{first_line(['iperf3', '--version'])}.", "",
             "Server side in a network namespace (`domas serve` over SQLite, files on its central tier (page-cached "
             "only if the machine keeps them: check with `fincore`); "
             "`iperf3 -s`), client side here, joined by a veth pair shaped with tbf on both ends. Goodput of a "
             "download = dataset bytes / wall time of the client process from start to exit (Python start-up, "
             "listing, HEADs and every check included); iperf3's is its receiver figure for `-c -R -t N` "
             "(one TCP stream, server to client). Tools alternate, the order rotated each repetition. Peak RSS is "
             "the client process's ru_maxrss (GNU time %M). `domas` uses the default streams (16; before ed3b44a "
             "4 per core, 8 here), `domas-sN` `--streams N`; all with the default 1 MiB chunks and --no-resume. `domas` runs this "
             "checkout as installed here (editable, byte-compiled, this interpreter with its site-packages' .pth "
             "hooks); `domas-venv` the same files pip-installed into a fresh venv, as a scientist installs the "
             "client.", ""]
    for rate, ds_name, ds, spec, iperf_seconds, rows in results:
        s = summarise(rows, rate)
        lines += [f"## {rate} Mbit/s (`tc qdisc ... {spec}`), dataset `{ds_name}`: {len(ds['files'])} files, "
                  f"{ds['bytes'] / MiB:.0f} MiB; iperf3 for {iperf_seconds} s", ""]
        lines += table(s, rate) + [""]
        for tool in tools:
            if tool.startswith("domas"):
                lines.append(f"- `{tool}` / iperf3: **{s[tool]['goodput'] / s['iperf3']['goodput']:.3f}** "
                             f"(goal ≥ 0.99), / curl: **{s[tool]['goodput'] / s['curl']['goodput']:.3f}** (goal ≥ 1)")
        lines.append("")
    lines += ["Raw rows (JSON):", "", "```"]
    for rate, _n, _ds, _spec, _t, rows in results:
        for r in rows:
            lines.append(json.dumps({"rate_mbit": rate, **r}))
    lines += ["```", ""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
