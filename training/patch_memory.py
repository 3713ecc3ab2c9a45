"""Patch memory: an image score learnt from the good training frames alone (the idea of
PatchCore, Roth et al. 2022, with random instead of pretrained features).

Every good training ROI goes through a frozen, randomly initialised copy of the compact CNN's
two stages; each position of their last map describes a 29 px window of a 192 px ROI. A random
sample of those window descriptions is the memory. A frame's memory score is the largest, over
its windows, of the distance to the nearest remembered window: a window unlike any window of a
good frame (a bare pad where a ball belongs, a stain on the mask) scores high, whatever the
defect, and no defect example is needed. This is the template comparison many AOI systems make,
with the good frames' windows as the template, so it needs no aligned golden image.

Why beside the supervised CNN: with a dozen examples of a kind, the CNN misses defects that are
obvious to the eye (on `oanet synth --package bga` it ranked plain missing balls at 0.3-0.9
AUROC), while the memory ranks them near 1.0; the CNN keeps what the memory does not separate
from the good frames' own variety (faint cracks, scratches). The image logit is a logistic
regression of the two, fitted on the validation frames (`fit_mix`); docs/benchmarks.md,
"Patch memory".

Pure functions (`sample_windows`, `fit_mix`) and two torch modules; `attach` is the training
entry point.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from training.encoders import COMPACT_WIDTHS, ImageEncoder, compact_cnn, normalised_input, stem_stride

MIN_BANK_SIZE = 100
# The distance to the bank is computed this many remembered windows at a time: a [P, 512] block
# stays in cache (a batch of 8 192 px ROIs against 10,000 windows took 48 ms in blocks of 512
# and 120 ms in blocks of 1,024 on the 2-core box), and a batch of 128 ROIs holds 150 MB.
BANK_CHUNK = 512


def memory_features(image_size: int, seed: int) -> nn.Module:
    """The frozen window describer: the compact CNN's stages (no global pool), with initial weights
    drawn from `seed` without touching the global torch random stream."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        stages, _ = compact_cnn(COMPACT_WIDTHS, stem_stride(image_size))
    features = nn.Sequential(*list(stages)[:-1]).eval()
    for p in features.parameters():
        p.requires_grad_(False)
    return features


class PatchMemory(nn.Module):
    """normalised [N, 3, S, S] -> (memory score [N], unfamiliar share [N]): the largest distance of
    a window to the nearest remembered good window, and the share of the frame's windows farther
    than `window_limit` from every remembered one."""

    def __init__(self, features: nn.Module, bank: torch.Tensor):
        super().__init__()
        self.features = features
        self.register_buffer("bank", bank.float())
        self.register_buffer("bank_sq", (bank.float() ** 2).sum(dim=1))
        self.register_buffer("window_limit", torch.tensor(float("inf")))

    def windows(self, x: torch.Tensor) -> torch.Tensor:
        """[N, P, C]: each window's description."""
        return self.features(x).flatten(2).transpose(1, 2)

    def distances(self, x: torch.Tensor) -> torch.Tensor:
        """[N, P]: each window's distance to the nearest remembered window."""
        f = self.windows(x)
        # |f - b|^2 = |f|^2 + |b|^2 - 2 f.b: the nearest b needs only |b|^2 - 2 f.b, one fused
        # baddbmm per block, and |f|^2 is added once at the end.
        nearest = torch.full_like(f[..., 0], float("inf"))
        for start in range(0, int(self.bank.shape[0]), BANK_CHUNK):  # a fixed bank: unrolled when traced
            chunk = self.bank[start : start + BANK_CHUNK]
            d2 = torch.baddbmm(self.bank_sq[start : start + BANK_CHUNK].view(1, 1, -1), f,
                               chunk.t().unsqueeze(0).expand(f.size(0), -1, -1), alpha=-2.0)
            nearest = torch.minimum(nearest, d2.amin(dim=2))
        return (nearest + (f ** 2).sum(dim=2)).clamp_min(0.0).sqrt()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.distances(x)
        return d.amax(dim=1), (d > self.window_limit).float().mean(dim=1)


