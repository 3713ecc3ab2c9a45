"""Robustness augmentations of the paper (sections 3.2 and 4.3), on numpy arrays.

* `grid_mask`: GridMask (Chen et al. 2020) on uint8 NHWC object images: in every d x d cell of
  a grid with a random period d and offset, a square of side round(ratio * d) is filled with
  the image's own mean colour (ratio 0.5 hides about 25% of the image). Applied to each image
  with probability p. The reference implementation multiplies the normalised input by the
  mask, so a hole is the mean there; a black (uint8 0) hole looked like a void or a particle,
  the very defects the CNN must find, and taught it that good frames with holes are defects.
* `ocr_dropout`: mask learning; each present OCR field is turned missing with probability p
  (value NaN, mask True), simulating OCR failures.

Both take a `numpy.random.Generator`, so a seed reproduces them exactly (evaluation uses
seeded corruption; training draws fresh masks per epoch from the run's seed).
"""

from __future__ import annotations

import numpy as np


def grid_mask_one(image: np.ndarray, rng: np.random.Generator, ratio: float = 0.5,
                  d_range: tuple[float, float] = (0.2, 0.45)) -> np.ndarray:
    """One GridMask draw on an HxWxC (or HxW) image; returns a copy with the holes filled with the
    image's mean colour (per channel), which the encoder's per-image normalisation maps to 0."""
    h, w = image.shape[:2]
    side = min(h, w)
    d = int(rng.integers(max(2, int(d_range[0] * side)), max(3, int(d_range[1] * side)) + 1))
    hole = max(1, int(round(ratio * d)))
    ox, oy = int(rng.integers(0, d)), int(rng.integers(0, d))
    keep = np.ones((h, w), dtype=bool)
    for y0 in range(oy - d, h, d):
        for x0 in range(ox - d, w, d):
            y_lo, x_lo = max(y0, 0), max(x0, 0)
            y_hi, x_hi = min(y0 + hole, h), min(x0 + hole, w)
            if y_hi > y_lo and x_hi > x_lo:
                keep[y_lo:y_hi, x_lo:x_hi] = False
    out = image.copy()
    fill = image.reshape(h * w, -1).mean(axis=0) if image.ndim == 3 else image.mean()
    out[~keep] = np.round(fill).astype(image.dtype)
    return out


def grid_mask(images: np.ndarray, p: float, rng: np.random.Generator, ratio: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """GridMask each image of a batch with probability p: (images copy, applied bool [N])."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"grid-mask probability must be in [0, 1], got {p}")
    applied = rng.random(len(images)) < p
    out = images.copy()
    for i in np.flatnonzero(applied):
        out[i] = grid_mask_one(images[i], rng, ratio)
    return out, applied


def ocr_dropout(values: np.ndarray, missing: np.ndarray, p: float,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Turn each present field missing with probability p: (values with NaN, missing mask)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"OCR dropout rate must be in [0, 1], got {p}")
    drop = rng.random(missing.shape) < p
    new_missing = np.asarray(missing, dtype=bool) | drop
    new_values = np.where(new_missing, np.nan, values).astype(np.float32)
    return new_values, new_missing
