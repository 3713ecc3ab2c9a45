"""Every subcommand of the training package, in one place: synth, train, evaluate, ablation, export.

Building the parser imports nothing heavy: the handlers import torch, torchvision and LightGBM
when they run, so `oanet --help` stays fast.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from oanet.contracts import SPLITS
from oanet.profile import DEFAULT_PROFILE_PATH, PROFILE_FILENAME

# Mirrors of training.encoders.ENCODERS, training.bagging.KINDS and training.data.FEATURE_SOURCES
# (tests check they agree), kept here so building the parser imports nothing heavy.
ENCODERS = ("compact", "compact-multiscale", "compact-array", "resnet18", "vgg16", "alexnet")
# Windows a patch memory of a 1,000-frame data set keeps well (training/patch_memory.py; here so
# --help stays light).
SUGGESTED_BANK_SIZE = 10_000
OPTIMIZERS = ("sgd", "adamw")
AUGMENTS = ("dihedral", "flips", "none")
KEEP_BEST = "best"  # training.cnn's KEEP_BEST, KEEPS
KEEPS = (KEEP_BEST, "last")
AUTO_AUGMENT = "auto"
ANISOTROPY_LIMIT = 1.2  # training.cnn's
AUTO_ENCODER = "auto"
ARRAY_PERIODICITY = 0.3  # training.cnn's
TREE_KINDS = ("gbdt", "dart", "goss", "rf")
FEATURE_SOURCES = ("truth", "ocr")


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
    _register_train(subparsers)
    _register_evaluate(subparsers)
    _register_ablation(subparsers)
    _register_export(subparsers)


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
# Heavy imports (torch, torchvision, LightGBM) stay in the handlers.


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Model/training options, shared by `train` and `ablation`."""
    parser.add_argument("--encoder", choices=(AUTO_ENCODER, *ENCODERS), default=AUTO_ENCODER,
                        help="image encoder: 'compact' = a small VGG-style CNN with global max pooling that learns "
                        "from scratch on CPU in minutes; 'compact-array' = the same reading, beside the ROI, how "
                        "unlike its neighbouring cells each pixel is (cell-to-cell comparison, for parts that "
                        "repeat a cell: BGA balls, dies); 'compact-multiscale' = compact plus a context path "
                        "of two more stages for large, low-contrast defects; resnet18, "
                        "vgg16 (with batch norm), alexnet = the paper's (torchvision, no pretrained weights; need "
                        "a GPU budget); 'auto' = compact-array where the good training objects repeat a cell "
                        f"(periodicity >= {ARRAY_PERIODICITY:g}), else compact (default auto)")
    parser.add_argument("--image-size", type=int, default=192, metavar="N",
                        help="object ROI side in pixels the CNN sees; the compact CNN's strided first convolution "
                        "takes a large ROI down to about 96 px, so small defects keep their contrast at little "
                        "extra cost (default 192)")
    parser.add_argument("--image-target", choices=("object", "label"), default="object",
                        help="what the image head learns: 'object' = object-caused defects only (parameter defects "
                        "are invisible in the object image), 'label' = every defect, as the paper (default object)")
    parser.add_argument("--image-pos-weight", default="balanced", metavar="W",
                        help="weight of the defect class in the image head's loss: 'balanced' = good/defect frame ratio "
                        "of the train split, or a number (1 = the plain loss) (default balanced)")
    parser.add_argument("--augment", choices=(AUTO_AUGMENT, *AUGMENTS), default=AUTO_AUGMENT,
                        help="CNN image symmetries: 'dihedral' = flips and 90-degree turns (square objects whose "
                        "defects look alike in any orientation), 'flips', 'none', or 'auto': dihedral unless the "
                        "good training objects' horizontal and vertical detail differ by more than "
                        f"{ANISOTROPY_LIMIT:g}x (an "
                        "orientation a turn would break, as Magnetic-tile's grinding streaks at 2x), then flips "
                        "(default auto)")
    parser.add_argument("--epochs", type=int, default=15, metavar="N", help="CNN epochs (default 15; the paper: 30)")
    parser.add_argument("--cnn-restarts", type=int, default=2, metavar="N",
                        help="restart the CNN with fresh initial weights when its validation AUROC is still under "
                        "0.65 after 4 epochs, at most N times; the epoch with the best validation AUROC over all "
                        "attempts is kept (default 2)")
    parser.add_argument("--cnn-patience", type=int, default=0, metavar="N",
                        help="stop the CNN after N epochs of an attempt without a better validation AUROC; the best "
                        "epoch is kept either way, so this only saves the epochs after it (default 0: train every "
                        "epoch)")
    parser.add_argument("--cnn-keep", choices=KEEPS, default=KEEP_BEST,
                        help="which CNN epoch is served: 'best' = the best validation AUROC over every attempt; "
                        "'last' = the last epoch trained (the learning rate has decayed to 0 there), for a "
                        "validation split with few object defects, where one frame moves the AUROC by several "
                        "points (default best)")
    parser.add_argument("--batch-size", type=int, default=32, metavar="N", help="CNN batch size (default 32)")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default=None,
                        help="CNN optimiser (default: the encoder's recipe: sgd for the paper's encoders, adamw for "
                        "compact)")
    parser.add_argument("--lr", type=float, default=None,
                        help="CNN learning rate (default: the encoder's recipe: 0.01 for sgd as the paper, 0.002 for "
                        "compact)")
    parser.add_argument("--weight-decay", type=float, default=None,
                        help="CNN weight decay (default: the encoder's recipe: 5e-4 as the paper, 1e-4 for compact)")
    parser.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    parser.add_argument("--embedding-dim", type=int, default=64, metavar="E", help="image embedding size (default 64)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    parser.add_argument("--no-align", dest="align", action="store_false", help="no feature-alignment loss")
    parser.add_argument("--align-loss", choices=("cosine", "infonce"), default="cosine",
                        help="alignment loss (default cosine, the paper's)")
    parser.add_argument("--align-weight", type=float, default=1.0, help="weight of the alignment loss (default 1)")
    parser.add_argument("--refine-rounds", type=int, default=2, metavar="R", help="PCA refinement rounds (default 2)")
    parser.add_argument("--no-refine", dest="refine_rounds", action="store_const", const=0,
                        help="no PCA feature refinement (same as --refine-rounds 0)")
    parser.add_argument("--pca-components", type=int, default=8, metavar="K", help="PCA components per round (default 8)")
    parser.add_argument("--no-gate", dest="gate", action="store_false",
                        help="no gate: the fused classifier's probability is the verdict")
    parser.add_argument("--gate-margin", type=float, default=2.0,
                        help="a modality is switched off above margin x the 99.5th percentile of validation KLs (default 2)")
    parser.add_argument("--gate-weights", default="auto", metavar="I,P,F",
                        help="'auto' (default): the gate adds the branches' logits with weights learned on the "
                        "validation frames as printed and with 60%% of the fields missing; or three base weights "
                        "of the image, params and fused branches: the gate then averages their probabilities "
                        "with the soft KL weights (docs/method.md)")
    parser.add_argument("--ocr-mask-rate", type=float, default=0.3, metavar="P",
                        help="mask learning: OCR-field dropout rate of the augmented copies (default 0.3)")
    parser.add_argument("--grid-mask", type=float, default=0.3, metavar="P",
                        help="mask learning: GridMask probability on the object images of the augmented copies "
                        "the fusion stage and its gate learn from (default 0.3)")
    parser.add_argument("--cnn-grid-mask", type=float, default=0.3, metavar="P",
                        help="GridMask probability on the CNN's own training images (default 0.3, the paper's). "
                        "0 lifted the faint defects on 1,500 frames (object AUROC 0.79 -> 0.84-0.90) but left "
                        "the demo's CNN at chance on 1,000 frames (docs/benchmarks.md): try 0 for a line whose "
                        "defects are faint and whose data set is large")
    parser.add_argument("--grid-mask-warmup", type=float, default=0.0, metavar="F",
                        help="share of the CNN epochs over which its GridMask probability (--cnn-grid-mask) rises "
                        "linearly from 0 to P (default 0: P from the first epoch)")
    parser.add_argument("--mask-copies", type=int, default=3, metavar="K",
                        help="augmented copies per frame for the bag and fusion stage (default 3)")
    parser.add_argument("--target-recall", type=float, default=0.95, help="operating-point recall on val (default 0.95)")
    parser.add_argument("--min-precision", type=float, default=0.9, metavar="P",
                        help="precision floor of the operating point on val: where the target recall costs more "
                        "false alarms, the threshold with the most recall at precision >= P (default 0.9; 0 = "
                        "recall only)")
    parser.add_argument("--synthetic-anomalies", type=float, default=0.0, metavar="P",
                        help="share of the good training images that get a synthetic local anomaly (blob, stroke, "
                        "moved patch) and count as defects for the CNN: more defect examples for a line with few "
                        "(default 0: off)")
    parser.add_argument("--patch-memory", type=int, default=0, metavar="N",
                        help="remember N windows of the good training frames (a frozen random CNN's 29 px window "
                        "descriptions) and add each frame's distance to the nearest remembered window to the image "
                        "logit, mixed on the validation frames: finds what no good frame shows (a missing ball, a "
                        f"stain) without defect examples; {SUGGESTED_BANK_SIZE} is a good start. It costs robustness "
                        "to image corruption (an occluded image looks unlike any good one; docs/benchmarks.md, "
                        "\"Patch memory\") (default 0: off)")
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds of the LightGBM bag (default 5)")
    parser.add_argument("--tree-kinds", default=",".join(TREE_KINDS), metavar="K,...",
                        help=f"LightGBM kinds of the bag (default {','.join(TREE_KINDS)})")
    parser.add_argument("--tree-rounds", type=int, default=100, metavar="N", help="boosting rounds (default 100)")
    parser.add_argument("--crossfit-folds", type=int, default=0, metavar="K",
                        help="train K extra fold CNNs so the fusion stage learns from out-of-fold image embeddings "
                        "(each frame embedded by a CNN that did not train on it), as its parameter input already is; "
                        "costs about K-1 more CNN trainings; 0 = off: in-sample embeddings (default 0)")
    parser.add_argument("--no-spec-features", dest="spec_features", action="store_false",
                        help="give the LightGBM bag the raw parameter values only, without the spec-range features "
                        "(per field with a spec: distance outside the range in range widths; count of out-of-spec "
                        "fields) (default: with them)")
    parser.add_argument("--fusion-epochs", type=int, default=30, metavar="N",
                        help="epochs of the alignment and fused-classifier stages (default 30)")
    parser.add_argument("--features", choices=FEATURE_SOURCES, default="ocr",
                        help="parameter features: 'truth' = the manifest's params (perfect OCR), 'ocr' = the OCR "
                        "stage's readings through its feature cache (default ocr)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="torch device (default cpu)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _register_train(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train the OANet model (CNN, LightGBM bag, alignment, refinement, gate) on a dataset",
        description="Train the image encoder on the profile's object ROI, the LightGBM intra-bag on the numeric "
        "OCR fields (5-fold CV), the alignment / PCA refinement / fused classifier and the KL gate, then pick the "
        "operating threshold on validation frames for the target recall at the precision floor. Resumable with --resume.",
    )
    p.add_argument("--data", type=Path, required=True, metavar="DIR", help="dataset folder (profile.yaml, manifest.jsonl)")
    p.add_argument("--out", type=Path, required=True, metavar="RUN", help="run folder to write")
    add_train_arguments(p)
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.set_defaults(func=_train)


def _register_evaluate(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="score a trained run on a dataset split (fused, image-only, params-only models)",
        description="Run the exported TorchScript CNN and the fusion core (the code Triton serves) on a split and "
        "print accuracy, precision, recall, F1 and AUROC per model; optional corruption: random OCR-field "
        "missingness and GridMask on the image.",
    )
    p.add_argument("--run", type=Path, required=True, metavar="RUN", help="run folder written by `oanet train`")
    p.add_argument("--data", type=Path, required=True, metavar="DIR", help="dataset folder")
    p.add_argument("--split", choices=SPLITS, default="test", help="split to score (default test)")
    p.add_argument("--ocr-missing", type=float, default=0.0, metavar="P",
                   help="turn each present OCR field missing with probability P (default 0)")
    p.add_argument("--grid-mask", type=float, default=0.0, metavar="P",
                   help="apply GridMask to each object image with probability P (default 0)")
    only = p.add_mutually_exclusive_group()
    only.add_argument("--image-only", action="store_true", help="report the image-only model only")
    only.add_argument("--params-only", action="store_true", help="report the parameter (LightGBM bag) model only")
    p.add_argument("--features", choices=FEATURE_SOURCES, help="parameter features (default: the run's)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the corruption (default 0)")
    p.add_argument("--out", type=Path, metavar="FILE", help="metrics JSON file (default RUN/eval-<split>.json)")
    p.add_argument("--predictions", type=Path, metavar="FILE",
                   help="also write the per-frame predictions as CSV: id, label, cause, and per model its "
                   "probability and its verdict at the operating threshold (the rows behind the confusion matrices)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="torch device (default cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_evaluate)


def _register_ablation(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "ablation",
        help="reproduce the paper's Table 1 (encoder x alignment x refinement x gate) and Table 2 (robustness)",
        description="For each encoder and repeat: train the CNN and the LightGBM bag once, then every fusion "
        "variant; score on the test split clean, with random OCR missingness, with GridMask and both. Writes "
        "table1.md, table2.md, results.json and PNG plots (PR curves, confusion matrices, gate weights).",
    )
    p.add_argument("--data", type=Path, required=True, metavar="DIR", help="dataset folder")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="report folder to write")
    p.add_argument("--repeats", type=int, default=5, metavar="N", help="repeats with different seeds (default 5)")
    p.add_argument("--encoders", nargs="+", choices=(AUTO_ENCODER, *ENCODERS), default=[AUTO_ENCODER],
                   metavar="ENC", help=f"image encoders among {AUTO_ENCODER}, {', '.join(ENCODERS)} ('auto' as "
                   "in train, chosen on the training split) (default auto)")
    p.add_argument("--missing-rate", type=float, default=0.6, metavar="P",
                   help="Table 2: share of OCR fields made missing (default 0.6, the paper's)")
    p.add_argument("--eval-grid-mask", type=float, default=1.0, metavar="P",
                   help="Table 2: probability of GridMask on each test image (default 1)")
    add_train_arguments(p)
    p.set_defaults(func=_ablation)


def _register_export(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="write a trained run into a versioned Triton model repository with a sha256 manifest",
        description="Write oanet_image_encoder (TorchScript), oanet_fusion (Python backend: core.py + JSON/npz/"
        "LightGBM-text artifacts) and the oanet ensemble as version N of REPO; versions accumulate, nothing is "
        "overwritten. --verify only checks an existing version against its manifest.",
    )
    p.add_argument("--run", type=Path, metavar="RUN", help="run folder written by `oanet train`")
    p.add_argument("--repo", type=Path, required=True, metavar="REPO", help="model repository folder")
    p.add_argument("--version", type=int, metavar="N", help="version to write (default: the next free one)")
    p.add_argument("--cnn-backend", choices=("python", "libtorch"), default="python",
                   help="serve the CNN with the Python backend (pip Triton) or libtorch (NGC container); default python")
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="instance kind (default cpu)")
    p.add_argument("--max-batch", type=int, default=64, metavar="N", help="max batch size (default 64)")
    p.add_argument("--instances", type=int, default=1, metavar="N", help="instances per model (default 1)")
    p.add_argument("--preferred-batch-sizes", type=_int_list, metavar="N,N,...",
                   help="dynamic batching: batch sizes the scheduler aims for "
                   "(default 16,32,64, those up to --max-batch)")
    p.add_argument("--max-queue-delay-us", type=int, default=1000, metavar="US",
                   help="dynamic batching: longest wait for a preferred batch size, microseconds (default 1000)")
    p.add_argument("--cpu-threads", type=int, default=1, metavar="N",
                   help="torch/LightGBM threads per instance; 0: the cores shared out among the instances "
                   "(default 1: scale with --instances)")
    p.add_argument("--recognizer", type=Path, metavar="DIR",
                   help="also export this line's distilled OCR recogniser (`oanet ocr distill --out DIR`) into the "
                   "version, hashed in its manifest; the worker's OCR processes read it from there (worker.student), "
                   "and Triton serves it as oanet_ocr_student (worker.student_inference=triton)")
    p.add_argument("--verify", action="store_true", help="verify version --version (default latest) of REPO and exit")
    p.set_defaults(func=_export)


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _train(args: argparse.Namespace) -> int:
    from oanet.allocator import keep_freed_memory
    from training.train import main

    keep_freed_memory()  # less wall time on CPU, the same weights (oanet/allocator.py)
    return main(args)


def _evaluate(args: argparse.Namespace) -> int:
    from training.evaluate import main

    return main(args)


def _ablation(args: argparse.Namespace) -> int:
    from oanet.allocator import keep_freed_memory
    from training.ablation import main

    keep_freed_memory()
    return main(args)


def _export(args: argparse.Namespace) -> int:
    from training.export import main

    return main(args)
