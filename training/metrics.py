"""Binary classification metrics as fractions (defect = positive class 1)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def binary_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float) -> dict[str, Any]:
    """accuracy, precision, recall, f1, auroc (None with one class) and the confusion matrix
    [[tn, fp], [fn, tp]] of `probs >= threshold`."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(labels).astype(int)
    p = np.asarray(probs, dtype=np.float64)
    pred = (p >= threshold).astype(int)
    tp = int(((pred == 1) & (y == 1)).sum())
    tn = int(((pred == 0) & (y == 0)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())
    n = len(y)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    auroc = float(roc_auc_score(y, p)) if len(set(y.tolist())) == 2 else None
    return {
        "recall_at_p90": recall_at_precision(y, p, 0.9),
        "accuracy": (tp + tn) / n if n else 0.0,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "auroc": auroc,
        "confusion_matrix": [[tn, fp], [fn, tp]],
        "threshold": float(threshold),
        "n": n,
    }


def recall_at_precision(labels: np.ndarray, probs: np.ndarray, min_precision: float) -> float | None:
    """The highest recall of any threshold whose precision is at least `min_precision` (0 when
    none reaches it; None without defect frames): models compared at equal precision."""
    from sklearn.metrics import precision_recall_curve

    y = np.asarray(labels).astype(int)
    if not y.any():
        return None
    precision, recall, _ = precision_recall_curve(y, np.asarray(probs, dtype=np.float64))
    ok = precision >= min_precision
    return float(recall[ok].max()) if ok.any() else 0.0


def auroc_by_cause(labels: np.ndarray, probs: np.ndarray, causes: list[str]) -> dict[str, float | None]:
    """`auroc_object` (object-caused defects against good frames) and `auroc_param` (parameter-
    caused defects against good frames); None where either side is empty. A branch that can
    only see one kind of defect is judged on that kind: the image branch on `auroc_object`, the
    parameter branch on `auroc_param`."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(labels).astype(int)
    p = np.asarray(probs, dtype=np.float64)
    cause = np.asarray(causes, dtype=object)
    out: dict[str, float | None] = {}
    for name in ("object", "param"):
        keep = (y == 0) | ((y == 1) & (cause == name))
        both = len(set(y[keep].tolist())) == 2
        out[f"auroc_{name}"] = float(roc_auc_score(y[keep], p[keep])) if both else None
    return out


def recall_by_cause(labels: np.ndarray, probs: np.ndarray, causes: list[str], threshold: float) -> dict[str, float]:
    """Recall on object-caused and parameter-caused defects separately."""
    out = {}
    pred = np.asarray(probs) >= threshold
    for cause in ("object", "param"):
        idx = np.array([c == cause for c in causes], dtype=bool)
        if idx.any():
            out[cause] = float(pred[idx].mean())
    return out


def defect_kinds(defect: str) -> list[str]:
    """The kinds a manifest defect string counts under: "object:scratch" -> ["object:scratch"],
    "param:temp,humidity" -> ["param:temp", "param:humidity"] (a parameter defect counts under
    each of its out-of-spec fields), "none" -> []."""
    if defect == "none":
        return []
    cause, _, detail = defect.partition(":")
    return [f"{cause}:{item}" for item in detail.split(",")] if detail else [cause]


# Rows of `metrics_by_defect` pooling the object defects by severity, where the manifest records it.
SUBTLE_OBJECTS = "object (subtle)"
PLAIN_OBJECTS = "object (plain)"


def metrics_by_defect(labels: np.ndarray, probs: np.ndarray, defects: list[str],
                      threshold: float, subtle: Sequence[bool | None] | None = None) -> dict[str, dict[str, Any]]:
    """Per defect kind (`defect_kinds`): `n` frames, `recall` at `threshold`, and `auroc` of those
    frames against the good frames (None without good frames). A line engineer's question is
    which kinds the model misses; the pooled AUROC hides a kind that is a small share of the
    defects. With `subtle` (per frame: whether its object defect is the faint version, None where
    unknown), the object defects also count under SUBTLE_OBJECTS or PLAIN_OBJECTS: the faint ones
    of every kind are a few per kind, too few to read row by row."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(labels).astype(int)
    p = np.asarray(probs, dtype=np.float64)
    good = p[y == 0]
    rows: dict[str, list[int]] = {}
    for i, defect in enumerate(defects):
        if y[i] == 1:
            for kind in defect_kinds(defect):
                rows.setdefault(kind, []).append(i)
            if subtle is not None and subtle[i] is not None and defect.startswith("object"):
                rows.setdefault(SUBTLE_OBJECTS if subtle[i] else PLAIN_OBJECTS, []).append(i)
    out: dict[str, dict[str, Any]] = {}
    for kind in sorted(rows):
        scores = p[rows[kind]]
        auroc = (float(roc_auc_score(np.r_[np.zeros(len(good)), np.ones(len(scores))], np.r_[good, scores]))
                 if len(good) else None)
        out[kind] = {"n": len(scores), "recall": float((scores >= threshold).mean()), "auroc": auroc}
    return out
