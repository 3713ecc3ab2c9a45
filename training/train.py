"""`oanet train`: image encoder -> LightGBM bag -> alignment/refinement/fused classifier -> gate
calibration and operating threshold -> a run folder that `evaluate` and `export` read.

Run folder:
```
RUN/args.json              the arguments (also inside the checkpoint)
RUN/checkpoint.pt          resumable: args, stage, epoch, CNN + optimizer state, history
RUN/metrics.json           training history and validation metrics per model
RUN/model/image_encoder.pt TorchScript CNN: uint8 [N, S, S, 3] BGR -> (embedding, image logit)
RUN/model/fusion/          fusion.json, fusion_weights.npz, trees/*.txt (read by the fusion core)
RUN/model/profile.yaml     the line profile the model was trained for
```

Over 400 lines on purpose: the training stages in the order they run, with the checkpoint that
resumes them; what evaluate and export share (outputs, metrics) lives in outputs.py.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training import data as data_mod
from training.augment import grid_mask, ocr_dropout
from training.bagging import KINDS, TreeBag, fit_bag, frame_folds
from training.cnn import (ANISOTROPY_LIMIT, ARRAY_PERIODICITY, AUTO_AUGMENT, AUTO_ENCODER, AUTO_ENCODER_IMAGES,
                          KEEP_BEST, BestEpoch, Restarts, build_encoder, choose_encoder, choose_symmetries, extract,
                          image_scored, image_targets, make_optimizer, train_cnn)
from training.crossfit import FoldEncoders, crossfit
from training.data import DataBundle, Frames
from training.encoders import MIN_IMAGE_SIZE, RECIPES, ImageEncoder
from training.errors import TrainingError
from training.fusion import (
    FusionOptions,
    FusionRows,
    fit_calibration,
    fit_combination,
    fit_fusion,
    reference_stats,
    operating_threshold,
)
from training.outputs import ENCODER_FILE, FUSION_DIR, MODEL_DIR, model_metrics, predict, write_json
from training.patch_memory import MIN_BANK_SIZE, MemoryReport, MemoryScoredEncoder, attach
from triton_models.oanet_fusion import core

CHECKPOINT = "checkpoint.pt"

# Arguments that define a run (everything `train` accepts except where output goes and how).
RUN_ARGS = (
    "encoder", "image_size", "epochs", "batch_size", "optimizer", "lr", "weight_decay", "momentum", "embedding_dim", "seed",
    "align", "align_loss", "align_weight", "refine_rounds", "pca_components", "gate", "gate_margin",
    "gate_weights", "ocr_mask_rate", "grid_mask", "mask_copies", "target_recall", "min_precision", "folds", "tree_kinds",
    "tree_rounds", "features", "fusion_epochs", "image_target", "image_pos_weight", "augment", "cnn_grid_mask",
    "grid_mask_warmup",
    "spec_features", "crossfit_folds", "cnn_restarts", "synthetic_anomalies", "patch_memory", "cnn_patience",
    "cnn_keep",
)


def recipe_encoder(name: str) -> str:
    """The encoder whose recipe and size limit `name` has: 'auto' chooses between compact CNNs,
    which share both."""
    return "compact" if name == AUTO_ENCODER else name


def apply_recipe(args: argparse.Namespace) -> None:
    """Fill the optimiser settings the user left unset from the encoder's recipe."""
    recipe = RECIPES[recipe_encoder(args.encoder)]
    for key in ("optimizer", "lr", "weight_decay"):
        if getattr(args, key, None) is None:
            setattr(args, key, getattr(recipe, key))


