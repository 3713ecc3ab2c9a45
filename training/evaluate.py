"""`oanet evaluate`: score a run with what Triton serves (TorchScript CNN + fusion core).

Metrics per model, as fractions: `fused` (the gated verdict), `image` (CNN head alone) and
`params` (LightGBM bag alone), each at its operating threshold (chosen on validation for the
target recall) with the confusion matrix [[tn, fp], [fn, tp]], recall per defect cause,
`auroc_object` / `auroc_param` (each defect cause against the good frames), recall and AUROC per
defect kind (`by_defect`: "object:<kind>", "param:<field>"), and the same at
threshold 0.5 (`at_0.5`, the paper's argmax protocol). `--predictions FILE` writes the
per-frame rows behind the confusion matrices (CSV). Corruption for the
robustness study is seeded: `--ocr-missing P` turns each present field missing with
probability P, `--grid-mask P` GridMasks each object image with probability P.
"""

from __future__ import annotations

import argparse
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training import data as data_mod
from training.data import Frames, corrupt
from training.errors import TrainingError
from training.outputs import ENCODER_FILE, FUSION_DIR, MODEL_DIR, model_metrics, model_scores, predict, write_json
from triton_models.oanet_fusion import core

@dataclass
class LoadedRun:
    path: Path
    args: dict[str, Any]
    encoder: Any  # torch.jit.ScriptModule
    fusion: core.FusionCore


def load_run(run: str | Path, device: str = "cpu") -> LoadedRun:
    import torch

    run = Path(run)
    args_file = run / "args.json"
    model_dir = run / MODEL_DIR
    if not args_file.is_file() or not (model_dir / ENCODER_FILE).is_file():
        raise TrainingError(f"{run} is not a finished training run (args.json or {MODEL_DIR}/{ENCODER_FILE} missing)")
    args = json.loads(args_file.read_text(encoding="utf-8"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch 2.14 flags torch.jit as deprecated; Triton loads it
            encoder = torch.jit.load(str(model_dir / ENCODER_FILE), map_location=device).eval()
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a bad file
        raise TrainingError(f"cannot load {model_dir / ENCODER_FILE}: {exc}") from None
    try:
        fusion = core.FusionCore.load(model_dir / FUSION_DIR)
    except core.CoreError as exc:
        raise TrainingError(str(exc)) from None
    return LoadedRun(run, args, encoder, fusion)


def load_frames(run: LoadedRun, data: str | Path, split: str, features: str | None, progress: bool) -> Frames:
    dataset = data_mod.open_dataset(data)
    names = data_mod.numeric_fields(dataset)
    if names != run.fusion.feature_names:
        raise TrainingError(
            f"profile/model mismatch: dataset {dataset.root} has number fields {names}, the model was trained on "
            f"{run.fusion.feature_names}"
        )
    entries = dataset.split(split)
    if not entries:
        raise TrainingError(f"the {split} split of {dataset.root} has no frames")
    return data_mod.load_split(dataset, entries, names, int(run.args["image_size"]), features or run.args["features"],
                               progress=progress, desc=f"{split} images")


def defects_of(data: str | Path, ids: list[str]) -> tuple[list[str], list[bool | None]]:
    """The manifest's defect string of each frame id ("none", "object:<kind>", "param:<fields>"),
    and whether its object defect is the faint version (None where the manifest does not say)."""
    by_id = {entry.id: entry for entry in data_mod.open_dataset(data).entries}
    return [by_id[frame_id].defect for frame_id in ids], [by_id[frame_id].subtle for frame_id in ids]


def by_defect_lines(metrics: dict[str, Any]) -> list[str]:
    """Recall at the operating threshold and AUROC against the good frames, per defect kind."""
    models = [name for name in metrics if "by_defect" in metrics[name]]
    kinds = sorted({kind for name in models for kind in metrics[name]["by_defect"]})
    if not kinds:
        return []
    lines = [f"{'defect kind':28s} {'n':>4s}  " + "  ".join(f"{name + ' rec/auroc':>18s}" for name in models)]
    for kind in kinds:
        cells = []
        for name in models:
            m = metrics[name]["by_defect"][kind]
            auroc = "n/a" if m["auroc"] is None else f"{m['auroc']:.3f}"
            cells.append(f"{m['recall']:>10.3f} {auroc:>7s}")
        lines.append(f"{kind:28s} {metrics[models[0]]['by_defect'][kind]['n']:4d}  " + "  ".join(cells))
    return lines


def summary_lines(metrics: dict[str, Any]) -> list[str]:
    lines = [f"{'model':8s} {'thr':>6s} {'acc':>6s} {'prec':>6s} {'recall':>6s} {'f1':>6s} {'auroc':>6s} {'au-obj':>6s} "
             f"{'au-par':>6s}  recall@0.5 prec@0.5  [[tn fp] [fn tp]]"]

    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    for name, m in metrics.items():
        half = m["at_0.5"]
        lines.append(f"{name:8s} {m['threshold']:6.3f} {m['accuracy']:6.3f} {m['precision']:6.3f} {m['recall']:6.3f} "
                     f"{m['f1']:6.3f} {fmt(m['auroc']):>6s} {fmt(m.get('auroc_object')):>6s} "
                     f"{fmt(m.get('auroc_param')):>6s}  {half['recall']:10.3f} {half['precision']:8.3f}  "
                     f"{m['confusion_matrix']}")
    return lines


def write_predictions(path: Path, frames: Frames, out: dict[str, np.ndarray], fusion: core.FusionCore,
                      models: tuple[str, ...]) -> None:
    """One CSV row per frame: id, label, cause, then per model `<model>_probability` and
    `<model>_defect` (1 when the probability reaches the model's operating threshold)."""
    import csv


    scored = {name: model_scores(out, fusion, name) for name in models}
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "label", "cause", *(f"{n}_{c}" for n in models for c in ("probability", "defect"))])
        for i, frame_id in enumerate(frames.ids):
            row: list[Any] = [frame_id, int(frames.labels[i]), frames.causes[i]]
            for probs, threshold in scored.values():
                value = float(probs[i])  # compared in float64, as binary_metrics does
                row += [repr(value), int(value >= float(threshold))]
            writer.writerow(row)


