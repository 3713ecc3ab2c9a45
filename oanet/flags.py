"""Command-line flags that override settings, shared by every package's subcommands.

A flag that overrides a setting is declared with `dest="<section>.<key>"`; `settings_from_args`
turns every such flag that was given into the nested overrides of `load_settings`. It sits at the
bottom beside the settings so that stage packages (stream, training, deploy) can declare flags
without importing the top-level commands (which compose the stages: `demo`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from oanet.settings import Settings, load_settings

_OVERRIDE_PREFIX = "setting:"


def add_setting_flag(parser: argparse.ArgumentParser, flag: str, setting: str, **kwargs: Any) -> None:
    """Add `flag` overriding the dotted `setting` (e.g. "stack.broker_port")."""
    parser.add_argument(flag, dest=_OVERRIDE_PREFIX + setting, default=None, **kwargs)


def setting_flag_value(args: argparse.Namespace, setting: str) -> Any:
    """The value given on the command line for `setting`'s flag, or None."""
    return getattr(args, _OVERRIDE_PREFIX + setting, None)


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
