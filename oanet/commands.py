"""Top-level subcommands: `config`, and `demo` (which composes every stage). The flag-to-settings
helpers every package uses live in `oanet.flags`."""

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

    demo = subparsers.add_parser(
        "demo", help="the main job on the embedded stack, from nothing (see README)",
        description="Synthetic dataset, a short CPU training, export, the embedded stack (broker + Triton) on free "
        "ports, N stream workers, the held-out frames played like cameras, live progress, then a summary (verdicts, "
        "dead letters, accuracy/recall/precision against the ground truth, frames/s, latency) and everything it "
        "started stopped, also on Ctrl-C or an error. Each run starts from nothing in a temporary folder.",
    )
    demo.add_argument("--data", type=Path, metavar="DIR", help="use this dataset folder instead of a synthetic one")
    demo.add_argument("--run", type=Path, metavar="RUN", help="use this training run instead of training")
    demo.add_argument("--repo", type=Path, metavar="REPO",
                      help="serve this model repository (its latest version) instead of training and exporting")
    demo.add_argument("--frames", type=int, default=400, metavar="N", help="frames of the synthetic dataset (default 400)")
    demo.add_argument("--workers", type=int, default=2, metavar="N", help="stream worker processes (default 2)")
    demo.add_argument("--ocr-processes", type=int, default=1, metavar="N", help="OCR processes per worker (default 1)")
    demo.add_argument("--lines", type=int, default=0, metavar="N",
                      help="play the frames as N lines (default: one per partition of the frames topic)")
    demo.add_argument("--replay", type=int, metavar="N", help="frames to play (default: the test split once)")
    demo.add_argument("--rate", type=float, default=0.0, metavar="FPS", help="replay rate (default 0: at once)")
    demo.add_argument("--work-dir", type=Path, metavar="DIR",
                      help="keep the dataset, run, repository and logs here (default: a temporary folder, removed)")
    demo.add_argument("--external", action="store_true",
                      help="use the broker and Triton of the settings (OANET_KAFKA__BOOTSTRAP_SERVERS, "
                      "OANET_TRITON__URL, or the flags below) instead of the embedded stack; topics of this run are "
                      "created there and deleted at the end; without --repo the workers read the dataset's profile")
    add_settings_flags(demo, kafka=True, triton=True)
    demo.add_argument("--timeout", type=float, default=600.0, metavar="S",
                      help="longest wait for every verdict (default 600)")
    demo.set_defaults(func=_demo)

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


def _demo(args: argparse.Namespace) -> int:
    from oanet.demo import DemoOptions, run_demo

    options = DemoOptions(work_dir=args.work_dir, data=args.data, run=args.run, repo=args.repo, frames=args.frames,
                          workers=args.workers, ocr_processes=args.ocr_processes, lines=args.lines,
                          replay=args.replay, rate=args.rate, external=args.external, timeout_s=args.timeout)
    return run_demo(settings_from_args(args), options)


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
