"""Top-level subcommands: `config` and `dataset import`. The flag-to-settings helpers every package
uses live in `oanet.flags`; `oanet demo`, which composes every stage, is registered beside the
embedded stack (deploy/embedded/commands.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from oanet.flags import add_settings_flags, settings_from_args


def register(subparsers: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    config = subparsers.add_parser("config", help="print the effective settings (secrets masked)")
    config.add_argument("--json", action="store_true", help="print JSON instead of OANET_* lines")
    add_settings_flags(config, kafka=True, triton=True, stack=True)
    config.set_defaults(func=_config)

    dataset = subparsers.add_parser("dataset", help="dataset folder tools: import a line's real frames",
                                    description="Tools for dataset folders (profile.yaml, manifest.jsonl, images/).")
    actions = dataset.add_subparsers(dest="dataset_action", metavar="ACTION", required=True)
    imp = actions.add_parser(
        "import", help="build a dataset folder from real frames and a labels CSV, validating every line",
        description="Copy a line's frames into a dataset folder (the format `oanet synth` writes and train, "
        "evaluate, ocr and replay read) and validate it. The CSV has a header row: image (path relative to "
        "--images), label (0/1), optional defect ('object:<kind>', 'param:<field>[,<field>...]' or empty), "
        "split (train/val/test), group (frames of one board or lot: they never straddle splits) and parameter "
        "columns named as the profile's fields. Frames without parameter columns are read by OCR at training "
        "time. Frames without a split are split 70/15/15 by group, deterministic by --seed. Every bad line "
        "stops the import with its line number; nothing is written unless every frame is good.",
    )
    imp.add_argument("--images", type=Path, required=True, metavar="DIR", help="folder the CSV's image paths start from")
    imp.add_argument("--labels", type=Path, required=True, metavar="CSV", help="labels CSV (see above)")
    imp.add_argument("--profile", type=Path, required=True, metavar="FILE",
                     help="line profile YAML of the machine that took the frames")
    imp.add_argument("--out", type=Path, required=True, metavar="DIR", help="dataset folder to write")
    imp.add_argument("--seed", type=int, default=0, metavar="S",
                     help="seed of the split of frames without one (default 0)")
    imp.add_argument("--overwrite", action="store_true", help="replace a non-empty --out (only once the import succeeded)")
    imp.add_argument("--quiet", action="store_true", help="no progress bar")
    imp.set_defaults(func=_dataset_import)


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


def _dataset_import(args: argparse.Namespace) -> int:
    from oanet.dataset_import import import_dataset
    from oanet.profile import load_profile

    result = import_dataset(args.images, args.labels, load_profile(args.profile), args.out, seed=args.seed,
                            overwrite=args.overwrite, progress=not args.quiet)
    splits = ", ".join(f"{name} {good + defect} ({defect} defect)" for name, (good, defect) in result.split_counts.items())
    print(f"imported {result.frames} frames to {result.root} in {result.seconds:.1f} s: {splits}")
    print(f"parameters: from the CSV for {result.with_params} frame(s); "
          f"{result.frames - result.with_params} read by OCR at training (--features ocr, the default)"
          + (f"; {result.converted} frame(s) stored as PNG" if result.converted else ""))
    for name in ("train", "val"):
        good, defect = result.split_counts[name]
        if not good or not defect:
            print(f"note: the {name} split has {good} good and {defect} defect frames; training needs both")
    return 0
