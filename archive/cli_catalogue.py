"""`domas catalogue find/show/reconcile`: look into the catalogue from the command line.

The catalogue is the one the configuration names (`open_catalogue(cfg.catalogue, cfg.state_path())`):
the embedded SQLite file under the state directory unless catalogue.url says otherwise.
On a terminal the output is rich tables; into a pipe or a file it is plain lines for scripts
(PLAIN_HELP: tab-separated fields, no box characters, no wrapping, notes on stderr); `--json`
prints one JSON document on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, replace
from datetime import datetime, timezone

from domas.catalogue.base import public_state, with_scans
from domas.config import Config, parse_duration
from domas.errors import ConfigError, NotFound, UsageError
from domas.logsafe import one_line

from .cli_operator import given

FIND_HELP = """\
List datasets, newest first, filtered by beamtime, proposal, principal investigator (the
beamtime's or the proposal's PI), creation time and/or directory.

Into a pipe or a file: one line per dataset, tab-separated: PID, beamtime, type, state, files,
bytes, created (UTC, ISO 8601), path.

examples:
  domas catalogue find --beamtime 2025-0042
  domas catalogue find --pi "Ada Lovelace" --since 30d
  domas catalogue find --since 2025-03-01 --json
"""

SHOW_HELP = """\
Show one dataset (by PID or by its directory) and its files with size, adler32 and replicas.

Into a pipe or a file: the dataset's lines, then one line per file, tab-separated:
"file", path, bytes, adler32, replicas (tier:state,...).
"""

RECONCILE_HELP = """\
Compare the files on disk under ROOT with the catalogue, for the dataset at ROOT or every
catalogued dataset below it. Reports files missing from the catalogue, missing on disk, and files
whose size (or, with --checksum, adler32) differs. Exit code 0 when all agree, 1 otherwise.

Into a pipe or a file: tab-separated lines, every finding listed:
  dataset          PID  path  matched  not-catalogued  not-on-disk  size-drift  checksum-drift
  not-catalogued   PID  path
  not-on-disk      PID  path
  size-drift       PID  path  catalogue-size  disk-size
  checksum-drift   PID  path  catalogue-adler32  disk-adler32

With --tier NAME (beamline, central, tape), or a ROOT inside a tier root, the deployment's tier is
compared: catalogue paths count from the tier root, and a file is expected on the tier when its
replica there says so:

  domas catalogue reconcile --tier central --checksum