class MemoryScoredEncoder(nn.Module):
    """The served image encoder with a patch memory: the CNN's embedding, and an image logit that
    is `mix` (a * CNN logit + b * memory score + c), or `fallback` (the CNN logit alone) on a frame
    whose unfamiliar share is above `share_limit`. Same tensors in and out as `ImageEncoder`, so
    Triton and the fusion model see no difference.

    Why the fallback: a defect makes a few windows unfamiliar, an occluded, smeared or otherwise
    degraded image makes many (GridMask on every image: a quarter to a half of them, against at
    most 9% on clean frames). The memory cannot tell such a frame from a defect, and would flag
    every one; the CNN, trained with GridMask, can. So on a degraded frame the memory abstains,
    and the KL gate judges the image modality as it did without it."""

    def __init__(self, encoder: ImageEncoder, memory: PatchMemory, mix: tuple[float, float, float],
                 fallback: tuple[float, float, float], share_limit: float):
        super().__init__()
        self.encoder = encoder
        self.memory = memory
        self.register_buffer("mix", torch.tensor(mix, dtype=torch.float32))
        self.register_buffer("fallback", torch.tensor(fallback, dtype=torch.float32))
        self.register_buffer("share_limit", torch.tensor(float(share_limit)))

    # The argument is named like the Triton input tensor, as in ImageEncoder.forward.
    def forward(self, OBJECT_ROI: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: N803
        x = normalised_input(OBJECT_ROI)
        embedding, logit = self.encoder.encode(x)
        score, share = self.memory(x)
        mixed = self.mix[0] * logit + self.mix[1] * score[:, None] + self.mix[2]
        alone = self.fallback[0] * logit + self.fallback[2]
        return embedding, torch.where((share > self.share_limit)[:, None], alone, mixed)


def sample_windows(batches, bank_size: int, total_frames: int, rng: np.random.Generator) -> np.ndarray:
    """A uniform sample of about `bank_size` window descriptions from `batches` ([n, P, C] float
    arrays over `total_frames` frames): the same number from every frame, so memory stays bounded
    however many good frames a line has."""
    per_frame = max(1, int(np.ceil(bank_size / max(1, total_frames))))
    picked = []
    for windows in batches:
        for frame in windows:
            take = min(per_frame, len(frame))
            picked.append(frame[rng.choice(len(frame), take, replace=False)])
    if not picked:
        raise ValueError("no good frames to remember")
    bank = np.concatenate(picked)
    if len(bank) > bank_size:
        bank = bank[rng.choice(len(bank), bank_size, replace=False)]
    return bank.astype(np.float32)


@dataclass(frozen=True)
class Mix:
    """image logit = cnn * CNN logit + memory * memory score + bias, and how it was chosen."""

    cnn: float
    memory: float
    bias: float
    fitted_on: int  # validation frames the regression saw (0: not fitted, CNN logit alone)

    def as_tuple(self) -> tuple[float, float, float]:
        return (self.cnn, self.memory, self.bias)


def fit_mix(cnn_logit: np.ndarray, memory_score: np.ndarray | None, targets: np.ndarray) -> Mix:
    """Logistic regression of the image target on the CNN logit and (unless None) the memory score,
    each standardised on the frames given, folded back into one linear map of the raw inputs.
    Without both classes the CNN logit stays alone."""
    from sklearn.linear_model import LogisticRegression

    targets = np.asarray(targets).astype(int)
    if len(set(targets.tolist())) < 2:
        return Mix(1.0, 0.0, 0.0, 0)
    columns = [np.asarray(cnn_logit, np.float64)] + ([] if memory_score is None else [np.asarray(memory_score, np.float64)])
    x = np.stack(columns, axis=1)
    mean, std = x.mean(axis=0), np.maximum(x.std(axis=0), 1e-9)
    model = LogisticRegression().fit((x - mean) / std, targets)
    weights = model.coef_[0] / std
    bias = float(model.intercept_[0] - (weights * mean).sum())
    return Mix(float(weights[0]), float(weights[1]) if memory_score is not None else 0.0, bias, int(len(targets)))


# A frame counts as degraded when its share of unfamiliar windows is above this many times the
# 99.5th percentile of the validation frames' shares. Not the KL gate's margin of 2: the shares
# of clean and GridMasked frames overlap in their tails (on `synth --n 1500 --seed 3`, clean test
# frames at most 0.08, GridMasked ones from 0.07, median 0.27), and at 2x the memory stayed on for
# a fifth of the GridMasked frames and flagged them (docs/benchmarks.md).
DEGRADED_MARGIN = 1.0
# ... but never under this share: on a small or very uniform validation set the quantile can be 0,
# and a single unfamiliar window (a defect) must not make a frame degraded.
MIN_SHARE_LIMIT = 0.05
# A window is unfamiliar beyond this quantile of the validation good frames' window distances.
WINDOW_QUANTILE = 0.99


def _normalised_batches(rois: np.ndarray, batch_size: int, device: str):
    """The encoder's input of uint8 ROIs [N, S, S, 3], `batch_size` frames at a time."""
    for start in range(0, len(rois), batch_size):
        yield normalised_input(torch.from_numpy(np.ascontiguousarray(rois[start : start + batch_size])).to(device))


@torch.no_grad()
def memory_scores(encoder: ImageEncoder, memory: PatchMemory, rois: np.ndarray, device: str = "cpu",
                  batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(CNN logit [N], window distances [N, P]) of uint8 ROIs."""
    encoder.eval()
    logits, distances = [], []
    for x in _normalised_batches(rois, batch_size, device):
        logits.append(encoder.encode(x)[1][:, 0].float().cpu().numpy())
        distances.append(memory.distances(x).float().cpu().numpy())
    if not logits:
        return np.zeros(0, np.float32), np.zeros((0, 0), np.float32)
    return np.concatenate(logits), np.concatenate(distances)


@torch.no_grad()
def build_memory(good_rois: np.ndarray, image_size: int, bank_size: int, seed: int, device: str = "cpu",
                 batch_size: int = 64) -> PatchMemory:
    """The patch memory of the good training ROIs (uint8 [N, S, S, 3])."""
    features = memory_features(image_size, seed).to(device)
    rng = np.random.default_rng([seed, 2024])

    batches = (features(x).flatten(2).transpose(1, 2).cpu().numpy()
               for x in _normalised_batches(good_rois, batch_size, device))
    bank = sample_windows(batches, bank_size, len(good_rois), rng)
    return PatchMemory(features, torch.from_numpy(bank).to(device))


@dataclass(frozen=True)
class MemoryReport:
    bank: int
    mix: Mix
    fallback: Mix
    window_limit: float
    share_limit: float
    val_degraded: int  # validation frames the memory abstained on
    val_auroc: dict[str, float | None]  # of the CNN logit, the memory score and the served logit

    def to_json(self) -> dict:
        def mix(m: Mix) -> dict:
            return {"cnn": m.cnn, "memory": m.memory, "bias": m.bias, "fitted_on": m.fitted_on}

        return {"bank": self.bank, "mix": mix(self.mix), "fallback": mix(self.fallback),
                "window_limit": self.window_limit, "share_limit": self.share_limit,
                "val_degraded": self.val_degraded, "val_auroc": self.val_auroc}


def attach(encoder: ImageEncoder, train_good_rois: np.ndarray, val_rois: np.ndarray, val_targets: np.ndarray,
           val_scored: np.ndarray, *, image_size: int, bank_size: int, seed: int,
           device: str = "cpu") -> tuple[MemoryScoredEncoder, MemoryReport]:
    """The trained `encoder` with a patch memory of the good training frames. On the validation
    frames: the window and share limits (from all of them, clean as they are), and the mix and
    the fallback fitted where `val_scored` (the image target's frames: good and object defects)."""
    from training.cnn import auroc

    memory = build_memory(train_good_rois, image_size, bank_size, seed, device)
    cnn_logit, distances = memory_scores(encoder, memory, val_rois, device)
    targets, mask = np.asarray(val_targets), np.asarray(val_scored, bool)
    good = mask & (targets == 0)
    window_limit = float(np.quantile(distances[good] if good.any() else distances, WINDOW_QUANTILE))
    memory.window_limit.fill_(window_limit)
    score, share = distances.max(axis=1), (distances > window_limit).mean(axis=1)
    share_limit = max(DEGRADED_MARGIN * float(np.quantile(share, 0.995)), MIN_SHARE_LIMIT)
    mix = fit_mix(cnn_logit[mask], score[mask], targets[mask])
    fallback = fit_mix(cnn_logit[mask], None, targets[mask])
    degraded = share > share_limit
    served = np.where(degraded, fallback.cnn * cnn_logit + fallback.bias,
                      mix.cnn * cnn_logit + mix.memory * score + mix.bias)
    report = MemoryReport(int(memory.bank.shape[0]), mix, fallback, window_limit, share_limit, int(degraded.sum()), {
        "cnn": auroc(targets[mask], cnn_logit[mask]),
        "memory": auroc(targets[mask], score[mask]),
        "served": auroc(targets[mask], served[mask]),
    })
    return MemoryScoredEncoder(encoder, memory, mix.as_tuple(), fallback.as_tuple(), share_limit).eval(), report
