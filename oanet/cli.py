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
    "triton_models.commands",
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
    return parser


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
