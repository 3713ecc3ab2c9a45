"""Image-encoder training (paper 4.1: SGD, lr 0.01, weight decay 5e-4, cross-entropy; AdamW for
the compact CPU encoder, see `training.encoders.RECIPES`) and feature extraction.

The binary cross-entropy on one logit is the two-class cross-entropy of the paper. SGD uses
momentum 0.9; both optimisers follow a cosine learning-rate decay over the epochs (stateless per epoch, so a
resumed run follows the same schedule). Augmentation: random flips (and transposes, with
`augment="dihedral"`: the 8 symmetries of the square ROI) and GridMask with
probability `grid_mask_p` (paper 4.3; `oanet train --cnn-grid-mask`). Batches are drawn from a generator seeded
by (seed, epoch): a resumed run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from training.augment import add_synthetic_anomalies, grid_mask
from training.data import Frames
from training.encoders import ImageEncoder


def build_encoder(name: str, embedding_dim: int, train_rois: np.ndarray) -> ImageEncoder:
    """The encoder for ROIs like `train_rois` (uint8 [N, S, S, 3]: built for S px)."""
    return ImageEncoder(name, embedding_dim, int(train_rois.shape[1]))


def epoch_lr(base_lr: float, epoch: int, epochs: int) -> float:
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * epoch / max(1, epochs)))


def grid_mask_probability(p: float, epoch: int, epochs: int, warmup: float) -> float:
    """GridMask probability of `epoch`: rising linearly from 0 to `p` over the first `warmup`
    share of the epochs. From the first epoch on, GridMask kept the from-scratch CNN at chance in
    some seeds (it hides the small defect the net has yet to find); once it has found it,
    GridMask teaches it to keep it under occlusion (docs/benchmarks.md, Training)."""
    if warmup <= 0:
        return p
    return p * min(1.0, epoch / (warmup * max(1, epochs)))


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, momentum: float = 0.9,
                   name: str = "sgd") -> torch.optim.Optimizer:
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}")


@torch.no_grad()
def extract(model: ImageEncoder, rois: np.ndarray, device: str = "cpu", batch_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """(embedding float32 [N, E], image logit float32 [N]) in eval mode."""
    model.eval()
    embs, logits = [], []
    for start in range(0, len(rois), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(rois[start : start + batch_size])).to(device)
        e, lg = model(x)
        embs.append(e.float().cpu().numpy())
        logits.append(lg.float().cpu().numpy()[:, 0])
    if not embs:
        return np.zeros((0, model.embed.out_features), np.float32), np.zeros(0, np.float32)
    return np.concatenate(embs).astype(np.float32), np.concatenate(logits).astype(np.float32)


def auroc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    if len(set(np.asarray(labels).tolist())) < 2:
        return None
    return float(roc_auc_score(labels, scores))


AUGMENTS = ("dihedral", "flips", "none")
# Which epoch's weights the CNN keeps (`--cnn-keep`): the best validation score, or the last epoch.
KEEP_BEST, KEEP_LAST = "best", "last"
KEEPS = (KEEP_BEST, KEEP_LAST)
# `oanet train --augment auto`: dihedral or flips, by `choose_symmetries` on the good training images.
AUTO_AUGMENT = "auto"
# A quarter turn is a fair augmentation only where the good objects look alike turned. Their
# horizontal against vertical detail is one thing a turn swaps: a square package has 1.00 (sd
# 0.02 over 150 frames), Magnetic-tile crops 2.0 from their grinding streaks, and turned tiles
# kept a CNN at chance on them where flips alone let it learn (docs/benchmarks.md).
ANISOTROPY_LIMIT = 1.2


def detail_anisotropy(images: np.ndarray) -> float:
    """Horizontal over vertical detail of NHWC images: the mean absolute difference between
    horizontal neighbours over that between vertical ones (1.0 for images without any)."""
    grey = np.asarray(images, dtype=np.float32).mean(axis=3)
    across = float(np.abs(np.diff(grey, axis=2)).mean()) if grey.shape[2] > 1 else 0.0
    down = float(np.abs(np.diff(grey, axis=1)).mean()) if grey.shape[1] > 1 else 0.0
    if across <= 0.0 and down <= 0.0:
        return 1.0
    return (across + 1e-6) / (down + 1e-6)


# `oanet train --encoder auto`: "compact-array" for objects that repeat a cell, else "compact".
AUTO_ENCODER = "auto"
# How clearly the good objects repeat a cell (`cell_periodicity`): BGA packages 0.62-0.93 (median
# 0.78 over 200 frames of `oanet synth`), Magnetic-tile crops and the tile line -0.07 to -0.003
# (docs/benchmarks.md, "Cell-to-cell comparison").
ARRAY_PERIODICITY = 0.3
AUTO_ENCODER_IMAGES = 256


def cell_periodicity(images: np.ndarray) -> float:
    """How clearly NHWC images repeat a cell along both axes: per image and axis, the normalised
    autocorrelation's highest peak within `PITCH_RANGE` over its lowest value at a shorter lag
    (a repeating cell dips between one copy and the next; a merely smooth image falls steadily
    and scores at most 0), the weaker axis counted; the median over the images."""
    from training.encoders import PITCH_RANGE

    if not len(images):
        return 0.0
    grey = np.asarray(images, dtype=np.float32).mean(axis=3)
    grey -= grey.mean(axis=(1, 2), keepdims=True)
    spectrum = np.fft.rfft2(grey)
    correlation = np.fft.irfft2(np.abs(spectrum) ** 2, s=grey.shape[1:])
    correlation /= np.maximum(correlation[:, :1, :1], 1e-12)

    def prominence(profile: np.ndarray, side: int) -> np.ndarray:
        low, high = max(2, int(side * PITCH_RANGE[0])), max(4, int(side * PITCH_RANGE[1]))
        peak = low + np.argmax(profile[:, low:high], axis=1)
        dips = np.array([row[1:lag].min() for row, lag in zip(profile, peak, strict=True)])
        return profile[np.arange(len(profile)), peak] - dips

    across = prominence(correlation[:, 0, :], grey.shape[2])
    down = prominence(correlation[:, :, 0], grey.shape[1])
    return float(np.median(np.minimum(across, down)))


def choose_encoder(good_images: np.ndarray) -> tuple[str, float]:
    """("compact-array" or "compact", the periodicity it was chosen by) for objects like
    `good_images`: cell-to-cell comparison where they repeat a cell."""
    periodicity = cell_periodicity(good_images)
    return ("compact-array" if periodicity >= ARRAY_PERIODICITY else "compact"), periodicity


def choose_symmetries(good_images: np.ndarray) -> tuple[str, float]:
    """("dihedral" or "flips", the anisotropy it was chosen by) for objects like `good_images`
    (uint8 NHWC): flips where their detail has an orientation a quarter turn would break."""
    anisotropy = detail_anisotropy(good_images) if len(good_images) else 1.0
    oriented = max(anisotropy, 1.0 / anisotropy) > ANISOTROPY_LIMIT
    return ("flips" if oriented else "dihedral"), anisotropy


def symmetries(images: np.ndarray, augment: str, rng: np.random.Generator) -> np.ndarray:
    """Random symmetries of each NHWC image: flips ("flips"), flips and transposes ("dihedral":
    all 8 symmetries of a square, for objects whose defects look alike in every orientation, as
    on a square package), or none. Returns a new array."""
    if augment not in AUGMENTS:
        raise ValueError(f"unknown augmentation {augment!r}; expected one of {', '.join(AUGMENTS)}")
    images = np.array(images, copy=True)
    if augment == "none":
        return images
    if augment == "dihedral" and images.shape[1] == images.shape[2]:
        turn = rng.random(len(images)) < 0.5
        images[turn] = images[turn].transpose(0, 2, 1, 3)
    flip_h = rng.random(len(images)) < 0.5
    flip_v = rng.random(len(images)) < 0.5
    images[flip_h] = images[flip_h][:, :, ::-1]
    images[flip_v] = images[flip_v][:, ::-1]
    return images


def balanced_pos_weight(targets: np.ndarray) -> float:
    """negatives / positives of the image target (1 when a class is absent): the loss weighs
    both classes equally. With GridMask on and the plain loss (weight 1), the compact CNN stayed
    at the class prior; balanced and with dihedral augmentation it learned (docs/benchmarks.md)."""
    positives = float(np.sum(targets))
    negatives = float(len(targets)) - positives
    return negatives / positives if positives > 0 and negatives > 0 else 1.0


def expected_targets(targets: np.ndarray, synthetic_anomalies: float) -> np.ndarray:
    """The targets' expected class mix once a share of the good images carries a synthetic
    anomaly (target 1): what the balanced loss weight is computed from."""
    negatives = float(np.sum(targets == 0))
    moved = int(round(negatives * synthetic_anomalies))
    return np.concatenate([np.ones(int(np.sum(targets == 1)) + moved), np.zeros(int(negatives) - moved)])


def image_scored(frames: Frames, target: str) -> np.ndarray:
    """The frames the image target is judged on: good frames and object defects for "object"
    (a parameter defect looks good, so it says nothing of the image), every frame for "label"."""
    if target == "object":
        return np.array([c != "param" for c in frames.causes])
    return np.ones(len(frames), bool)


def image_targets(frames: Frames, target: str) -> np.ndarray:
    if target == "label":
        return frames.labels.astype(np.float32)
    if target == "object":
        return np.array([c == "object" for c in frames.causes], dtype=np.float32)
    raise ValueError(f"unknown image target {target!r}")


@dataclass
class BestEpoch:
    """The epoch with the best validation score so far (over every attempt) and its weights.

    The score is the validation AUROC of the image target: object defects against good frames
    for target "object", every defect for "label". The last epoch of a from-scratch CNN is not
    always its best (the score moves from epoch to epoch on a few hundred frames), and a failed
    attempt's last epoch is worse than the learnt one before a restart. Where the validation split
    holds a few object defects, one frame moves the score by several points and the best epoch is
    mostly the luckiest: `keep` KEEP_LAST keeps the last epoch trained instead (the learning rate
    has decayed to 0 there; docs/benchmarks.md, "The tile line's fused gap")."""

    attempt: int = -1
    epoch: int = -1  # 1-based within its attempt, as the history records
    auroc: float | None = None
    state: dict[str, torch.Tensor] | None = None
    # KEEP_LAST: every epoch offered is kept (the last one trained is served), while `peak` still
    # follows the best score, which the restart rule reads.
    keep: str = KEEP_BEST
    peak: float | None = None

    def __post_init__(self) -> None:
        if self.keep not in KEEPS:
            raise ValueError(f"unknown CNN epoch to keep {self.keep!r}; expected one of {', '.join(KEEPS)}")
        if self.peak is None:
            self.peak = self.auroc

    def offer(self, attempt: int, epoch: int, value: float | None, model: torch.nn.Module) -> bool:
        if value is not None and (self.peak is None or value > self.peak):
            self.peak = float(value)
        if self.keep == KEEP_BEST and (value is None or (self.auroc is not None and value <= self.auroc)):
            return False
        self.attempt, self.epoch = attempt, epoch
        self.auroc = None if value is None else float(value)
        self.state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        return True

    def summary(self) -> dict[str, Any]:
        return {"attempt": self.attempt, "epoch": self.epoch, "val_auroc": self.auroc}

    def to_checkpoint(self) -> dict[str, Any]:
        return {**self.summary(), "model": self.state, "keep": self.keep, "peak": self.peak}

    @classmethod
    def from_checkpoint(cls, saved: dict[str, Any] | None) -> BestEpoch:
        if not saved or saved.get("model") is None:
            return cls()
        return cls(int(saved["attempt"]), int(saved["epoch"]), saved["val_auroc"], dict(saved["model"]),
                   saved.get("keep", KEEP_BEST), saved.get("peak"))


@dataclass(frozen=True)
class Restarts:
    """Restart a CNN that has not learnt: after `after` epochs of an attempt whose best validation
    AUROC is under `below`, the weights are drawn again (seed + attempt) and the schedule starts
    over, at most `count` times. A from-scratch CNN on CPU stays at chance in some seeds
    (docs/benchmarks.md, Training); another draw of the initial weights learns."""

    count: int = 2
    after: int = 4
    below: float = 0.65


def epochs_without_gain(best: BestEpoch, attempt: int, epoch: int) -> int:
    """Epochs of `attempt` up to `epoch` (1-based) since its best validation AUROC: all of them
    while the attempt has not beaten an earlier attempt's best. Read from the best epoch alone, so
    a resumed run counts as the uninterrupted one would."""
    return epoch - best.epoch if best.attempt == attempt else epoch


def reinitialise(model: torch.nn.Module, seed: int) -> None:
    """Fresh initial weights for every layer, drawn from `seed`."""
    torch.manual_seed(seed)
    for module in model.modules():
        if module is not model and hasattr(module, "reset_parameters"):
            module.reset_parameters()


def restart_seed(seed: int, attempt: int) -> int:
    return seed + 7919 * attempt


def train_cnn(
    model: ImageEncoder,
    optimizer: torch.optim.Optimizer,
    train: Frames,
    val: Frames,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    grid_mask_p: float,
    seed: int,
    device: str = "cpu",
    start_epoch: int = 0,
    on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
    progress: bool = True,
    target: str = "object",
    pos_weight: float | None = None,
    augment: str = "dihedral",
    grid_mask_warmup: float = 0.0,
    restarts: Restarts | None = None,
    attempt: int = 0,
    best: BestEpoch | None = None,
    synthetic_anomalies: float = 0.0,
    patience: int = 0,
    keep: str = KEEP_BEST,
) -> list[dict[str, Any]]:
    """Train for epochs [start_epoch, epochs) of attempt `attempt`; calls on_epoch(epoch, record)
    after each (epoch 0-based within the attempt; record["attempt"] says which).

    target "label": the frame's defect label; "object": 1 only for object-caused defects
    (a parameter defect is invisible in the object image, so it would only be label noise for
    the image head; the parameter branch covers it). `pos_weight` weighs the defect class in
    the loss (None: balanced, `balanced_pos_weight`).

    `best` (updated in place; a fresh one when None) keeps the weights of the epoch with the best
    validation AUROC of the target, which the model holds when this returns; with `keep` "last",
    those of the last epoch trained (`BestEpoch.keep`). `restarts` (None:
    none) re-draws the weights of an attempt that stays near chance. `patience` > 0 ends training
    once that many epochs of the attempt have passed without a better validation AUROC
    (`epochs_without_gain`; the record says `stopped`): the kept weights are the best epoch's
    either way, so the epochs after it only cost time. A resumed run passes the attempt, start
    epoch and best epoch of its checkpoint.
    """
    from tqdm import tqdm

    history = []
    best = best if best is not None else BestEpoch()
    best.keep = keep
    labels = image_targets(train, target)
    if pos_weight is None:
        pos_weight = balanced_pos_weight(expected_targets(labels, synthetic_anomalies))
    weight = torch.tensor(float(pos_weight), device=device)
    n = len(train)
    epoch = start_epoch
    while epoch < epochs:
        model.train()
        rng = np.random.default_rng([restart_seed(seed, attempt), epoch])
        for group in optimizer.param_groups:
            group["lr"] = epoch_lr(lr, epoch, epochs)
        order = rng.permutation(n)
        epoch_grid_mask = grid_mask_probability(grid_mask_p, epoch, epochs, grid_mask_warmup)
        total, seen = 0.0, 0
        what = f"cnn epoch {epoch + 1}/{epochs}" + (f" (restart {attempt})" if attempt else "")
        bar = tqdm(range(0, n, batch_size), desc=what, unit="batch", disable=not progress, leave=False)
        for start in bar:
            idx = order[start : start + batch_size]
            if len(idx) < 2:  # batch norm needs two samples
                continue
            images, _ = grid_mask(train.rois[idx], epoch_grid_mask, rng)
            images, targets = add_synthetic_anomalies(images, labels[idx], synthetic_anomalies, rng)
            images = symmetries(images, augment, rng)
            x = torch.from_numpy(np.ascontiguousarray(images)).to(device)
            y = torch.from_numpy(targets).to(device)
            _, logit = model(x)
            loss = F.binary_cross_entropy_with_logits(logit[:, 0], y, pos_weight=weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
            seen += len(idx)
            bar.set_postfix(loss=f"{total / max(seen, 1):.4f}")
        _, val_logit = extract(model, val.rois, device)
        objects = image_scored(val, "object")
        record = {"epoch": epoch + 1, "attempt": attempt, "lr": epoch_lr(lr, epoch, epochs),
                  "grid_mask": epoch_grid_mask, "train_loss": total / max(seen, 1),
                  "val_image_auroc": auroc(val.labels, val_logit),
                  "val_object_auroc": auroc(val.labels[objects], val_logit[objects])}
        score = record["val_object_auroc"] if target == "object" else record["val_image_auroc"]
        record["best"] = best.offer(attempt, epoch + 1, score, model)
        # Every earlier attempt ended under `below`, so the best over all attempts is under it
        # exactly when this attempt's is (and it survives a resume, in the checkpoint).
        attempt_best = best.peak if best.peak is not None else 0.5
        restart = (restarts is not None and attempt < restarts.count and epoch + 1 == restarts.after
                   and epoch + 1 < epochs and attempt_best < restarts.below)
        record["restart"] = restart
        # Without a validation score (no object defect among the validation frames) there is no gain to wait for.
        record["stopped"] = stopped = (not restart and patience > 0 and epoch + 1 < epochs and best.auroc is not None
                                       and epochs_without_gain(best, attempt, epoch + 1) >= patience)
        history.append(record)
        if stopped and progress:
            print(f"cnn: no better validation AUROC in {patience} epochs (best {best.auroc:.3f}, epoch "
                  f"{best.epoch}): stopped after epoch {epoch + 1} of {epochs}")
        if restart:
            if progress:
                print(f"cnn: validation AUROC {attempt_best:.2f} < {restarts.below} after {epoch + 1} epochs: "
                      f"restart {attempt + 1} of at most {restarts.count} with fresh initial weights")
            attempt += 1
            reinitialise(model, restart_seed(seed, attempt))
            optimizer.state.clear()
            epoch = 0
        else:
            epoch += 1
        if on_epoch is not None:
            # After a restart the checkpoint holds the fresh weights at epoch 0 of the new attempt.
            on_epoch(epoch - 1, record)
        if stopped:
            break
    if best.state is not None:
        model.load_state_dict(best.state)
    return history
