"""`domas copy` and `domas checksum`: the transfer core from the command line."""

from __future__ import annotations

import argparse
import json
import sys

from domas.config import GiB, KiB, Config, parse_size_flag
from domas.errors import DomasError, TransferFailed, UsageError
from domas.loop import run_async

COPY_HELP = """\
Copy files or directory trees, verified, many chunks in parallel, resumable.

Sources and destination are local paths or root://host:port//path URLs. Every chunk is hashed
as it passes (adler32 + xxh3); each written chunk is read back from the destination disk, and an
XRootD destination's own adler32 must match the source's. An interrupted copy (Ctrl-C, kill -9,
a full disk) resumes where it stopped when the same command runs again; files already copied
(same size and modification time) are skipped.

Layout as rsync: `domas copy dir DST` creates DST/dir; `domas copy dir/ DST` copies the contents
of dir into DST.

examples:
  domas copy scan_0001.h5 /data/central/
  domas copy /data/beamline/B1/202611 root://eos.example:1094//heps/B1/ --streams 16
  domas copy --json big.h5 backup/ > report.json
"""

CHECKSUM_HELP = """\
Print a checksum per file, like sha256sum: adler32 as 8 hex digits (as FTS, Rucio and XRootD
write it, leading zeros kept) or xxh3 (16 hex digits). For root:// URLs the server is asked
first and the file is read only when the server has no checksum.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("copy", help="copy files or trees, verified and resumable", description=COPY_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="SRC... DST", help="sources, then the destination")
    p.add_argument("-r", "--recursive", action="store_true", help="accepted for cp habits; trees are always copied")
    p.add_argument("--streams", type=stream_count, help="chunks in flight (default: 4 per core, at least 4)")
    p.add_argument("--chunk-size", help="chunk size, e.g. 8MiB (default), 64MiB")
    p.add_argument("--verify", choices=["default", "none"], help="'none' skips destination verification")
    p.add_argument("--no-resume", action="store_true", help="ignore and do not write resume journals")
    p.add_argument("--force", action="store_true", help="copy even files that are already up to date")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    p.set_defaults(handler=run_copy)

    c = sub.add_parser("checksum", help="print adler32 or xxh3 of files", description=CHECKSUM_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("paths", nargs="+", metavar="PATH")
    c.add_argument("--algo", choices=["adler32", "xxh3"], default="adler32")
    c.set_defaults(handler=run_checksum)


MAX_STREAMS = 1024


def stream_count(text: str) -> int:
    """--streams: a whole number from 1 to MAX_STREAMS (argparse reports anything else, exit 2)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= n <= MAX_STREAMS:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_STREAMS}, got {n}")
    return n


def copy_config(args: argparse.Namespace, cfg: Config) -> Config:
    chunk = parse_size_flag(args.chunk_size, "--chunk-size") if args.chunk_size else None
    if chunk is not None and not 4 * KiB <= chunk <= GiB:      # the flag is wrong, not the file (exit 2, not 78)
        raise UsageError(f"--chunk-size: must be between 4KiB and 1GiB, got {args.chunk_size}")
    return cfg.with_copy(streams=args.streams, chunk_size=chunk, verify=args.verify,
                         resume=False if args.no_resume else None)


def run_copy(args: argparse.Namespace, cfg: Config) -> int:
    from .engine import CopyEngine
    from domas.transfer.expand import expand
    from .progress import make_reporter

    if len(args.paths) < 2:
        raise UsageError("give at least one source and a destination: domas copy SRC... DST")
    if "" in args.paths:            # '' would mean the current directory, on either side
        raise UsageError("a source or the destination is empty (''); give a path or a URL")
    cfg = copy_config(args, cfg)
    exp = expand(args.paths[:-1], args.paths[-1])
    reporter = make_reporter(args.quiet, args.json)
    engine = CopyEngine(cfg, reporter=reporter, force=args.force)
    acct = run_async(engine.run(exp))
    print_summary(args, acct.summary(), "copied")
    return exit_code(acct)


def print_summary(args: argparse.Namespace, summary: dict, verb: str) -> None:
    """The end of a run: the JSON summary on stdout (--json), or one line on stderr."""
    if args.json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")     # one write, not one per token
        sys.stdout.flush()
    elif not args.quiet:
        from .progress import human_bytes

        t = summary["totals"]
        print(f"{t['done']} {verb}, {t['skipped']} up to date, {t['failed']} failed: "
              f"{human_bytes(t['bytes_copied'])} in {t['seconds']:.2f} s "
              f"({human_bytes(t['bytes_per_second'])}/s), {t['retries']} retries", file=sys.stderr)


def exit_code(acct) -> int:
    codes = {f.exit_code or 1 for f in acct.files if f.status == "failed"}
    if not codes:
        return 0
    return codes.pop() if len(codes) == 1 else TransferFailed.exit_code


def checksum_line(hexsum: str, name: str) -> str:
    """`HEX  NAME` as sha256sum writes it: a name holding a newline or a backslash is escaped and the
    line starts with a backslash, so one file is always one line (`sha256sum -c` reads it back)."""
    if "\\" in name or "\n" in name or "\r" in name:
        return "\\" + hexsum + "  " + name.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    return f"{hexsum}  {name}"


def run_checksum(args: argparse.Namespace, cfg: Config) -> int:
    from domas.transfer.filesum import file_checksum   # here: `domas get` (which imports this module) starts without it

    if "" in args.paths:
        raise UsageError("a path is empty (''); give files or URLs")
    status = 0
    for url in args.paths:
        try:
            print(checksum_line(file_checksum(url, args.algo), url), flush=True)
        except DomasError as e:
            print(f"domas checksum: {e}", file=sys.stderr)
            status = status or e.exit_code
    return status
