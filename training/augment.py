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


# Synthetic anomalies (`--synthetic-anomalies P`): a share of the good training images gets one
# local irregularity drawn on it and counts as a defect for the image head. A line has many good
# frames and few defects; the CNN learns "a local change against the regular rest of the
# object" from unlimited examples (the idea of CutPaste, Li et al. 2021, and DRAEM, Zavrtanik et
# al. 2021). The shapes are generic (blobs, strokes, a patch moved elsewhere), not a copy of any
# defect generator's drawing.
ANOMALY_SHAPES = ("blob", "stroke", "patch")


def synthetic_anomaly(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random local anomaly on an HxWxC uint8 image; returns a new image."""
    import cv2

    h, w = image.shape[:2]
    side = min(h, w)
    shape = ANOMALY_SHAPES[int(rng.integers(len(ANOMALY_SHAPES)))]
    out = image.astype(np.float32)
    center = np.array([rng.uniform(0.15, 0.85) * w, rng.uniform(0.15, 0.85) * h])
    if shape == "patch":
        size = max(3, int(rng.uniform(0.04, 0.14) * side))
        sx, sy = int(rng.integers(0, w - size)), int(rng.integers(0, h - size))
        patch = out[sy:sy + size, sx:sx + size].copy()
        patch = np.rot90(patch, int(rng.integers(1, 4)))
        patch = patch * rng.uniform(0.6, 1.4)
        dx = int(np.clip(center[0] - size / 2, 0, w - size))
        dy = int(np.clip(center[1] - size / 2, 0, h - size))
        out[dy:dy + size, dx:dx + size] = patch
        return np.clip(out, 0, 255).astype(np.uint8)
    delta = np.zeros((h, w), np.float32)
    # Contrast from barely visible to strong, dark or bright: a real defect's contrast is unknown.
    amount = float(rng.uniform(12, 90)) * (1 if rng.random() < 0.35 else -1)
    if shape == "blob":
        radius = rng.uniform(0.008, 0.06) * side
        vertices = int(rng.integers(5, 10))
        angles = np.sort(rng.uniform(0, 2 * np.pi, vertices))
        radii = radius * (1 + rng.uniform(-0.4, 0.4, vertices))
        points = center + np.stack([np.cos(angles) * radii, np.sin(angles) * radii], axis=1)
        cv2.fillPoly(delta, [np.round(points).astype(np.int32)], amount, cv2.LINE_AA)
    else:
        steps = int(rng.integers(4, 14))
        heading = rng.uniform(0, 2 * np.pi)
        points = [center]
        for _ in range(steps):
            heading += rng.normal(0, 0.5)
            points.append(points[-1] + rng.uniform(0.01, 0.05) * side * np.array([np.cos(heading), np.sin(heading)]))
        width = max(1, int(round(rng.uniform(0.002, 0.02) * side)))
        cv2.polylines(delta, [np.round(np.array(points)).astype(np.int32)], False, amount, width, cv2.LINE_AA)
    delta = cv2.GaussianBlur(delta, (0, 0), max(0.5, 0.002 * side))
    out += delta[..., None]
    return np.clip(out, 0, 255).astype(np.uint8)


def add_synthetic_anomalies(images: np.ndarray, targets: np.ndarray, p: float,
                            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Each image with target 0 gets a synthetic anomaly (and target 1) with probability p:
    (images, targets), copies where anything changed."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"synthetic-anomaly probability must be in [0, 1], got {p}")
    chosen = np.flatnonzero((targets == 0) & (rng.random(len(targets)) < p))
    if len(chosen) == 0:
        return images, targets
    images, targets = images.copy(), targets.copy()
    for i in chosen:
        images[i] = synthetic_anomaly(images[i], rng)
        targets[i] = 1.0
    return images, targets
