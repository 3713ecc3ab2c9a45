"""Top-level subcommands (`config`, `demo`) and the flag-to-settings plumbing every package uses.

A flag that overrides a setting is declared with `dest="<section>.<key>"`; `settings_from_args`
turns every such flag that was given into the nested overrides of `load_settings`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from oanet.settings import Settings, load_settings

_OVERRIDE_PREFIX = "setting:"


def add_setting_flag(parser: argparse.ArgumentParser, flag: str, setting: str, **kwargs: Any) -> None:
    """Add `flag` overriding the dotted `setting` (e.g. "stack.broker_port")."""
    parser.add_argument(flag, dest=_OVERRIDE_PREFIX + setting, default=None, **kwargs)


def add_settings_flags(
    parser: argparse.ArgumentParser, *, kafka: bool = False, triton: bool = False, stack: bool = False
) -> None:
    if kafka:
        add_setting_flag(parser, "--bootstrap-servers", "kafka.bootstrap_servers", metavar="HOST:PORT[,...]",
                         help="Kafka bootstrap servers (default: the embedded broker)")
    if triton:
        add_setting_flag(parser, "--triton-url", "triton.url", metavar="HOST:PORT",
                         help="Triton gRPC endpoint (default: the embedded Triton)")
    if stack:
        add_setting_flag(parser, "--state-dir", "stack.state_dir", type=Path, metavar="DIR",
                         help="folder for the embedded stack's PIDs, logs and runtime files")


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    for dest, value in vars(args).items():
        if not dest.startswith(_OVERRIDE_PREFIX) or value is None:
            continue
        section, key = dest.removeprefix(_OVERRIDE_PREFIX).split(".", 1)
        overrides.setdefault(section, {})[key] = value
    return load_settings(**overrides)


def register(subparsers: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    config = subparsers.add_parser("config", help="print the effective settings (secrets masked)")
    config.add_argument("--json", action="store_true", help="print JSON instead of OANET_* lines")
    add_settings_flags(config, kafka=True, triton=True, stack=True)
    config.set_defaults(func=_config)

    demo = subparsers.add_parser(
        "demo", help="the main job on the embedded stack, from nothing (see README)"
    )
    add_settings_flags(demo, stack=True)
    add_setting_flag(demo, "--broker-port", "stack.broker_port", type=int, metavar="PORT",
                     help="port of the embedded broker")
    demo.set_defaults(func=_demo)


def _flatten(prefix: str, value: Any) -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        items: list[tuple[str, Any]] = []
        for key, inner in value.items():
            items += _flatten(f"{prefix}__{key.upper()}" if prefix else key.upper(), inner)
        return items
    return [(prefix, value)]


def _config(args: argparse.Namespace) -> int:
    data = settings_from_args(args).masked()
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    for name, value in _flatten("", data):
        shown = "" if value is None else (json.dumps(value) if isinstance(value, list) else value)
        print(f"OANET_{name}={shown}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from oanet.demo import run_demo

    return run_demo(settings_from_args(args))
