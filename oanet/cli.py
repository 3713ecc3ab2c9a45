"""The `oanet` console script.

Each package registers its own subcommands (a `commands.py` with `register(subparsers,
bench)`), and imports heavy libraries (torch, PaddleOCR) only inside the handler, so `oanet
--help` and light commands start fast. A handler returns an exit code; predictable failures
raise `OanetError` and become one line on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from oanet import __version__, logsecrets
from oanet.errors import ConfigError, OanetError
from oanet.settings import load_settings

COMMAND_MODULES = (
    "oanet.commands",
    "deploy.embedded.commands",
    "stream.commands",
    "training.commands",
    "deploy.tools.commands",
    "bench.commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="oanet",
        description="OANet streaming inspection: OCR-guided multimodal defect detection for AOI lines.",
        epilog="Settings come from OANET_* environment variables and .env; flags override them. "
        "See `oanet config`.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details to stderr")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    bench_parser = subparsers.add_parser("bench", help="benchmarks that print their figures")
    bench = bench_parser.add_subparsers(dest="bench", metavar="BENCHMARK", required=True)
    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        module.register(subparsers, bench)
    _accept_verbose_everywhere(parser)
    return parser


def _accept_verbose_everywhere(parser: argparse.ArgumentParser) -> None:
    """`-v` after the subcommand too (`oanet topics create -v`), as users type it. SUPPRESS keeps a
    subcommand that was not given `-v` from resetting the top-level flag."""
    for action in parser._actions:  # noqa: SLF001 - argparse has no public walk over subparsers
        if not isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            continue
        for sub in action.choices.values():
            if "--verbose" not in sub._option_string_actions:  # noqa: SLF001
                sub.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                                 help="log debug details to stderr")
            _accept_verbose_everywhere(sub)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        # Secrets come only from the environment and .env (no flag sets one): known before any
        # command logs. Invalid settings are the command's to report.
        logsecrets.watch(load_settings())
    except ConfigError:
        pass
    try:
        return int(args.func(args) or 0)
    except OanetError as exc:
        print(f"oanet {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"oanet {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`oanet config | head`): not an error of ours. Point stdout at
        # /dev/null so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
