"""External-modality intra-bagging (paper 3.2): LightGBM learners of different kinds on the
numeric OCR features, missing values native (NaN), stratified K-fold cross-validation.

Every (kind, fold) booster is kept; the parameter branch's probability is the mean of all of
them (paper 4.1 kept default hyper-parameters; these are LightGBM's defaults except where a
kind needs its own setting). Folds are drawn over frames, not rows: the masked copies of a
frame (mask learning) always sit in the same fold, so the out-of-fold predictions that feed
the fusion stage never saw their own frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training.errors import TrainingError

KINDS = ("gbdt", "dart", "goss", "rf")

_KIND_PARAMS = {
    "gbdt": {"boosting": "gbdt"},
    "dart": {"boosting": "dart", "drop_seed": 0},
    "goss": {"boosting": "gbdt", "data_sample_strategy": "goss"},
    "rf": {"boosting": "rf", "bagging_fraction": 0.8, "bagging_freq": 1, "feature_fraction": 0.8},
}


def kind_params(kind: str, seed: int, threads: int) -> dict:
    if kind not in _KIND_PARAMS:
        raise TrainingError(f"unknown LightGBM kind {kind!r}; expected some of {', '.join(KINDS)}")
    params = {
        "objective": "binary",
        "verbose": -1,
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": threads,
        "min_data_in_leaf": 10,
    }
    params.update(_KIND_PARAMS[kind])
    if kind == "dart":
        params["drop_seed"] = seed
    return params


@dataclass
class TreeBag:
    boosters: list = field(default_factory=list)
    names: list[str] = field(default_factory=list)  # "<kind>_fold<k>"
    oof: np.ndarray | None = None  # mean out-of-fold probability per training row

    def predict(self, values: np.ndarray) -> np.ndarray:
        return np.mean([b.predict(np.asarray(values, dtype=np.float64)) for b in self.boosters], axis=0)

    def save(self, folder: Path) -> list[str]:
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, booster in zip(self.names, self.boosters, strict=True):
            path = folder / f"{name}.txt"
            booster.save_model(str(path))
            paths.append(path)
        return paths


def frame_folds(labels: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold number of every frame (stratified, shuffled by seed)."""
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(labels, minlength=2)
    if counts.min() < n_folds:
        raise TrainingError(f"too few frames for {n_folds}-fold cross-validation: {counts[0]} good and "
                            f"{counts[1]} defect frames; each class needs at least {n_folds}")
    folds = np.zeros(len(labels), dtype=np.int64)
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (_, held) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        folds[held] = k
    return folds


def fit_bag(
    values: np.ndarray,
    labels: np.ndarray,
    row_frame: np.ndarray,
    frame_fold: np.ndarray,
    *,
    kinds: tuple[str, ...] = KINDS,
    rounds: int = 100,
    seed: int = 0,
    threads: int = 2,
    progress: bool = True,
) -> TreeBag:
    """Fit kinds x folds boosters on rows (values [M, F] NaN-missing, labels [M]); row_frame[i]
    is the frame of row i and frame_fold[f] the fold of frame f."""
    import lightgbm
    from tqdm import tqdm

    values = np.asarray(values, dtype=np.float64)
    labels = np.asarray(labels)
    row_fold = frame_fold[row_frame]
    n_folds = int(frame_fold.max()) + 1
    oof = np.zeros((len(kinds), len(labels)))
    bag = TreeBag()
    with tqdm(total=len(kinds) * n_folds, desc="lightgbm bag", unit="model", disable=not progress, leave=False) as bar:
        for ki, kind in enumerate(kinds):
            params = kind_params(kind, seed, threads)
            for k in range(n_folds):
                fit, held = row_fold != k, row_fold == k
                if len(set(labels[fit].tolist())) < 2:
                    raise TrainingError(f"fold {k} of the LightGBM bag has a single class; add frames")
                data = lightgbm.Dataset(values[fit], label=labels[fit], params={"verbose": -1})
                booster = lightgbm.train(params, data, num_boost_round=rounds)
                oof[ki, held] = booster.predict(values[held])
                bag.boosters.append(booster)
                bag.names.append(f"{kind}_fold{k}")
                bar.update(1)
    bag.oof = oof.mean(axis=0)
    return bag