def main(args: argparse.Namespace) -> int:

    progress = not args.quiet
    run = load_run(args.run, args.device)
    frames = load_frames(run, args.data, args.split, args.features, progress)
    frames = corrupt(frames, args.ocr_missing, args.grid_mask, args.seed)
    out = predict(run.encoder, run.fusion, frames, args.device)
    models = ("image",) if args.image_only else ("params",) if args.params_only else core.BRANCHES
    defects, subtle = defects_of(args.data, frames.ids)
    metrics = model_metrics(frames.labels, frames.causes, out, run.fusion, models, defects, subtle)
    report = {
        **metrics,
        "run": str(args.run),
        "data": str(args.data),
        "split": args.split,
        "frames": len(frames),
        "ocr_missing": args.ocr_missing,
        "grid_mask": args.grid_mask,
        "seed": args.seed,
        "mean_gate_weights": dict(zip(core.BRANCHES, out["gate_weights"].mean(axis=0).round(4).tolist(), strict=True)),
        "modality_off_share": {
            "image": float((out["kl_scores"][:, 0] > run.fusion.gate_params["image"]["off"]).mean()),
            "params": float((out["kl_scores"][:, 1] > run.fusion.gate_params["params"]["off"]).mean()),
        },
    }
    target = args.out or Path(args.run) / f"eval-{args.split}.json"
    write_json(Path(target), report)
    if args.predictions is not None:
        write_predictions(Path(args.predictions), frames, out, run.fusion, models)
    print(f"{len(frames)} {args.split} frames of {args.data} (ocr-missing {args.ocr_missing}, grid-mask {args.grid_mask})")
    for line in summary_lines(metrics):
        print("  " + line)
    for line in by_defect_lines(metrics):
        print("  " + line)
    print(f"metrics: {target}" + (f", per-frame predictions: {args.predictions}" if args.predictions else ""))
    return 0