def validate_args(args: argparse.Namespace) -> None:
    apply_recipe(args)
    min_size = MIN_IMAGE_SIZE[recipe_encoder(args.encoder)]
    checks = [
        (args.lr > 0, "--lr must be positive"),
        (args.weight_decay >= 0, "--weight-decay must be >= 0"),
        (args.image_size >= min_size, f"--image-size must be at least {min_size} for {args.encoder}"),
        (args.image_size <= 1024, "--image-size must be at most 1024"),
        (args.epochs >= 1, "--epochs must be at least 1"),
        (args.cnn_restarts >= 0, "--cnn-restarts must be >= 0"),
        (args.cnn_patience >= 0, "--cnn-patience must be >= 0 (0: off)"),
        (args.cnn_keep == KEEP_BEST or args.cnn_patience == 0,
         "--cnn-patience stops after the best epoch, so it cannot be used with --cnn-keep last"),
        (args.batch_size >= 2, "--batch-size must be at least 2"),
        (args.embedding_dim >= 2, "--embedding-dim must be at least 2"),
        (args.refine_rounds >= 0, "--refine-rounds must be >= 0"),
        (args.pca_components >= 1, "--pca-components must be >= 1"),
        (0.0 <= args.ocr_mask_rate <= 1.0, "--ocr-mask-rate must be in [0, 1]"),
        (0.0 <= args.grid_mask <= 1.0, "--grid-mask must be in [0, 1]"),
        (0.0 <= args.cnn_grid_mask <= 1.0, "--cnn-grid-mask must be in [0, 1]"),
        (0.0 <= args.grid_mask_warmup <= 1.0, "--grid-mask-warmup must be in [0, 1]"),
        (args.mask_copies >= 0, "--mask-copies must be >= 0"),
        (0.0 < args.target_recall <= 1.0, "--target-recall must be in (0, 1]"),
        (0.0 <= args.min_precision <= 1.0, "--min-precision must be in [0, 1]"),
        (0.0 <= args.synthetic_anomalies <= 1.0, "--synthetic-anomalies must be in [0, 1]"),
        (args.patch_memory == 0 or args.patch_memory >= MIN_BANK_SIZE,
         f"--patch-memory must be 0 (off) or at least {MIN_BANK_SIZE} windows"),
        (args.folds >= 2, "--folds must be at least 2"),
        (args.crossfit_folds == 0 or args.crossfit_folds >= 2, "--crossfit-folds must be 0 (off) or at least 2"),
        (args.tree_rounds >= 1, "--tree-rounds must be at least 1"),
        (args.fusion_epochs >= 1, "--fusion-epochs must be at least 1"),
        (args.gate_margin >= 1.0, "--gate-margin must be >= 1"),
    ]
    for ok, message in checks:
        if not ok:
            raise TrainingError(message)
    kinds = tree_kinds(args)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise TrainingError(f"--tree-kinds must name some of {', '.join(KINDS)}, got {args.tree_kinds!r}")
    gate_weights(args)
    image_pos_weight(args)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise TrainingError("--device cuda requested but torch sees no CUDA device")


def image_pos_weight(args: argparse.Namespace) -> float | None:
    """--image-pos-weight: None for "balanced", else the number."""
    value = str(args.image_pos_weight).strip().lower()
    if value == "balanced":
        return None
    try:
        weight = float(value)
    except ValueError:
        weight = -1.0
    if not weight > 0:
        raise TrainingError(f"--image-pos-weight must be 'balanced' or a positive number, got {args.image_pos_weight!r}")
    return weight


def tree_kinds(args: argparse.Namespace) -> tuple[str, ...]:
    return tuple(k.strip() for k in str(args.tree_kinds).split(",") if k.strip())


def gate_weights(args: argparse.Namespace) -> dict[str, float] | None:
    """Explicit base weights, or None for "auto" (chosen on validation frames)."""
    if str(args.gate_weights).strip().lower() == "auto":
        return None
    try:
        parts = [float(v) for v in str(args.gate_weights).split(",")]
    except ValueError:
        parts = []
    if len(parts) != 3 or min(parts) < 0 or sum(parts) <= 0:
        raise TrainingError(f"--gate-weights must be 'auto' or three non-negative numbers I,P,F, "
                            f"got {args.gate_weights!r}")
    return dict(zip(core.BRANCHES, parts, strict=True))


def fusion_options(args: argparse.Namespace) -> FusionOptions:
    return FusionOptions(
        align=args.align, align_loss=args.align_loss, align_weight=args.align_weight,
        refine_rounds=args.refine_rounds, pca_components=args.pca_components, gate=args.gate,
        gate_margin=args.gate_margin, base_weights=gate_weights(args) or dict(DEFAULT_BASE_WEIGHTS),
        auto_base_weights=gate_weights(args) is None, epochs_align=args.fusion_epochs,
        epochs_fused=args.fusion_epochs, seed=args.seed,
    )


