"""Image-encoder training (paper 4.1: SGD, lr 0.01, weight decay 5e-4, cross-entropy; AdamW for
the compact CPU encoder, see `training.encoders.RECIPES`) and feature extraction.

The binary cross-entropy on one logit is the two-class cross-entropy of the paper. SGD uses
momentum 0.9; both optimisers follow a cosine learning-rate decay over the epochs (stateless per epoch, so a
resumed run follows the same schedule). Augmentation: random flips (and transposes, with
`augment="dihedral"`: the 8 symmetries of the square ROI) and GridMask with
probability `grid_mask` (robustness, paper 4.3). Batches are drawn from a generator seeded
by (seed, epoch): a resumed run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from training.augment import grid_mask
from training.data import Frames
from training.encoders import ImageEncoder


def channel_stats(rois: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    x = rois.reshape(-1, 3).astype(np.float64) / 255.0
    std = np.maximum(x.std(axis=0), 1e-3)
    return tuple(float(v) for v in x.mean(axis=0)), tuple(float(v) for v in std)


def build_encoder(name: str, embedding_dim: int, train_rois: np.ndarray) -> ImageEncoder:
    mean, std = channel_stats(train_rois)
    return ImageEncoder(name, embedding_dim, mean, std)


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


def image_targets(frames: Frames, target: str) -> np.ndarray:
    if target == "label":
        return frames.labels.astype(np.float32)
    if target == "object":
        return np.array([c == "object" for c in frames.causes], dtype=np.float32)
    raise ValueError(f"unknown image target {target!r}")


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
) -> list[dict[str, Any]]:
    """Train for epochs [start_epoch, epochs); calls on_epoch(epoch, record) after each.

    target "label": the frame's defect label; "object": 1 only for object-caused defects
    (a parameter defect is invisible in the object image, so it would only be label noise for
    the image head; the parameter branch covers it). `pos_weight` weighs the defect class in
    the loss (None: balanced, `balanced_pos_weight`).
    """
    from tqdm import tqdm

    history = []
    labels = image_targets(train, target)
    weight = torch.tensor(balanced_pos_weight(labels) if pos_weight is None else float(pos_weight), device=device)
    n = len(train)
    for epoch in range(start_epoch, epochs):
        model.train()
        rng = np.random.default_rng([seed, epoch])
        for group in optimizer.param_groups:
            group["lr"] = epoch_lr(lr, epoch, epochs)
        order = rng.permutation(n)
        epoch_grid_mask = grid_mask_probability(grid_mask_p, epoch, epochs, grid_mask_warmup)
        total, seen = 0.0, 0
        bar = tqdm(range(0, n, batch_size), desc=f"cnn epoch {epoch + 1}/{epochs}", unit="batch",
                   disable=not progress, leave=False)
        for start in bar:
            idx = order[start : start + batch_size]
            if len(idx) < 2:  # batch norm needs two samples
                continue
            images, _ = grid_mask(train.rois[idx], epoch_grid_mask, rng)
            images = symmetries(images, augment, rng)
            x = torch.from_numpy(np.ascontiguousarray(images)).to(device)
            y = torch.from_numpy(labels[idx]).to(device)
            _, logit = model(x)
            loss = F.binary_cross_entropy_with_logits(logit[:, 0], y, pos_weight=weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
            seen += len(idx)
            bar.set_postfix(loss=f"{total / max(seen, 1):.4f}")
        _, val_logit = extract(model, val.rois, device)
        objects = np.array([c != "param" for c in val.causes])
        record = {"epoch": epoch + 1, "lr": epoch_lr(lr, epoch, epochs), "grid_mask": epoch_grid_mask,
                  "train_loss": total / max(seen, 1),
                  "val_image_auroc": auroc(val.labels, val_logit),
                  "val_object_auroc": auroc(val.labels[objects], val_logit[objects])}
        history.append(record)
        if on_epoch is not None:
            on_epoch(epoch, record)
    return history
