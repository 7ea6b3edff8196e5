"""The ``scgan`` command: parse the command line and dispatch to ``scgan.commands``. Errors become one line and a
non-zero exit (``--debug`` shows the traceback)."""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Sequence
from typing import NoReturn

from scgan import __version__
from scgan.commands import COMMANDS
from scgan.utils.errors import one_line


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr, ``PROG: error: MESSAGE; see 'PROG --help'``, and exit 2
    (argparse's usage block before it would bury the line; ``--help`` still prints the usage). Subcommand parsers
    are of this class too (argparse makes them of their parent's class)."""

    def error(self, message: str) -> NoReturn:
        text = " ".join(message.split())  # argparse's messages may wrap
        missing = re.match(r"argument (\S+): expected (one|at least one) argument", text)
        if missing:  # say what the value is: the option's help, or its choices
            action = next((a for a in self._actions if "/".join(a.option_strings) == missing.group(1)), None)
            what = action and (action.help or (action.choices and ", ".join(map(str, action.choices))))
            text += f" ({what})" if what and what != argparse.SUPPRESS else ""
        self.exit(2, f"{self.prog}: error: {text}; see '{self.prog} --help'\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="scgan",
        description="Anomaly detection for images of industrial products: fit on normal images, score new ones, "
                    "reproduce the SCGAN paper.",
    )
    parser.add_argument("--version", action="version", version=f"scgan {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.help)
        command.add_arguments(p)
        p.set_defaults(command_parser=p)  # so that main() can show a subcommand's own usage
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # the subcommand's own error line, not the top level's, and a hint for key=value where none is taken
        command_parser = getattr(args, "command_parser", parser)
        hint = ""
        if any("=" in e and not e.startswith("-") for e in extra) and args.command in COMMANDS \
                and not COMMANDS[args.command].takes_settings:
            hint = (f"; 'scgan {args.command}' takes no key=value settings (the model's config is used), "
                    "only its options")
        command_parser.error(f"unrecognized arguments: {' '.join(extra)}{hint}")
    if args.command is None:
        parser.print_help()
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    from scgan.utils.runinfo import git_commit

    git_commit()  # results record the commit this invocation started from, not the one HEAD is at when it ends
    try:
        return COMMANDS[args.command].run(args)
    except KeyboardInterrupt:
        print("scgan: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 — the CLI's one clean line; --debug shows the traceback
        if args.debug:
            raise
        print(f"scgan {args.command}: error: {one_line(e)}", file=sys.stderr)
        return int(getattr(e, "exit_code", 1))  # 1, or the signal's code for a stopped training (143, 130)


if __name__ == "__main__":
    sys.exit(main())