def run_args(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in RUN_ARGS}


# --------------------------------------------------------------------------- stages


@dataclass
class ImageStage:
    """What the fusion variants of one run share: the CNN, the bag and the fusion table.
    `model` is the served image encoder: `cnn` itself, or `cnn` with its patch memory."""

    model: ImageEncoder | MemoryScoredEncoder
    history: list
    best: BestEpoch
    rows: FusionRows
    bag: TreeBag
    ref: dict[str, np.ndarray]
    val_embedding: np.ndarray
    val_logit: np.ndarray
    crossfit: dict | None = None  # FoldEncoders.summary with --crossfit-folds
    memory: MemoryReport | None = None  # with --patch-memory
    cnn: ImageEncoder | None = None  # the trained CNN alone (what the checkpoint keeps); None: `model` is it
    val_views: list[ValidationView] | None = None  # the gate's learned combination (`validation_views`)

    @property
    def trained_cnn(self) -> ImageEncoder:
        return self.model if self.cnn is None else self.cnn


def set_seed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


def build_rows(model: ImageEncoder, train: Frames, args: argparse.Namespace, progress: bool = True,
               embed: Callable[[np.ndarray], np.ndarray] | None = None) -> FusionRows:
    """Copy 0 = clean frames; copies 1..K = OCR dropout + GridMask (mask learning). `embed` maps
    the train frames' ROIs to embeddings (default: `model`'s; cross-fitted: out-of-fold)."""
    embs, values, missing, labels, frames = [], [], [], [], []
    for copy in range(args.mask_copies + 1):
        if copy == 0:
            rois, v, m = train.rois, train.values, train.missing
        else:
            rng = np.random.default_rng([args.seed, 1000 + copy])
            rois, _ = grid_mask(train.rois, args.grid_mask, rng)
            v, m = ocr_dropout(train.values, train.missing, args.ocr_mask_rate, rng)
        e = extract(model, rois, args.device)[0] if embed is None else embed(rois)
        embs.append(e)
        values.append(np.where(m, np.nan, v).astype(np.float32))
        missing.append(m)
        labels.append(train.labels)
        frames.append(np.arange(len(train)))
    return FusionRows(np.concatenate(embs), np.concatenate(values), np.concatenate(missing),
                      np.concatenate(labels), np.concatenate(frames))


def fresh_cnn(train: Frames, args: argparse.Namespace) -> tuple[ImageEncoder, torch.optim.Optimizer]:
    """An untrained encoder (normalised with `train`'s ROI statistics) and its optimiser; `--encoder
    auto` is resolved on `train` first, whoever builds the CNN."""
    resolve_encoder(args, train)
    model = build_encoder(args.encoder, args.embedding_dim, train.rois).to(args.device)
    return model, make_optimizer(model, args.lr, args.weight_decay, args.momentum, args.optimizer)


def cnn_options(args: argparse.Namespace) -> dict[str, Any]:
    """The `train_cnn` keyword options of a run: the served CNN and the cross-fitting CNNs share them."""
    return dict(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, grid_mask_p=args.cnn_grid_mask,
                seed=args.seed, device=args.device, target=args.image_target, pos_weight=image_pos_weight(args),
                augment=args.augment, grid_mask_warmup=args.grid_mask_warmup,
                restarts=Restarts(count=args.cnn_restarts), synthetic_anomalies=args.synthetic_anomalies,
                patience=args.cnn_patience, keep=args.cnn_keep)


def resolve_augment(args: argparse.Namespace, train: Frames) -> str | None:
    """Turn `--augment auto` into the symmetries the good training objects allow, in `args` (so the
    checkpoint and args.json record the choice); the line saying why, or None if there was no choice."""
    if args.augment != AUTO_AUGMENT:
        return None
    good = np.flatnonzero(train.labels == 0)[:AUTO_AUGMENT_IMAGES]  # indices: no copy of every good ROI
    args.augment, anisotropy = choose_symmetries(train.rois[good])
    why = ("their detail has an orientation a quarter turn would break" if args.augment == "flips"
           else "they look alike turned")
    return (f"augment auto: {args.augment} (good training objects' horizontal/vertical detail {anisotropy:.2f}, "
            f"limit {ANISOTROPY_LIMIT:g}x: {why})")


