"""Fault-hunt soak (issue 8): a 5 000-file burst through a real controller and 2 agents, the
controller killed -9 at ~500 files done and restarted, an agent killed -9 five times and restarted.

Checks: the transfer ends `done`; every destination file is byte-equal to its source (adler32 and
size); no extra or doubled files; no part file left after the janitor's time (listed if any); no
"Traceback" in any log. Writes benchmarks/results/hunt.md.

    python3 benchmarks/soak_hunt.py [--files 5000] [--big 3] [--lease 3] [--out benchmarks/results/hunt.md]

Processes are started and stopped by PID (tests/fixtures/controller.py helpers).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fixtures.common import free_port, stop_process, wait_until  # noqa: E402
from tests.fixtures.controller import _agent, _cli, _controller, _env  # noqa: E402

from domas.transfer.parts import is_part_name  # noqa: E402

MiB = 1 << 20
ENDED = ("done", "failed", "cancelled")


def make_source(root: Path, n: int, big: int, seed: int = 8) -> dict[str, tuple[int, int]]:
    """n small files (4-64 KiB random) in 50 directories plus `big` 8 MiB files: rel -> (size, adler32)."""
    rng = random.Random(seed)
    out = {}
    for i in range(n):
        rel = f"d{i % 50:02d}/f{i:05d}.bin"
        data = os.urandom(rng.randint(4 << 10, 64 << 10))
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        out[rel] = (len(data), zlib.adler32(data))
    for i in range(big):
        rel = f"big/b{i}.bin"
        data = os.urandom(8 * MiB)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        out[rel] = (len(data), zlib.adler32(data))
    return out


def status(tmp: Path, port: int, tid: str) -> dict | None:
    out = _cli(tmp, "status", tid, "--json", "--controller", f"127.0.0.1:{port}", timeout=30)
    if out.returncode != 0:
        return None
    return json.loads(out.stdout)


def kill9(proc) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--big", type=int, default=3)
    ap.add_argument("--lease", type=float, default=3.0, help="controller.lease_seconds (also the janitor's max age)")
    ap.add_argument("--agent-kills", type=int, default=5)
    ap.add_argument("--ctl-kill-at", type=int, default=500)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "hunt.md"))
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="domas-hunt-"))
    src, dst = tmp / "src", tmp / "dst"
    src.mkdir()
    dst.mkdir()
    print(f"work dir {tmp}; making {args.files} + {args.big} files", flush=True)
    expect = make_source(src, args.files, args.big)
    total_bytes = sum(s for s, _ in expect.values())

    env = _env(tmp, DOMAS_CONTROLLER_LEASE_SECONDS=str(args.lease))
    port = free_port()
    procs: dict[str, object] = {}
    kills = {"controller": 0, "agent": 0}
    restarts = 0
    events: list[str] = []
    result: dict = {}
    try:
        procs["ctl"] = _controller(tmp, port, env=env, roots=(tmp,))
        for name in ("a1", "a2"):
            procs[name] = _agent(tmp, port, name, streams=4, env=env)
        t0 = time.monotonic()
        sub = _cli(tmp, "submit", str(src) + "/", str(dst) + "/", "--controller", f"127.0.0.1:{port}",
                   "--json", env=env, timeout=300)
        if sub.returncode != 0:
            raise RuntimeError(f"submit failed: {sub.stderr or sub.stdout}")
        tid = json.loads(sub.stdout)["transfer_id"]
        t_sub = time.monotonic() - t0
        events.append(f"{t_sub:6.1f} s submitted {tid} ({len(expect)} files)")
        print(events[-1], flush=True)

        # kill -9 the controller once ~ctl_kill_at files are done, restart it on the same state dir
        seen = {}

        def done_at_least(n):
            st = status(tmp, port, tid)
            if st is not None:
                seen.update(st)
            return st is not None and (st["files_done"] >= n or st["state"] in ENDED)
        wait_until(lambda: done_at_least(args.ctl_kill_at), 300, "files done before controller kill", procs["ctl"])
        kill9(procs["ctl"])
        kills["controller"] += 1
        st_before = None
        events.append(f"{time.monotonic() - t0:6.1f} s controller killed -9 (last seen files_done "
                      f"{seen.get('files_done')})")
        print(events[-1], flush=True)
        time.sleep(0.5)
        procs["ctl"] = _controller(tmp, port, env=env, roots=(tmp,))
        restarts += 1
        st_before = status(tmp, port, tid)
        events.append(f"{time.monotonic() - t0:6.1f} s controller restarted; files_done {st_before and st_before['files_done']}")
        print(events[-1], flush=True)

        # five agent kills spread over the rest of the run, alternating agents
        step = max(1, (int(0.8 * args.files) - args.ctl_kill_at) // args.agent_kills)
        last_kill = time.monotonic()
        for k in range(args.agent_kills):
            target = args.ctl_kill_at + (k + 1) * step         # the last one at ~80 % of the files
            try:
                wait_until(lambda: done_at_least(target), 300, f"{target} files done")
            except TimeoutError:
                pass
            st = status(tmp, port, tid) or {}
            if st.get("state") in ENDED:
                events.append(f"{time.monotonic() - t0:6.1f} s transfer already {st.get('state')}; agent kill "
                              f"{k + 1} skipped")
                break
            name = ("a1", "a2")[k % 2]
            kill9(procs[name])
            kills["agent"] += 1
            last_kill = time.monotonic()
            events.append(f"{last_kill - t0:6.1f} s agent {name} killed -9 at files_done {st.get('files_done')} "
                          f"(state {st.get('state')})")
            print(events[-1], flush=True)
            time.sleep(0.3)
            procs[name] = _agent(tmp, port, name, streams=4, env=env)
            restarts += 1

        wait_until(lambda: (status(tmp, port, tid) or {}).get("state") in ENDED, 600,
                   "transfer to end", procs["ctl"])
        t_end = time.monotonic()
        final = status(tmp, port, tid)
        events.append(f"{t_end - t0:6.1f} s transfer {final['state']}: {final['files_done']} done, "
                      f"{final['files_failed']} failed")
        print(events[-1], flush=True)

        # wait past the janitor's age so orphan parts can be swept, then look
        time.sleep(args.lease * 2 + 2)
        got, parts, extra, bad, missing = {}, [], [], [], []
        for p in dst.rglob("*"):
            if p.is_dir():
                continue
            rel = str(p.relative_to(dst))
            if is_part_name(p.name):
                parts.append(rel)
                continue
            if rel not in expect:
                extra.append(rel)
                continue
            data = p.read_bytes()
            got[rel] = (len(data), zlib.adler32(data))
        for rel, want in expect.items():
            if rel not in got:
                missing.append(rel)
            elif got[rel] != want:
                bad.append(rel)
        tracebacks = []
        for log in sorted(tmp.glob("*.log")):
            text = log.read_text(errors="replace")
            if "Traceback" in text:
                tracebacks.append(f"{log.name}: {text.count('Traceback')}")
        wall = t_end - t0
        result = {
            "state": final["state"], "files": len(expect), "bytes": total_bytes, "wall": wall,
            "submit": t_sub, "files_per_s": len(expect) / wall, "MiB_per_s": total_bytes / MiB / wall,
            "controller_kills": kills["controller"], "agent_kills": kills["agent"], "restarts": restarts,
            "converge_after_last_kill": t_end - last_kill, "files_done": final["files_done"],
            "files_failed": final["files_failed"], "missing": missing, "bad": bad, "extra": extra,
            "parts": parts, "tracebacks": tracebacks,
        }
    finally:
        for name, p in procs.items():
            stop_process(p)
    ok = (result.get("state") == "done" and not result["missing"] and not result["bad"]
          and not result["extra"] and not result["tracebacks"])
    write_report(Path(args.out), args, result, events, ok, tmp)
    print(json.dumps({k: (v if not isinstance(v, list) else len(v)) for k, v in result.items()}, indent=1))
    print("PASS" if ok and not result["parts"] else ("PASS (part files left)" if ok else "FAIL"))
    if not args.keep and ok:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"kept {tmp}")
    return 0 if ok else 1


def write_report(out: Path, args, r: dict, events: list[str], ok: bool, tmp: Path) -> None:
    from benchmarks.common import load
    lines = [
        "# Fault-hunt soak: 5 000-file burst, controller kill, 5 agent kills (issue 8)",
        "",
        f"`python3 benchmarks/soak_hunt.py --files {args.files} --big {args.big} --lease {args.lease:g}` "
        f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {load()})",
        "",
        "One `domas controller` (`controller.lease_seconds` = "
        f"{args.lease:g} s, which is also the part-file janitor's age) and 2 `domas agent` (4 streams) on "
        "127.0.0.1; one `domas submit` of the whole tree; the controller killed -9 once "
        f"~{args.ctl_kill_at} files were done and restarted on its state dir; an agent killed -9 "
        f"{args.agent_kills} times (alternating) and restarted on its state dir.",
        "",
        f"verdict: **{'survived' if ok else 'FAILED'}**",
        "",
        "| figure | value |",
        "|---|---|",
        f"| final state | {r.get('state')} ({r.get('files_done')} done, {r.get('files_failed')} failed) |",
        f"| files | {r.get('files')} ({args.files} × 4-64 KiB + {args.big} × 8 MiB) |",
        f"| bytes | {r.get('bytes', 0) / MiB:.1f} MiB |",
        f"| wall time, submit to end | {r.get('wall', 0):.1f} s (submit itself {r.get('submit', 0):.1f} s) |",
        f"| files/s | {r.get('files_per_s', 0):.0f} ({r.get('MiB_per_s', 0):.1f} MiB/s) |",
        f"| kills | controller {r.get('controller_kills')}, agents {r.get('agent_kills')} |",
        f"| restarts | {r.get('restarts')} |",
        f"| converged after the last kill | {r.get('converge_after_last_kill', 0):.1f} s |",
        f"| missing / differing / extra destination files | {len(r.get('missing', []))} / "
        f"{len(r.get('bad', []))} / {len(r.get('extra', []))} |",
        f"| part files left after 2 × lease + 2 s | {len(r.get('parts', []))} |",
        f"| logs with a Traceback | {len(r.get('tracebacks', []))} |",
        "",
        "Timeline:",
        "",
        "```",
        *events,
        "```",
    ]
    for key in ("missing", "bad", "extra", "parts", "tracebacks"):
        if r.get(key):
            lines += ["", f"{key} ({len(r[key])}, first 20):", "", "```", *r[key][:20], "```"]
    if not ok:
        lines += ["", f"work dir kept: `{tmp}`"]
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a") as f:
        f.write("\n".join(lines) + "\n\n")


if __name__ == "__main__":
    sys.exit(main())
