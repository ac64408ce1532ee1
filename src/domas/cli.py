"""The `domas` command: argparse entry that dispatches to each part's subcommands.

Each part registers its own subcommands through a module exposing `register(subparsers)`;
a subcommand's handler takes (args, config) and returns an exit code. Every DomasError becomes
one sentence on stderr and its class's exit code, never a traceback; any other exception (a bug,
a foreign library's error) becomes one sentence naming its type, exit code 70, and its traceback
goes to stderr only with DOMAS_DEBUG=1.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from domas import __version__
from domas import config as config_mod
from domas.errors import DomasError

COMMAND_MODULES = [
    "domas.agent.cli_copy",          # copy, checksum
    "domas.agent.cli_agent",         # agent
    "domas.agent.cli_get",           # get: the download client
    "domas.controller.cli_controller",   # controller, submit, status
    "domas.archive.cli_catalogue",       # catalogue find/show/reconcile
    "domas.dataservice.cli_serve",       # serve: the data service (REST API, portal, downloads)
    "domas.cli_up",                      # up: everything on one machine
    "domas.archive.cli_archive",         # archive: discovery + data policy alone
    "domas.cli_publish",                 # publish: announce closed files on the message bus
]

DESCRIPTION = """\
domas moves and keeps the data of a light source: verified parallel copies between local
storage and XRootD servers (adler32 as FTS, Rucio and XRootD exchange it), a controller that
hands chunks to transfer agents, and a catalogue of every file with its replicas.

examples:
  domas copy /data/scan001 root://eos.example:1094//heps/scan001
  domas checksum run.h5
  domas up                    # everything on one machine, under ./domas-data/
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="domas", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"domas {__version__}")
    parser.add_argument("--config", metavar="FILE", help="TOML configuration (default: $DOMAS_CONFIG)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:
                continue
            raise
        module.register(sub)
    _config_anywhere(parser)
    return parser


def _config_anywhere(parser: argparse.ArgumentParser) -> None:
    """Every subcommand (and sub-subcommand) takes --config too, so it may come before or after
    the command; given at both places, the later one wins."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in set(action.choices.values()):
                if "--config" not in child._option_string_actions:
                    child.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                                       help="TOML configuration (default: $DOMAS_CONFIG)")
                _config_anywhere(child)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        cfg = config_mod.load(args.config, os.environ)
        return int(args.handler(args, cfg) or 0)
    except DomasError as e:
        print(f"domas: {e}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, as coreutils do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print("domas: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except Exception as e:          # noqa: BLE001 - the user's edge: one sentence, never raw internals
        if os.environ.get("DOMAS_DEBUG") == "1":
            import traceback

            traceback.print_exc()
        print(f"domas: unexpected internal error ({type(e).__name__}), nothing more was done; run the same "
              "command with DOMAS_DEBUG=1 to see the details", file=sys.stderr)
        return 70


if __name__ == "__main__":
    sys.exit(main())