def resolve_encoder(args: argparse.Namespace, train: Frames) -> str | None:
    """Turn `--encoder auto` into the compact CNN the good training objects call for, in `args`
    (recorded like `resolve_augment`'s choice); the line saying why, or None if there was no choice."""
    if args.encoder != AUTO_ENCODER:
        return None
    good = np.flatnonzero(train.labels == 0)[:AUTO_ENCODER_IMAGES]
    args.encoder, periodicity = choose_encoder(train.rois[good])
    why = ("they repeat a cell: each pixel is compared with its neighbouring cells"
           if periodicity >= ARRAY_PERIODICITY else "they repeat no cell")
    return f"encoder auto: {args.encoder} (good training objects' periodicity {periodicity:.2f}, limit " \
           f"{ARRAY_PERIODICITY:g}: {why})"


# Good images `resolve_augment` measures: the ratio's spread over 150 frames was 0.02.
AUTO_AUGMENT_IMAGES = 256


def image_stage(bundle: DataBundle, args: argparse.Namespace, *, checkpoint: Path | None = None,
                resume: dict | None = None, progress: bool = True) -> ImageStage:
    """Train the CNN (resumable through `checkpoint`), build the fusion table, fit the bag."""
    set_seed(args.seed)
    train, val = bundle.splits["train"], bundle.splits["val"]
    resolve_augment(args, train)  # `main` has, and said so; the ablation's copies of the arguments come here
    model, optimizer = fresh_cnn(train, args)
    start, history, attempt, best = 0, [], 0, BestEpoch()
    if resume is not None:
        try:
            model.load_state_dict(resume["model"])
        except RuntimeError as exc:
            raise TrainingError(f"the checkpoint's CNN does not fit this version's encoder (written before the "
                                f"per-image normalisation or the strided stem?); start a new run: {exc}") from None
        if resume.get("optimizer") is not None:
            optimizer.load_state_dict(resume["optimizer"])
        start, history = int(resume["epoch"]), list(resume["history"])
        best = BestEpoch.from_checkpoint(resume.get("best"))
        if history:
            attempt = int(history[-1].get("attempt", 0)) + int(bool(history[-1].get("restart")))
            if history[-1].get("stopped"):  # stopped early (--cnn-patience): no epoch is left to train
                start = args.epochs

    def save(epoch: int, record: dict) -> None:
        history.append(record)
        if checkpoint is not None:
            save_checkpoint(checkpoint, args, "cnn", epoch + 1, model, optimizer, history, best=best)

    train_cnn(model, optimizer, train, val, start_epoch=start, on_epoch=save, progress=progress,
              attempt=attempt, best=best, **cnn_options(args))
    model.eval()
    folds_cnn = crossfit_cnns(model, train, val, args, progress)
    rows = build_rows(model, train, args, progress, embed=None if folds_cnn is None else folds_cnn.embed)
    folds = frame_folds(train.labels, args.folds, args.seed)
    tree_input = core.tree_features(rows.values, tree_spec_ranges(bundle, args))
    bag = fit_bag(tree_input, rows.labels, rows.frame, folds, kinds=tree_kinds(args), rounds=args.tree_rounds,
                  seed=args.seed, threads=max(1, torch.get_num_threads()), progress=progress)
    rows.p_params = bag.oof
    clean = np.arange(len(rows.frame)) < len(train)  # copy 0 (the clean frames) comes first
    ref = reference_stats(rows.embedding[clean], train.values, train.missing)
    served, memory = with_patch_memory(model, train, val, args)
    val_emb, val_logit = extract(served, val.rois, args.device)
    crossfit_summary = None if folds_cnn is None else folds_cnn.summary(train)
    return ImageStage(served, history, best, rows, bag, ref, val_emb, val_logit, crossfit_summary, memory,
                      None if served is model else model)