"""


def register(sub: argparse._SubParsersAction) -> None:
    cat = sub.add_parser("catalogue", help="find and show datasets, reconcile disk and catalogue",
                         description="Look into the catalogue of datasets, files and replicas.")
    csub = cat.add_subparsers(dest="catalogue_command", metavar="ACTION")
    cat.set_defaults(handler=lambda args, cfg: _usage(cat))

    f = csub.add_parser("find", help="list datasets", description=FIND_HELP,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    f.add_argument("--beamtime", metavar="ID")
    f.add_argument("--proposal", metavar="ID")
    f.add_argument("--pi", metavar="NAME")
    f.add_argument("--since", metavar="T", help="ISO date/time (2025-03-01), POSIX seconds, or an age (7d, 12h)")
    f.add_argument("--path", metavar="DIR", help="only datasets in this directory or below it")
    f.add_argument("--limit", type=_count, metavar="N")
    f.add_argument("--json", action="store_true", help="print JSON on stdout")
    f.set_defaults(handler=run_find)

    s = csub.add_parser("show", help="show a dataset and its files", description=SHOW_HELP,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("pid", metavar="PID", type=given, help="the dataset's PID, or its directory")
    s.add_argument("--limit", type=_count, default=1000, metavar="N", help="files to list (default 1000, 0: all)")
    s.add_argument("--json", action="store_true", help="print JSON on stdout")
    s.set_defaults(handler=run_show)

    r = csub.add_parser("reconcile", help="compare disk and catalogue", description=RECONCILE_HELP,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("root", metavar="ROOT", nargs="?", help="a local directory (with --tier: a dataset path)")
    r.add_argument("--tier", metavar="NAME", help="compare this storage tier of the deployment")
    r.add_argument("--checksum", action="store_true", help="also compare adler32 (reads every file)")
    r.add_argument("--json", action="store_true", help="print JSON on stdout")
    r.set_defaults(handler=run_reconcile)

    from .cli_operator import register_operator      # proposal, beamtime, import, embargo, release, history

    register_operator(csub)


def _count(text: str) -> int:
    """--limit N: a whole number from 0 to 2^31 - 1 (argparse says so in one line otherwise)."""
    try:
        n = int(text)
    except ValueError:
        n = -1
    if not 0 <= n < 2**31:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count from 0 to {2**31 - 1}")
    return n


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _open(cfg: Config):
    from domas.catalogue import open_catalogue

    return open_catalogue(cfg.catalogue, cfg.state_path())


def parse_since(text: str, now: float) -> float:
    """'2025-03-01', '2025-03-01T10:00:00+08:00', '1740787200' or an age ('7d') -> POSIX seconds."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
        return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()
    except ValueError:
        pass
    try:
        return now - parse_duration(text, "--since")
    except ConfigError:
        raise UsageError(f"--since {text!r} is not a date (2025-03-01), POSIX seconds or an age (7d, 12h)") from None


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def _when(ts: float | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M")


def _print_json(doc) -> None:
    json.dump(doc, sys.stdout, indent=2, sort_keys=True)
    print()


def _console():
    from rich.console import Console

    return Console()


def _print_table(console, headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """A table when it fits the terminal; else one block per row, its first cell (a PID, a path) on a
    line of its own and the rest below, so nothing is cut to '…' (a PID must stay whole to be copied).
    Cells are shown as they are, never read as rich markup."""
    from rich.table import Table
    from rich.text import Text

    table = Table(*headers)
    for row in rows:
        table.add_row(*map(Text, row))          # Text: a name like 'scan[/x].h5' is not rich markup
    if console.measure(table, options=console.options.update_width(1 << 20)).maximum <= console.width:
        console.print(table)
        return
    for first, *rest in rows:
        console.print(first, markup=False, highlight=False, soft_wrap=True)
        console.print("  " + ", ".join(f"{h} {v}" for h, v in zip(headers[1:], rest)), markup=False,
                      highlight=False, soft_wrap=True)


def _plain() -> bool:
    """Output for scripts: stdout is a pipe or a file, not a terminal."""
    return not sys.stdout.isatty()


def _line(*fields) -> None:
    """One tab-separated line; a tab or newline inside a field is written as its escape."""
    print("\t".join(one_line("" if f is None else str(f)) for f in fields))


def _note(text: str) -> None:
    print(text, file=sys.stderr)


def _iso(ts: float | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_find(args: argparse.Namespace, cfg: Config) -> int:
    since = parse_since(args.since, time.time()) if args.since else None
    with _open(cfg) as cat:
        found = cat.find_datasets(beamtime=args.beamtime, proposal=args.proposal, pi=args.pi, since=since,
                                  path_prefix=os.path.abspath(args.path) if args.path else None, limit=args.limit)
    found = [_as_read(d, time.time()) for d in found]
    if args.json:
        _print_json([asdict(d) for d in found])
        return 0
    if _plain():
        for d in found:
            _line(d.pid, d.beamtime, d.data_type, d.state, d.file_count, d.bytes, _iso(d.created_at), d.path)
        _note(f"{len(found)} dataset(s)")
        return 0
    console = _console()
    _print_table(console, ("PID", "beamtime", "type", "state", "files", "size", "created (UTC)", "path"),
                 [(d.pid, d.beamtime, d.data_type, d.state, str(d.file_count), human_bytes(d.bytes),
                   _when(d.created_at), d.path) for d in found])
    console.print(f"{len(found)} dataset(s)")
    return 0


def _as_read(ds, now: float):
    """The dataset with the state the data service reports: an embargo whose end has passed reads released."""
    return replace(ds, state=public_state(ds.state, ds.embargo_end, now))


def _lookup(cat, key: str):
    found = cat.get_dataset(key)
    if found is None and key.startswith("/"):
        found = cat.dataset_by_path(os.path.normpath(key))
    if found is None:
        raise NotFound(f"no dataset {key} in the catalogue; `domas catalogue find` lists them")
    return found


def run_show(args: argparse.Namespace, cfg: Config) -> int:
    with _open(cfg) as cat:
        ds = _lookup(cat, args.pid)
        ds = replace(_as_read(ds, time.time()), metadata=with_scans(ds.metadata, cat.scans_of(ds.pid)))  # its runs' records
        files = []
        for rec in cat.files_of(ds.pid):
            if args.limit and len(files) >= args.limit:
                break
            files.append(rec)
    if args.json:
        _print_json({"dataset": asdict(ds), "files": [asdict(f) for f in files]})
        return 0
    if _plain():
        _show_plain(ds, files)
        return 0
    console = _console()
    head, *rest = _described(ds)
    console.print(head, style="bold", markup=False, highlight=False)
    for text in rest:
        console.print(text, markup=False, highlight=False, soft_wrap=True)
    _print_table(console, ("path", "size", "adler32", "replicas"),
                 [(rec.path, str(rec.size), rec.adler32 or "-",
                   ", ".join(f"{tier}:{r.state}" for tier, r in rec.replicas.items()) or "-") for rec in files])
    if len(files) < ds.file_count:
        console.print(f"(first {len(files)} of {ds.file_count} files; --limit 0 lists all)")
    return 0


def _described(ds) -> list[str]:
    """The dataset's lines above its files: PID, path and counts, then its metadata."""
    lines = [f"{ds.pid}  {ds.data_type}, {ds.state}, beamtime {ds.beamtime}",
             f"{ds.path}  {ds.file_count} file(s), {human_bytes(ds.bytes)}, created {_when(ds.created_at)} UTC"]
    for key, value in sorted(ds.metadata.items()):
        if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            lines.append(f"  {key}:")                                    # e.g. scans: one line each
            lines += [f"    {sub}: " + ", ".join(f"{k}={v}" for k, v in sorted(fields.items()))
                      for sub, fields in value.items()]
        else:
            lines.append(f"  {key}: {value}")
    return lines


def _show_plain(ds, files) -> None:
    for text in _described(ds):
        print(one_line(text))
    for rec in files:
        _line("file", rec.path, rec.size, rec.adler32, ",".join(f"{t}:{r.state}" for t, r in rec.replicas.items()))
    if len(files) < ds.file_count:
        _note(f"(first {len(files)} of {ds.file_count} files; --limit 0 lists all)")


def file_adler32(path: str, block: int = 8 << 20) -> str:
    from domas.checksum import adler32, format_adler32

    value = 1
    with open(path, "rb") as fh:
        while data := fh.read(block):
            value = adler32(data, value)
    return format_adler32(value)


def disk_listing(root: str, checksum: bool):
    """Regular files below `root` as DiskEntry (paths relative to root); symlinks are not followed."""
    from domas.catalogue.reconcile import DiskEntry
    from domas.errors import from_oserror

    out = []
    try:
        for here, dirs, names in os.walk(root, onerror=_raise):
            dirs.sort()
            for name in sorted(names):
                full = os.path.join(here, name)
                st = os.lstat(full)
                if os.path.isfile(full) and not os.path.islink(full):
                    rel = os.path.relpath(full, root).replace(os.sep, "/")
                    out.append(DiskEntry(rel, st.st_size, file_adler32(full) if checksum else None))
    except OSError as e:
        raise from_oserror(e) from None
    return out


def _raise(err: OSError) -> None:
    raise err


def run_reconcile(args: argparse.Namespace, cfg: Config) -> int:
    from domas.catalogue.reconcile import reconcile
    from domas.archive.tier_reconcile import reconcile_on_tier, tier_for_path

    if args.root is None and not args.tier:
        raise UsageError("give a ROOT directory or --tier NAME (e.g. domas catalogue reconcile --tier central)")
    on_tier = (args.tier, args.root or "/") if args.tier else tier_for_path(cfg.storage, args.root)
    root = os.path.abspath(args.root or "/")
    if not on_tier and not os.path.isdir(root):
        raise NotFound(f"{args.root} is not a directory")
    with _open(cfg) as cat:
        if on_tier:
            reports = reconcile_on_tier(cat, cfg.storage, on_tier[0], on_tier[1], args.checksum)
        else:
            here = cat.dataset_by_path(root)
            datasets = [here] if here else cat.find_datasets(path_prefix=root)
            if not datasets:
                raise NotFound(f"no catalogued dataset at or below {root}; `domas catalogue find` lists them")
            reports = [(d, reconcile(disk_listing(d.path, args.checksum), cat.files_of(d.pid))) for d in datasets]
    clean = all(r.clean for _, r in reports)
    if args.json:
        _print_json({"clean": clean, "datasets": [{"pid": d.pid, "path": d.path, **r.to_dict()} for d, r in reports]})
        return 0 if clean else 1
    (_reconcile_plain if _plain() else _print_reconcile)(reports)
    return 0 if clean else 1


def _reconcile_plain(reports) -> None:
    for d, r in reports:
        _line("dataset", d.pid, d.path, r.matched, len(r.missing_in_catalogue), len(r.missing_on_disk),
              len(r.size_drift), len(r.checksum_drift))
        for e in r.missing_in_catalogue:
            _line("not-catalogued", d.pid, d.path + "/" + e.path)
        for p in r.missing_on_disk:
            _line("not-on-disk", d.pid, d.path + "/" + p)
        for x in r.size_drift:
            _line("size-drift", d.pid, d.path + "/" + x.path, x.catalogue, x.disk)
        for x in r.checksum_drift:
            _line("checksum-drift", d.pid, d.path + "/" + x.path, x.catalogue, x.disk)


def _print_reconcile(reports) -> None:
    console = _console()
    _print_table(console, ("PID", "path", "matched", "not catalogued", "not on disk", "size drift", "checksum drift"),
                 [(d.pid, d.path, str(r.matched), str(len(r.missing_in_catalogue)), str(len(r.missing_on_disk)),
                   str(len(r.size_drift)), str(len(r.checksum_drift))) for d, r in reports])
    for d, r in reports:
        for e in r.missing_in_catalogue[:20]:
            console.print(f"not catalogued: {one_line(d.path + '/' + e.path)}", markup=False, highlight=False)
        for p in r.missing_on_disk[:20]:
            console.print(f"not on disk:    {one_line(d.path + '/' + p)}", markup=False, highlight=False)
        for x in r.size_drift[:20]:
            console.print(f"size drift:     {one_line(d.path + '/' + x.path)} catalogue {x.catalogue} disk {x.disk}",
                          markup=False, highlight=False)
        for x in r.checksum_drift[:20]:
            console.print(f"checksum drift: {one_line(d.path + '/' + x.path)} catalogue {x.catalogue} disk {x.disk}",
                          markup=False, highlight=False)
