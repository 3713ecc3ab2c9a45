"""Cross-fitted (out-of-fold) image embeddings for the fusion stage (`oanet train --crossfit-folds K`).

The fusion stage learns how far to trust each modality from its training table. Its parameter
input there is out-of-fold (the LightGBM bag's predictions for frames it did not fit), but the
image embeddings come from the CNN that trained on those very frames: in sample, the image
branch looks better than it will on new frames, and the fused classifier leans on it too much.

Cross-fitting: the train frames are split into K stratified folds (the bag's folds when K
equals `--folds`); K fold CNNs are trained, each without one fold, by the same `train_cnn`
call as the served CNN; a frame's embedding in the fusion table comes from the fold CNN that
never saw it. The served CNN is still the one trained on every train frame, so each fold CNN's
embedding is carried into the served CNN's coordinates by a ridge regression fitted on the
frames both CNNs trained on (clean ROIs). Embeddings of two separately trained CNNs are not
comparable coordinate by coordinate; the map makes the fusion stage see, in the served CNN's
space, what that CNN will produce for a frame it has not seen.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from training.bagging import frame_folds
from training.cnn import auroc, extract, image_scored
from training.data import Frames
from training.encoders import ImageEncoder
from training.errors import TrainingError

FitFold = Callable[[Frames, Frames], ImageEncoder]


@dataclass
class FoldEncoders:
    """K fold CNNs and their maps into the served CNN's embedding space."""

    models: list[ImageEncoder]
    maps: list[tuple[np.ndarray, np.ndarray]]  # (W [E, E], b [E]) per fold: e_served ~ e_fold @ W + b
    folds: np.ndarray  # fold of every train frame
    oof_logit: np.ndarray  # [N] each train frame's image logit from the fold CNN that did not see it
    device: str = "cpu"

    def embed(self, rois: np.ndarray) -> np.ndarray:
        """Out-of-fold embeddings [N, E] of the train frames' ROIs (`rois` row i = train frame i,
        any augmentation), in the served CNN's coordinates."""
        if len(rois) != len(self.folds):
            raise TrainingError(f"cross-fitting: {len(rois)} images for {len(self.folds)} train frames")
        out = None
        for k, (model, (weight, bias)) in enumerate(zip(self.models, self.maps, strict=True)):
            held = self.folds == k
            e, _ = extract(model, rois[held], self.device)
            mapped = e.astype(np.float64) @ weight + bias
            if out is None:
                out = np.zeros((len(rois), mapped.shape[1]), dtype=np.float32)
            out[held] = mapped
        return out

    def summary(self, train: Frames) -> dict:
        """What the fold CNNs tell about the image branch on frames it did not see (metrics.json)."""
        objects = image_scored(train, "object")
        return {"folds": len(self.models),
                "oof_object_auroc": auroc(train.labels[objects], self.oof_logit[objects])}


def ridge_map(source: np.ndarray, target: np.ndarray, alpha: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(W, b) minimising ||source W + b - target||^2 + alpha ||W||^2 (columns of `source` centred)."""
    x = np.asarray(source, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    mx, my = x.mean(axis=0), y.mean(axis=0)
    xc = x - mx
    weight = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ (y - my))
    return weight, my - mx @ weight


def crossfit(served: ImageEncoder, train: Frames, val: Frames, n_folds: int, seed: int, fit_fold: FitFold,
             device: str = "cpu", progress: bool = True) -> FoldEncoders:
    """Train `n_folds` fold CNNs with `fit_fold(fit_frames, val_frames)` and map each into the
    space of `served` (the CNN trained on every train frame)."""
    from tqdm import tqdm

    if n_folds < 2:
        raise TrainingError("--crossfit-folds must be 0 (off) or at least 2")
    folds = frame_folds(train.labels, n_folds, seed)
    served_emb, _ = extract(served, train.rois, device)
    models, maps = [], []
    oof_logit = np.zeros(len(train), dtype=np.float32)
    for k in tqdm(range(n_folds), desc="cross-fitted CNNs", unit="fold", disable=not progress, leave=False):
        fit = folds != k
        model = fit_fold(train.subset(np.flatnonzero(fit)), val).eval()
        fold_emb, _ = extract(model, train.rois[fit], device)
        maps.append(ridge_map(fold_emb, served_emb[fit]))
        _, oof_logit[~fit] = extract(model, train.rois[~fit], device)
        models.append(model)
    return FoldEncoders(models, maps, folds, oof_logit, device)