def with_patch_memory(model: ImageEncoder, train: Frames, val: Frames,
                      args: argparse.Namespace) -> tuple[ImageEncoder | MemoryScoredEncoder, MemoryReport | None]:
    """The served encoder: the CNN, plus a patch memory of the good training frames when
    `--patch-memory` is on (its mix with the CNN logit fitted on the validation frames of the image
    target). The fusion table keeps the CNN's embeddings, which the memory does not change."""
    if not args.patch_memory:
        return model, None
    good = train.rois[train.labels == 0]
    if len(good) == 0:
        raise TrainingError("--patch-memory needs good frames in the train split; pass --patch-memory 0")
    targets = image_targets(val, args.image_target)
    return attach(model, good, val.rois, targets, image_scored(val, args.image_target), image_size=args.image_size,
                  bank_size=args.patch_memory, seed=args.seed, device=args.device)


def fit_fold_cnn(fit: Frames, val: Frames, args: argparse.Namespace) -> ImageEncoder:
    """One cross-fitting CNN: a fresh encoder trained on `fit` exactly as the served one (same seed,
    same `train_cnn` options; no checkpoint)."""
    set_seed(args.seed)
    resolve_augment(args, fit)  # a no-op after `image_stage`, which chose on all the train frames
    model, optimizer = fresh_cnn(fit, args)
    train_cnn(model, optimizer, fit, val, progress=False, **cnn_options(args))
    return model


def crossfit_cnns(model: ImageEncoder, train: Frames, val: Frames, args: argparse.Namespace,
                  progress: bool) -> FoldEncoders | None:
    """Fold CNNs for out-of-fold fusion-table embeddings (`--crossfit-folds`; None when off)."""
    if not args.crossfit_folds:
        return None
    return crossfit(model, train, val, args.crossfit_folds, args.seed,
                    lambda fit, held_val: fit_fold_cnn(fit, held_val, args), args.device, progress)


def tree_spec_ranges(bundle: DataBundle, args: argparse.Namespace) -> list[tuple[float, float] | None] | None:
    """The spec ranges the tree models see (None: raw values only, `--no-spec-features`)."""
    return data_mod.spec_ranges(bundle.dataset, bundle.feature_names) if args.spec_features else None


def fusion_config(bundle: DataBundle, args: argparse.Namespace, opts: FusionOptions, tree_files: list[str]) -> dict:
    specs = tree_spec_ranges(bundle, args)
    return {
        "format_version": core.FORMAT_VERSION,
        "profile": bundle.dataset.profile.name,
        "feature_names": list(bundle.feature_names),
        "spec_ranges": None if specs is None else [None if r is None else list(r) for r in specs],
        "embedding_dim": int(args.embedding_dim),
        "image_size": int(args.image_size),
        "refine_rounds": int(opts.refine_rounds),
        "trees": tree_files,
        # Until `calibrate` fits them: constants that switch nothing off, the explicit (or default) weights.
        "gate": {"enabled": bool(opts.gate), "combine": core.COMBINE_PROBABILITY,
                 "base_weights": dict(opts.base_weights),
                 **{m: core.gate_calibration(np.zeros(0), opts.gate_margin, opts.gate_quantile)
                    for m in core.MODALITIES}},
        "threshold": 0.5,
        "branch_thresholds": {b: 0.5 for b in core.BRANCHES},
        "target_recall": float(args.target_recall),
        "min_precision": float(args.min_precision),
        "options": opts.to_json(),
    }


def write_fusion_dir(folder: Path, config: dict, weights: dict[str, np.ndarray], bag: TreeBag) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    paths = bag.save(folder / core.TREES_DIR)
    config["trees"] = [f"{core.TREES_DIR}/{p.name}" for p in paths]
    np.savez(folder / core.WEIGHTS_FILE, **{k: np.asarray(v, dtype=np.float64) for k, v in weights.items()})
    write_json(folder / core.CONFIG_FILE, config)


# The probability mix's base weights when none are given (`--gate-weights auto` learns a logit
# combination instead: `fit_combination`).
DEFAULT_BASE_WEIGHTS = {"image": 1.0, "params": 1.0, "fused": 2.0}

# The states of the validation frames the logit combination is learned on, as (OCR missing,
# GridMask) probabilities: as printed, and with 60% of the fields missing (the frame shows its
# missing fields, so the fit learns how far the params branch carries without them). Fitted
# on GridMasked frames too, it gave up 4 points of recall at 90% precision on clean Magnetic-tile
# frames to win them back under GridMask, which the KL gate cannot see (docs/benchmarks.md,
# "The gate adds logits").
GATE_CHOICE_STATES = ((0.0, 0.0), (0.6, 0.0))
# `corrupt`'s random stream for those validation views (the test-time corruption uses another).
GATE_CHOICE_STREAM = 4343


