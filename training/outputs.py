"""What a trained run is and what its model outputs: the run folder's names, the model's outputs on
frames (the CNN, then the fusion core, as Triton computes them), the per-model scores and metrics
at the operating thresholds, and the JSON files train and evaluate write. Train, evaluate and
export share it; it imports torch only when a model runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from training.data import Frames
from training.metrics import auroc_by_cause, binary_metrics, metrics_by_defect, recall_by_cause
from triton_models.oanet_fusion import core

MODEL_DIR = "model"  # RUN/model/: what export copies
ENCODER_FILE = "image_encoder.pt"  # RUN/model/image_encoder.pt: the TorchScript CNN
FUSION_DIR = "fusion"  # RUN/model/fusion/: fusion.json, weights, trees


def predict(encoder: Any, fusion: core.FusionCore, frames: Frames, device: str = "cpu") -> dict[str, np.ndarray]:
    """The served model's outputs for `frames`: the CNN (TorchScript or the training module) then the
    fusion core, as Triton computes them. Training picks its threshold with it, evaluation scores."""
    from training.cnn import extract  # torch: imported when a model runs

    emb, logit = extract(encoder, frames.rois, device)
    return fusion.predict(emb, logit, np.where(frames.missing, np.nan, frames.values), frames.missing)


def model_scores(out: dict[str, np.ndarray], fc: core.FusionCore, name: str) -> tuple[np.ndarray, float]:
    """(probabilities, operating threshold) of one model: `fused` = the gated verdict, `image` or
    `params` = that branch alone."""
    if name == "fused":
        return out["defect_probability"], fc.threshold
    return out["branch_probabilities"][:, core.BRANCHES.index(name)], fc.config["branch_thresholds"][name]


def model_metrics(labels: np.ndarray, causes: list[str], out: dict[str, np.ndarray], fc: core.FusionCore,
                  models: tuple[str, ...] = core.BRANCHES, defects: list[str] | None = None,
                  subtle: list[bool | None] | None = None) -> dict[str, Any]:
    """Per model (fused = the gated verdict, image, params) at its operating threshold, plus 0.5;
    with each frame's manifest `defects`, also per defect kind (`by_defect`; with `subtle`, the
    object defects also by severity: `metrics_by_defect`)."""
    result = {}
    for name in models:
        probs, threshold = model_scores(out, fc, name)
        entry = binary_metrics(labels, probs, threshold)
        entry.update(auroc_by_cause(labels, probs, causes))
        if defects is not None:
            entry["by_defect"] = metrics_by_defect(labels, probs, defects, threshold, subtle)
        entry["recall_by_cause"] = recall_by_cause(labels, probs, causes, threshold)
        entry["at_0.5"] = binary_metrics(labels, probs, 0.5)
        entry["at_0.5"]["recall_by_cause"] = recall_by_cause(labels, probs, causes, 0.5)
        result[name] = entry
    return result



def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(path)
