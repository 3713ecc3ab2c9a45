"""A field line of a distillation, and the capture nuisances its views are made with.

Below `stream.ocr.distill` (training) and `stream.ocr.calibration` (held-out checks): both
make views of lines.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from stream.ocr import crops as cropping
from stream.ocr.student import line_input, line_steps


@dataclass
class Line:
    frame_id: str
    field: int
    slot: np.ndarray  # grey uint8 ROI crop (before trimming), for augmentation
    trimmed: np.ndarray  # grey uint8, as the reader trims it
    value: float | int | str | None = None  # the label's value (None: unlabelled)
    source: str | None = None
    nuisance: bool = False


# -- augmentation (capture nuisances on a grey line slot) --------------------------------


def augment(slot: np.ndarray, rng: np.random.Generator, strong: bool, shift: bool = True) -> np.ndarray:
    """Capture nuisances on a grey crop; `shift`: also move it within the crop (a slot, not a
    trimmed line: the glyphs would leave it)."""
    image = slot.astype(np.float32)
    if rng.random() < (0.8 if strong else 0.4):  # exposure / lighting
        gain = rng.uniform(0.55, 1.45) if strong else rng.uniform(0.85, 1.15)
        image = image * gain + rng.uniform(-45, 45) * (1.0 if strong else 0.3)
    if shift and strong and rng.random() < 0.5:  # shift within the slot
        dx, dy = rng.uniform(-8, 8), rng.uniform(-4, 4)
        matrix = np.float32([[1, 0, dx], [0, 1, dy]])
        image = cv2.warpAffine(image, matrix, (image.shape[1], image.shape[0]), borderMode=cv2.BORDER_REPLICATE)
    if rng.random() < (0.5 if strong else 0.2):  # blur
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.4, 1.6 if strong else 0.8))
    if rng.random() < (0.6 if strong else 0.3):  # sensor noise
        image = image + rng.normal(0, rng.uniform(2, 12 if strong else 5), image.shape)
    out = np.clip(image, 0, 255).astype(np.uint8)
    if strong and rng.random() < 0.4:  # JPEG
        ok, buffer = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(25, 90))])
        if ok:
            out = cv2.imdecode(buffer, cv2.IMREAD_GRAYSCALE)
    return out


def slot_view(line: Line, rng: np.random.Generator, strong: bool, height: int, width: int) -> tuple[np.ndarray, int]:
    """An augmented input of a line from its whole slot (shifts included), trimmed again as the
    reader trims, and its time steps (`line_steps`): the held-out nuisance views."""
    trimmed = cropping.trim_to_ink(augment(line.slot, rng, strong))
    trimmed = trimmed if trimmed is not None else line.trimmed
    return line_input(trimmed, height, width), line_steps(trimmed, height, width)