@dataclass(frozen=True)
class ValidationView:
    """The validation frames in one state, with the served encoder's outputs on them."""

    frames: Frames
    embedding: np.ndarray
    logit: np.ndarray

    def predict(self, fc: core.FusionCore) -> dict[str, np.ndarray]:
        values = np.where(self.frames.missing, np.nan, self.frames.values)
        return fc.predict(self.embedding, self.logit, values, self.frames.missing)


def validation_views(stage: ImageStage, val: Frames, seed: int, device: str) -> list[ValidationView]:
    """The validation frames in each of `GATE_CHOICE_STATES` (the first: as they are); the
    served encoder reads only the GridMasked ones again."""
    views = []
    for missing, masked in GATE_CHOICE_STATES:
        frames = val if missing == masked == 0.0 else data_mod.corrupt(val, missing, masked, seed,
                                                                         stream=GATE_CHOICE_STREAM)
        outputs = extract(stage.model, frames.rois, device) if masked else (stage.val_embedding, stage.val_logit)
        views.append(ValidationView(frames, *outputs))
    return views


def calibrate(fusion_dir: Path, views: list[ValidationView]) -> core.FusionCore:
    """Gate constants from validation KL scores, the logit combination learned over the validation
    `views` (the first: the frames as they are; `--gate-weights auto`), Platt calibration, then
    operating thresholds for the target recall at the
    precision floor (`operating_threshold`)."""
    fc = core.FusionCore.load(fusion_dir)
    val = views[0].frames
    values = np.where(val.missing, np.nan, val.values)
    kl = fc.kl_scores(views[0].embedding.astype(np.float64), values.astype(np.float64), val.missing)
    margin = fc.config["options"]["gate_margin"]
    quantile = fc.config["options"]["gate_quantile"]
    config = fc.config
    config["gate"]["image"] = core.gate_calibration(kl[:, 0], margin, quantile)
    config["gate"]["params"] = core.gate_calibration(kl[:, 1], margin, quantile)
    write_json(fusion_dir / core.CONFIG_FILE, config)
    if config["gate"]["enabled"] and config["options"].get("auto_base_weights"):
        fc = core.FusionCore.load(fusion_dir)
        learned = fit_combination([(v.frames.labels, v.predict(fc)) for v in views], config["gate"])
        config["gate"].update(learned or {})  # one class on validation: the default probability mix
        write_json(fusion_dir / core.CONFIG_FILE, config)
    fc = core.FusionCore.load(fusion_dir)
    out = views[0].predict(fc)
    config["calibration"] = fit_calibration(out["defect_probability"], val.labels)
    write_json(fusion_dir / core.CONFIG_FILE, config)
    fc = core.FusionCore.load(fusion_dir)
    out = views[0].predict(fc)
    target, floor = config["target_recall"], config["min_precision"]
    config["threshold"] = operating_threshold(val.labels, out["defect_probability"], target, floor)
    config["branch_thresholds"] = {
        b: operating_threshold(val.labels, out["branch_probabilities"][:, i], target, floor)
        for i, b in enumerate(core.BRANCHES)
    }
    write_json(fusion_dir / core.CONFIG_FILE, config)
    return core.FusionCore.load(fusion_dir)


def fusion_stage(bundle: DataBundle, stage: ImageStage, args: argparse.Namespace, fusion_dir: Path,
                 progress: bool = True) -> tuple[core.FusionCore, dict]:
    opts = fusion_options(args)
    weights, history = fit_fusion(stage.rows, stage.ref, opts, progress)
    config = fusion_config(bundle, args, opts, [])
    if fusion_dir.exists():
        shutil.rmtree(fusion_dir)
    write_fusion_dir(fusion_dir, config, weights, stage.bag)
    val = bundle.splits["val"]
    if opts.gate and opts.auto_base_weights:  # only the learned combination needs the degraded views
        if stage.val_views is None:  # shared by the ablation's fusion variants: encoded once
            stage.val_views = validation_views(stage, val, args.seed, args.device)
        views = stage.val_views
    else:
        views = [ValidationView(val, stage.val_embedding, stage.val_logit)]
    fc = calibrate(fusion_dir, views)
    return fc, history


