"""`domas catalogue proposal|beamtime|import|embargo|release|history`: what an operator sets.

Every command writes through catalogue/operator.py, so each changed field is recorded
with who (--by, default the login name) and when; `history` shows it. Discovery never undoes
these fields (it only fills empty ones).
"""

from __future__ import annotations

import argparse
import getpass
import json
import time
from datetime import datetime, timezone
from pathlib import Path

from domas.config import Config
from domas.errors import NotFound, PermissionDenied, UsageError, from_oserror

OPERATOR_HELP = """\
examples:
  domas catalogue proposal set P-2026-017 --title "Battery cathodes" --pi "Ada Lovelace"
  domas catalogue beamtime set BT0001 --proposal P-2026-017 --pi "Grace Hopper" --team "Linus,Ken" \\
      --start 2026-11-01 --end 2026-11-04
  domas catalogue import user-office.csv      # columns: proposal,title,beamtime,beamline,pi,team,start,end
  domas catalogue embargo CSTR:17058.11.HEPS.BT0001.Q6DY67NH8MVD --until 2027-11-01
  domas catalogue embargo --beamtime BT0001 --until 2027-11-01
  domas catalogue release CSTR:17058.11.HEPS.BT0001.Q6DY67NH8MVD
  domas catalogue history CSTR:17058.11.HEPS.BT0001.Q6DY67NH8MVD
"""


