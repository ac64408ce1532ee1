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
from domas.errors import DomasError, UsageError

COMMAND_MODULES = {                                   # module: the subcommands it registers
    "domas.agent.cli_copy": ("copy", "checksum"),
    "domas.agent.cli_agent": ("agent",),
    "domas.agent.cli_get": ("get",),                      # the download client
    "domas.controller.cli_controller": ("controller", "submit", "status", "cancel"),
    "domas.archive.cli_catalogue": ("catalogue",),        # catalogue find/show/reconcile
    "domas.dataservice.cli_serve": ("serve", "user"),     # the data service (REST API, portal, downloads)
    "domas.cli_up": ("up",),                              # everything on one machine
    "domas.archive.cli_archive": ("archive",),            # discovery + data policy alone
    "domas.cli_publish": ("publish",),                    # announce closed files on the message bus
}

DESCRIPTION = """\
domas moves and keeps the data of a light source: verified parallel copies between local
storage and XRootD servers (adler32 as FTS, Rucio and XRootD exchange it), a controller that
hands chunks to transfer agents, and a catalogue of every file with its replicas.

examples:
  domas copy /data/scan001 root://eos.example:1094//heps/scan001
  domas checksum run.h5
  domas up                    # everything on one machine, under ./domas-data/
"""


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; given the command line, only the module of the subcommand it names is imported
    (`domas get` starts without importing the controller, the data service, ...), every module when
    it names none (help, --version, a typo)."""
    parser = argparse.ArgumentParser(prog="domas", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"domas {__version__}")
    parser.add_argument("--config", metavar="FILE", help="TOML configuration (default: $DOMAS_CONFIG)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _modules_for(argv):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:
                continue
            raise
        module.register(sub)
    _config_anywhere(parser)
    return parser


def _modules_for(argv: list[str] | None) -> list[str]:
    command = _command_of(argv) if argv is not None else None
    named = [name for name, commands in COMMAND_MODULES.items() if command in commands]
    return named or list(COMMAND_MODULES)


def _command_of(argv: list[str]) -> str | None:
    """The subcommand a command line names: its first word that is neither an option nor --config's value."""
    words = iter(argv)
    for word in words:
        if word == "--config":
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


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
    """Run one command. Run as the program (no `argv` given), a command that asks for it
    (`exit_at_once`: domas get) ends the process as soon as it has answered, see _exit_at_once."""
    program = argv is None
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        if args.config is not None and not args.config.strip():     # `--config "$UNSET"`: not the defaults
            raise UsageError("--config is empty; give the TOML file, or leave --config out")
        cfg = config_mod.load(args.config, os.environ)
        code = int(args.handler(args, cfg) or 0)
        if program and getattr(args, "exit_at_once", False):
            _exit_at_once(code)
        return code
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


def _exit_at_once(code: int) -> None:
    """End the process now, skipping the interpreter's teardown: for a command whose files are
    already closed and durable, that teardown is only cost (XRootD's atexit handler walks every
    object in memory; modules and threads are torn down one by one), ~0.1 s a `domas get`.
    What is buffered is flushed first: stdout, stderr and the logging handlers."""
    if "logging" in sys.modules:
        sys.modules["logging"].shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
