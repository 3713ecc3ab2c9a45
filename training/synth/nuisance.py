"""Capture nuisances: what the camera, optics and transport do to a frame.

About 45% of frames stay clean (only the camera's baseline noise on the object), the rest get
one or more nuisances. Geometry stays small (rotation <= 0.7 degree, shift <= 4 px) and blur
mild, so printed text remains legible and inside its field roi; heavy damage to the panel is the
job of smudging, which is recorded per field.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

CLEAN_SHARE = 0.45
# Probability of each nuisance on a frame that is not clean (at least one is applied).
KIND_PROBABILITIES = {
    "lighting": 0.4,
    "exposure": 0.35,
    "shift": 0.3,
    "rotation": 0.25,
    "blur": 0.2,
    "noise": 0.35,
    "jpeg": 0.3,
}
NUISANCE_KINDS = (*KIND_PROBABILITIES, "smudge")
MAX_ROTATION_DEG = 0.7
MAX_SHIFT_PX = 4
_BANK_SEED = 777
_BANK_MARGIN = 32


def choose_kinds(rng: np.random.Generator) -> list[str]:
    if rng.random() < CLEAN_SHARE:
        return []
    kinds = [k for k, p in KIND_PROBABILITIES.items() if rng.random() < p]
    return kinds or [list(KIND_PROBABILITIES)[int(rng.integers(len(KIND_PROBABILITIES)))]]


@functools.lru_cache(maxsize=4)
def _noise_bank(height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(_BANK_SEED)
    return rng.standard_normal((height + _BANK_MARGIN, width + _BANK_MARGIN, 3), dtype=np.float32)


def _noise(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    bank = _noise_bank(height, width)
    y, x = (int(v) for v in rng.integers(0, _BANK_MARGIN, size=2))
    patch = bank[y : y + height, x : x + width]
    return patch[::-1] if rng.random() < 0.5 else patch


def sensor_noise(region: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    noisy = region.astype(np.float32) + sigma * _noise(rng, *region.shape[:2])
    return np.clip(noisy, 0, 255).astype(np.uint8)


def apply_capture(frame: np.ndarray, kinds: list[str], rng: np.random.Generator) -> np.ndarray:
    """Geometry, optics and photometry of the listed kinds (JPEG is applied after any resize)."""
    height, width = frame.shape[:2]
    if "shift" in kinds or "rotation" in kinds:
        angle = rng.uniform(0.15, MAX_ROTATION_DEG) * rng.choice([-1, 1]) if "rotation" in kinds else 0.0
        matrix = cv2.getRotationMatrix2D((width / 2, height / 2), float(angle), 1.0)
        if "shift" in kinds:
            matrix[:, 2] += rng.integers(-MAX_SHIFT_PX, MAX_SHIFT_PX + 1, size=2)
        frame = cv2.warpAffine(frame, matrix, (width, height), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)
    if "blur" in kinds:
        frame = cv2.GaussianBlur(frame, (0, 0), float(rng.uniform(0.5, 0.9)))
    if not {"lighting", "exposure", "noise"} & set(kinds):
        return frame
    work = frame.astype(np.float32)
    if "lighting" in kinds:
        # A smooth illumination gradient from a random side, built small and upsampled.
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[-1:1:6j, -1:1:8j].astype(np.float32)
        ramp = np.cos(angle) * xx + np.sin(angle) * yy
        gain = 1.0 + rng.uniform(0.08, 0.18) * ramp
        work *= cv2.resize(gain, (width, height), interpolation=cv2.INTER_LINEAR)[..., None]
    if "exposure" in kinds:
        contrast = rng.uniform(0.8, 1.2)
        work = (work - 128.0) * contrast + 128.0 + rng.uniform(-22, 22)
    if "noise" in kinds:
        work += rng.uniform(2.5, 6.0) * _noise(rng, height, width)
    return np.clip(work, 0, 255).astype(np.uint8)


def jpeg_round_trip(frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    quality = int(rng.integers(55, 86))
    ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - OpenCV's JPEG encoder does not fail on a valid uint8 image
        return frame
    return cv2.imdecode(data, cv2.IMREAD_COLOR)