def given(text: str) -> str:
    """A PID or id argument: an empty one is refused by argparse (exit 2), not looked up."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty; `domas catalogue find` lists the datasets")
    return text


def register_operator(csub: argparse._SubParsersAction) -> None:
    """Add the operator actions to `domas catalogue`."""
    def by(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--by", metavar="NAME", help="who makes the change (default: your login name)")
        return p

    prop = csub.add_parser("proposal", help="create or update a proposal", epilog=OPERATOR_HELP,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    ps = prop.add_subparsers(dest="proposal_command", metavar="ACTION", required=True)
    p = by(ps.add_parser("set", help="set a proposal's title and PI"))
    p.add_argument("id", metavar="ID")
    p.add_argument("--title")
    p.add_argument("--pi", metavar="NAME")
    p.set_defaults(handler=run_proposal_set)

    bt = csub.add_parser("beamtime", help="create or update a beamtime", epilog=OPERATOR_HELP,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    bs = bt.add_subparsers(dest="beamtime_command", metavar="ACTION", required=True)
    b = by(bs.add_parser("set", help="set a beamtime's proposal, PI, team and dates"))
    b.add_argument("id", metavar="ID")
    b.add_argument("--proposal", metavar="P")
    b.add_argument("--beamline", metavar="B")
    b.add_argument("--pi", metavar="NAME")
    b.add_argument("--team", metavar="a,b,c", help="team members, comma-separated (replaces the team)")
    b.add_argument("--start", metavar="DATE", help="YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC unless an offset is given)")
    b.add_argument("--end", metavar="DATE")
    b.set_defaults(handler=run_beamtime_set)

    i = by(csub.add_parser("import", help="import proposals and beamtimes from a CSV or JSON export",
                           epilog=OPERATOR_HELP, formatter_class=argparse.RawDescriptionHelpFormatter))
    i.add_argument("file", metavar="FILE", help="CSV with a header line, or JSON: a list of objects")
    i.set_defaults(handler=run_import)

    e = by(csub.add_parser("embargo", help="put a dataset (or every dataset of a beamtime) under embargo"))
    e.add_argument("pid", metavar="PID", nargs="?", type=given)
    e.add_argument("--beamtime", metavar="ID", help="every dataset of this beamtime")
    e.add_argument("--until", metavar="DATE", required=True)
    e.set_defaults(handler=run_embargo)

    r = by(csub.add_parser("release", help="lift a dataset's embargo now"))
    r.add_argument("pid", metavar="PID", type=given)
    r.set_defaults(handler=run_release)

    h = csub.add_parser("history", help="who changed what and when, for a dataset, beamtime or proposal")
    h.add_argument("key", metavar="PID", type=given,
                   help="a dataset PID (with its beamtime and proposal), a beamtime or a proposal id")
    h.add_argument("--json", action="store_true", help="print JSON on stdout")
    h.set_defaults(handler=run_history)


def _who(args: argparse.Namespace) -> str:
    return args.by or getpass.getuser()


def _open(cfg: Config):
    from domas.catalogue import open_catalogue

    return open_catalogue(cfg.catalogue, cfg.state_path())


def _date(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M") if ts is not None else "-"


def run_proposal_set(args: argparse.Namespace, cfg: Config) -> int:
    from domas.catalogue import operator as op

    changes = {k: v for k, v in (("title", args.title), ("pi", args.pi)) if v is not None}
    with _open(cfg) as cat:
        p = op.set_proposal(cat, args.id, changes, who=_who(args), now=time.time())
    print(f"proposal {p.id}: title {p.title or '-'!r}, PI {p.pi or '-'}")
    return 0


def run_beamtime_set(args: argparse.Namespace, cfg: Config) -> int:
    from domas.catalogue import operator as op

    changes: dict = {k: getattr(args, k) for k in ("proposal", "beamline", "pi") if getattr(args, k) is not None}
    if args.team is not None:
        changes["team"] = tuple(t.strip() for t in args.team.split(",") if t.strip())
    for key in ("start", "end"):
        if getattr(args, key) is not None:
            changes[key] = op.parse_date(getattr(args, key), f"--{key}")
    with _open(cfg) as cat:
        b = op.set_beamtime(cat, args.id, changes, who=_who(args), now=time.time())
    print(f"beamtime {b.id}: beamline {b.beamline or '-'}, proposal {b.proposal or '-'}, PI {b.pi or '-'}, "
          f"team {', '.join(b.team) or '-'}, {_date(b.start)} .. {_date(b.end)}")
    return 0


def run_import(args: argparse.Namespace, cfg: Config) -> int:
    from domas.catalogue import operator as op

    path = Path(args.file)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise NotFound(f"{path} does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a directory; give the CSV or JSON file to import") from None
    except PermissionError:
        raise PermissionDenied(f"{path} cannot be read (permission denied); check its owner and mode") from None
    except OSError as e:
        raise from_oserror(e, str(path)) from None
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text; give a CSV file with a header line or a JSON list") from None
    rows = op.read_records(path.name, text)
    with _open(cfg) as cat:
        n_prop, n_bt = op.import_records(cat, rows, who=_who(args), now=time.time())
    print(f"imported {n_prop} proposal row(s) and {n_bt} beamtime row(s) from {path}")
    return 0


def run_embargo(args: argparse.Namespace, cfg: Config) -> int:
    from domas.catalogue import operator as op

    if bool(args.pid) == bool(args.beamtime):
        raise UsageError("give one dataset PID or --beamtime ID (not both)")
    until, now = op.parse_date(args.until, "--until"), time.time()
    with _open(cfg) as cat:
        if args.pid:
            done = [op.embargo(cat, args.pid, until, who=_who(args), now=now)]
        else:
            done = op.embargo_beamtime(cat, args.beamtime, until, who=_who(args), now=now)
    for ds in done:     # an end already past opens the dataset at once: say so
        print(f"{ds.pid}  embargoed until {_date(until)} UTC" if until > now else
              f"{ds.pid}  released: the embargo's end {_date(until)} UTC has passed")
    if args.beamtime:
        print(f"beamtime {args.beamtime}: datasets catalogued in it later start under embargo until {_date(until)} UTC")
    return 0


def run_release(args: argparse.Namespace, cfg: Config) -> int:
    from domas.catalogue import operator as op

    with _open(cfg) as cat:
        ds = op.release(cat, args.pid, who=_who(args), now=time.time())
    print(f"{ds.pid}  released")
    return 0


def run_history(args: argparse.Namespace, cfg: Config) -> int:
    from domas.catalogue import operator as op

    with _open(cfg) as cat:
        changes = op.history(cat, args.key)
    if args.json:
        print(json.dumps([{"at": c.at, "who": c.who, "target": c.target, "field": c.field, "old": c.old,
                           "new": c.new} for c in changes]))
        return 0
    for c in changes:
        print(f"{_date(c.at)}  {c.who:12}  {c.target:40}  {c.field:12}  {_shown(c.old)} -> {_shown(c.new)}")
    if not changes:
        print(f"no recorded change for {args.key}")
    return 0


def _shown(value) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "-"
    if isinstance(value, float) and value > 1e8:
        return _date(value)
    return str(value)
