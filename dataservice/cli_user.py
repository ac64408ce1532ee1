"""`domas user add|token|revoke|list`: the people who may use the data service, and their tokens.

Users live in `<state_dir>/users.sqlite` (dataservice/users.py); run these commands on the machine
(and with the configuration) that runs `domas serve`. A token is printed once, on stdout alone, so
`TOKEN=$(domas user token ada)` captures it; only its SHA-256 is stored.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time

from domas.config import Config

USER_HELP = """\
Manage the data service's users and their personal API tokens. A user's name is matched (case
ignored) with the PI and team names of beamtimes and proposals: team members see their datasets
under embargo. Roles: user (default), staff and admin see every dataset.

examples:
  domas user add "Ada Lovelace"
  domas user add sam --role staff
  domas user token "Ada Lovelace"          # prints a new token; the old one stops working
  domas user revoke "Ada Lovelace"
  curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8400/api/v1/datasets
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("user", help="manage data service users and their API tokens", description=USER_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    usub = p.add_subparsers(dest="user_command", metavar="ACTION")
    p.set_defaults(handler=lambda args, cfg: _usage(p))
    a = usub.add_parser("add", help="add a user (no token yet)")
    a.add_argument("name", metavar="NAME")
    a.add_argument("--role", choices=("user", "staff", "admin"), default="user")
    a.set_defaults(handler=run_add)
    t = usub.add_parser("token", help="print a new API token for a user (replaces the old one)")
    t.add_argument("name", metavar="NAME")
    t.set_defaults(handler=run_token)
    r = usub.add_parser("revoke", help="revoke a user's token")
    r.add_argument("name", metavar="NAME")
    r.set_defaults(handler=run_revoke)
    ls = usub.add_parser("list", help="list users, roles and whether they hold a token")
    ls.set_defaults(handler=run_list)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _store(cfg: Config):
    from .users import UserStore

    return UserStore.in_state_dir(cfg.state_path())


def run_add(args: argparse.Namespace, cfg: Config) -> int:
    store = _store(cfg)
    user = store.add(args.name, args.role)
    print(f"added {user.name} ({user.role}); `domas user token {shlex.quote(user.name)}` gives a token", file=sys.stderr)
    return 0


def run_token(args: argparse.Namespace, cfg: Config) -> int:
    store = _store(cfg)
    token = store.issue_token(args.name)
    print(token, flush=True)
    print(f"new token for {store.get(args.name).name}; it is shown only now and replaces the previous one",
          file=sys.stderr)
    return 0


def run_revoke(args: argparse.Namespace, cfg: Config) -> int:
    user = _store(cfg).revoke(args.name)
    print(f"revoked the token of {user.name}", file=sys.stderr)
    return 0


def run_list(args: argparse.Namespace, cfg: Config) -> int:
    for u in _store(cfg).list():
        when = time.strftime("%Y-%m-%d", time.gmtime(u.token_at)) if u.token_at else "-"
        print(f"{u.name}\t{u.role}\t{'token since ' + when if u.has_token else 'no token'}")
    return 0