def export_torchscript(model: ImageEncoder, image_size: int, path: Path) -> torch.jit.ScriptModule:
    import warnings

    model = model.eval().cpu()
    example = torch.zeros((2, image_size, image_size, 3), dtype=torch.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example, check_trace=False)
    probe = torch.randint(0, 256, (3, image_size, image_size, 3), dtype=torch.uint8)
    with torch.no_grad():
        eager, scripted = model(probe), traced(probe)
    for a, b in zip(eager, scripted, strict=True):
        if not torch.allclose(a, b, atol=1e-5):
            raise TrainingError("the traced image encoder disagrees with the eager model")
    path.parent.mkdir(parents=True, exist_ok=True)
    traced.save(str(path))
    return traced


# --------------------------------------------------------------------------- run folder


def save_checkpoint(path: Path, args: argparse.Namespace, stage: str, epoch: int, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None, history: list, metrics: dict | None = None,
                    best: BestEpoch | None = None) -> None:
    state = {
        "args": run_args(args),
        "stage": stage,
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        # JSON round trip: plain Python types only, so weights_only loading accepts them.
        "history": json.loads(json.dumps(history)),
        "metrics": json.loads(json.dumps(metrics or {})),
        # The best epoch's weights: a resumed run still ends on them.
        "best": best.to_checkpoint() if best is not None else None,
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is the same user error
        raise TrainingError(f"cannot read checkpoint {path}: {exc}") from None


def prepare_run(args: argparse.Namespace) -> tuple[Path, dict | None]:
    """The run folder, and the checkpoint to resume from (None: fresh run)."""
    run = Path(args.out)
    ckpt = run / CHECKPOINT
    if run.exists() and not run.is_dir():
        raise TrainingError(f"--out {run} exists and is not a folder")
    if ckpt.is_file():
        if not args.resume:
            raise TrainingError(f"{run} already holds a training run; pass --resume to continue it "
                                "or choose another --out")
        state = load_checkpoint(ckpt)
        for key, value in state["args"].items():  # the run's own arguments win
            setattr(args, key, value)
        if "cnn_grid_mask" not in state["args"]:  # a run from before the split: its CNN used --grid-mask
            args.cnn_grid_mask = state["args"]["grid_mask"]
        if "patch_memory" not in state["args"]:  # a run from before the patch memory was served without one
            args.patch_memory = 0
        if "cnn_patience" not in state["args"]:  # a run from before early stopping trains every epoch
            args.cnn_patience = 0
        if "cnn_keep" not in state["args"]:  # a run from before --cnn-keep kept the best epoch
            args.cnn_keep = KEEP_BEST
        if state["stage"] == "done":
            return run, {**state, "epoch": args.epochs}
        return run, state
    # A lone args.json is what a start that failed before its first checkpoint left: start over.
    if run.is_dir() and any(p.name != "args.json" for p in run.iterdir()):
        raise TrainingError(f"--out {run} is not empty and holds no checkpoint; choose an empty folder")
    if args.resume:
        raise TrainingError(f"--resume given but {ckpt} does not exist")
    run.mkdir(parents=True, exist_ok=True)
    return run, None


def main(args: argparse.Namespace) -> int:
    progress = not args.quiet
    started = time.perf_counter()
    validate_args(args)  # before anything is written; again below, with a resumed run's own arguments
    run, resume = prepare_run(args)
    validate_args(args)
    bundle = data_mod.load_bundle(args.data, args.image_size, args.features, progress=progress)
    data_mod.check_trainable(bundle, max(args.folds, args.crossfit_folds))
    for chose in (resolve_encoder(args, bundle.splits["train"]), resolve_augment(args, bundle.splits["train"])):
        if chose and progress:
            print(chose, flush=True)
    write_json(run / "args.json", {**run_args(args), "data": str(args.data)})
    loaded = time.perf_counter()
    stage = image_stage(bundle, args, checkpoint=run / CHECKPOINT, resume=resume, progress=progress)
    model_dir = run / MODEL_DIR
    export_torchscript(stage.model, args.image_size, model_dir / ENCODER_FILE)
    fc, fusion_history = fusion_stage(bundle, stage, args, model_dir / FUSION_DIR, progress)
    shutil.copyfile(bundle.dataset.root / "profile.yaml", model_dir / "profile.yaml")
    stage.model.to(args.device)
    val = bundle.splits["val"]
    val_out = predict(stage.model, fc, val, args.device)
    metrics = {
        "val": model_metrics(val.labels, val.causes, val_out, fc),
        "threshold": fc.threshold,
        "branch_thresholds": fc.config["branch_thresholds"],
        "gate": fc.config["gate"],
        "cnn_history": stage.history,
        "cnn_best": stage.best.summary(),
        "fusion_history": fusion_history,
        "crossfit": stage.crossfit,
        "patch_memory": None if stage.memory is None else stage.memory.to_json(),
        "frames": {name: len(f) for name, f in bundle.splits.items()},
        "seconds": {"load": round(loaded - started, 1), "total": round(time.perf_counter() - started, 1)},
        "data": str(args.data),
    }
    write_json(run / "metrics.json", metrics)
    save_checkpoint(run / CHECKPOINT, args, "done", args.epochs, stage.trained_cnn, None, stage.history, metrics,
                    best=stage.best)
    v = metrics["val"]
    print(f"trained {args.encoder} ({args.image_size}px, {args.epochs} epochs) + {len(stage.bag.boosters)} LightGBM "
          f"models in {metrics['seconds']['total']:.0f} s -> {run}")
    for name in core.BRANCHES:
        m = v[name]
        print(f"  val {name:6s} recall {m['recall']:.3f} precision {m['precision']:.3f} f1 {m['f1']:.3f} "
              f"auroc {m['auroc'] if m['auroc'] is None else round(m['auroc'], 3)} (threshold {m['threshold']:.3f})")
    print(cnn_summary(stage.history, stage.best))
    if stage.memory is not None:
        print(memory_summary(stage.memory))
    note = image_branch_note(stage.best)
    if note:
        print(note)
    return 0


# Below this validation AUROC on object defects the CNN has not learnt them: a from-scratch CNN
# on CPU misses in some seeds (docs/benchmarks.md, Training), and the user should know that the
# verdicts then rest on the parameters alone.
IMAGE_LEARNT_AUROC = 0.6


def memory_summary(report: MemoryReport) -> str:
    """One line: the patch memory's size and what it adds on the validation frames."""
    auc = {k: "-" if v is None else f"{v:.3f}" for k, v in report.val_auroc.items()}
    return (f"  patch memory: {report.bank} windows; validation AUROC of the image target: CNN {auc['cnn']}, "
            f"memory {auc['memory']}, served image logit {auc['served']} (memory abstained on "
            f"{report.val_degraded} degraded frame(s))")


def cnn_summary(history: list[dict[str, Any]], best: BestEpoch) -> str:
    """One line: the kept epoch and its validation AUROC, and the restarts it took."""
    restarts = sum(bool(r.get("restart")) for r in history)
    kept = "no epoch scored" if best.auroc is None else (
        f"kept epoch {best.epoch}" + (f" of restart {best.attempt}" if best.attempt else "")
        + f" (validation AUROC {best.auroc:.3f})")
    stopped = next((r for r in history if r.get("stopped")), None)
    early = "" if stopped is None else f"; stopped early after epoch {stopped['epoch']} (--cnn-patience)"
    return f"  cnn: {kept}; {restarts} restart(s){early}"


def image_branch_note(best: BestEpoch) -> str | None:
    """A warning line when the kept CNN epoch is near chance on the object defects, else None."""
    if best.auroc is None or best.auroc >= IMAGE_LEARNT_AUROC:
        return None
    return (f"note: the image branch did not learn the object defects (best validation AUROC {best.auroc:.2f} < "
            f"{IMAGE_LEARNT_AUROC}, restarts included); verdicts lean on the parameters. Try more --epochs, "
            "--grid-mask-warmup 1, more --cnn-restarts or a larger --image-size (docs/benchmarks.md, Training).")
