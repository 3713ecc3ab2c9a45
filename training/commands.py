"""Subcommands of the training package (synth; train, evaluate, ablation, export as they land)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from oanet.profile import DEFAULT_PROFILE_PATH, PROFILE_FILENAME



def register(subparsers: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    synth = subparsers.add_parser(
        "synth",
        help="generate a synthetic AOI dataset folder (profile.yaml, manifest.jsonl, images/)",
        description="Generate synthetic AOI frames of a semiconductor package line with printed machine "
        "parameters, object and parameter defects and capture nuisances. Deterministic by --seed.",
    )
    synth.add_argument("--out", type=Path, required=True, metavar="DIR", help="dataset folder to write")
    synth.add_argument("--n", type=int, required=True, metavar="N", help="number of frames")
    synth.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    synth.add_argument("--width", type=int, metavar="W", help="frame width (default: the profile's)")
    synth.add_argument("--height", type=int, metavar="H", help="frame height (default: the profile's)")
    synth.add_argument("--defect-rate", type=float, default=0.40, metavar="P",
                       help="share of defective frames, object and parameter causes (default 0.40)")
    synth.add_argument("--package", choices=("bga", "wirebond", "mixed"), default="bga",
                       help="package type the line inspects: 'bga' (ball side), 'wirebond' (die, wires) or "
                       "'mixed' (either, per frame, as before; harder for the image model) (default bga)")
    synth.add_argument("--objects", type=Path, metavar="DIR",
                       help="put real object images into the object ROI instead of drawn packages: a folder per "
                       "class (one named like free/good/ok/MT_Free holds good objects, every other is a defect kind, "
                       "e.g. the Magnetic-tile set's MT_<Class>/Imgs; --package does not apply); parameters and panel as without it "
                       "(docs/real-data.md)")
    synth.add_argument("--profile", type=Path, metavar="FILE",
                       help="line profile YAML (default: the built-in line-a profile)")
    synth.add_argument("--preview", type=Path, metavar="FILE.png", help="also write a grid of 12 thumbnails")
    synth.add_argument("--format", dest="image_format", choices=("png", "jpeg"), default="png",
                       help="image file format (default png)")
    synth.add_argument("--workers", type=int, metavar="K", help=f"worker processes (default: {os.cpu_count()})")
    synth.add_argument("--overwrite", action="store_true", help="replace a dataset already in --out")
    synth.set_defaults(func=_synth)
    register_models(subparsers)


def _synth(args: argparse.Namespace) -> int:
    from oanet.dataset import load_dataset
    from oanet.profile import load_profile
    from training.synth.generate import SynthError, generate, write_preview

    if args.preview is not None and args.preview.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise SynthError(f"--preview must name a .png or .jpg file, got {args.preview}")
    if args.profile is not None and args.profile.is_dir() and not (args.profile / PROFILE_FILENAME).is_file():
        raise SynthError(f"--profile {args.profile} is a folder without {PROFILE_FILENAME}")
    profile = load_profile(args.profile or DEFAULT_PROFILE_PATH)
    bank = None
    if args.objects is not None:
        from training.synth.objects import scan_objects

        bank = scan_objects(args.objects)
        print(f"objects from {args.objects}: {bank.summary()} images")
    result = generate(
        args.out,
        profile,
        args.n,
        args.seed,
        defect_rate=args.defect_rate,
        width=args.width,
        height=args.height,
        image_format=args.image_format,
        workers=args.workers,
        overwrite=args.overwrite,
        package=args.package,
        objects=bank,
    )
    causes = ", ".join(f"{k} {v}" for k, v in sorted(result.causes.items()))
    what = args.package if bank is None else "real-object"
    print(f"wrote {result.frames} {what} frames to {args.out} ({causes}; {result.nuisance_frames} with nuisance, "
          f"{result.smudged_frames} smudged)")
    if args.preview is not None:
        dataset = load_dataset(args.out)
        print(f"preview: {write_preview(args.out, dataset.entries, args.preview)}")
    print(f"{result.frames} frames in {result.seconds:.1f} s: {result.frames_per_second:.1f} frames/s "
          f"({result.frames_per_second * 60:.0f} frames/min)")
    return 0


# --------------------------------------------------------------------------- train, evaluate, ablation, export
# Registered by `register_models` (called from `register`); heavy imports stay in the handlers.


def register_models(subparsers: argparse._SubParsersAction) -> None:
    from training.options import add_ablation_parser, add_evaluate_parser, add_export_parser, add_train_parser

    add_train_parser(subparsers)
    add_evaluate_parser(subparsers)
    add_ablation_parser(subparsers)
    add_export_parser(subparsers)
