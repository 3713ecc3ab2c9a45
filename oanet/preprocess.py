"""Client-side preprocessing that training, evaluation, the stream worker and the benchmarks share:
the object ROI the CNN sees, the parameter arrays the fusion model takes and the present fraction.

The served model (triton_models/oanet_fusion/core.py) receives what these make; it never cuts
frames itself. One function each, so the CNN and the fusion model see the same inputs in
training and in serving (docs/contracts.md "Model repository").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from oanet.errors import OanetError


class PreprocessError(OanetError):
    """A frame that cannot be preprocessed (not a uint8 BGR image)."""


def scale_roi(roi: Sequence[int], frame_size: tuple[int, int], shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """A profile ROI [x, y, w, h] (profile frame `frame_size` = (width, height)) on an image
    of `shape` (frames of another size are scaled to the profile frame, docs/contracts.md)."""
    x, y, w, h = (int(v) for v in roi)
    fw, fh = frame_size
    height, width = shape[:2]
    if (width, height) == (fw, fh):
        return x, y, w, h
    sx, sy = width / fw, height / fh
    x0, y0 = int(round(x * sx)), int(round(y * sy))
    x1, y1 = int(round((x + w) * sx)), int(round((y + h) * sy))
    x0, y0 = min(max(x0, 0), width - 1), min(max(y0, 0), height - 1)
    return x0, y0, max(1, min(x1, width) - x0), max(1, min(y1, height) - y0)


def crop_object_roi(frame: np.ndarray, roi: Sequence[int], frame_size: tuple[int, int], size: int) -> np.ndarray:
    """The CNN input of one frame: the object ROI resized to size x size, uint8 BGR HWC.

    `frame` is the decoded frame (BGR uint8, any size of the profile's aspect ratio; grey
    images are expanded to 3 channels), `roi` the profile's object_roi and `frame_size`
    (width, height) the profile frame. Resizing uses cv2.INTER_AREA. Training and the stream
    client both call this function, so the CNN sees the same pixels in both.
    """
    image = np.asarray(frame)
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise PreprocessError(f"frame must be a uint8 BGR image, got dtype {image.dtype} shape {tuple(image.shape)}")
    x, y, w, h = scale_roi(roi, frame_size, image.shape)
    patch = image[y : y + h, x : x + w]
    out = cv2.resize(patch, (int(size), int(size)), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(out, dtype=np.uint8)


def param_arrays(rows: Sequence[Mapping[str, Any]], feature_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Parameter dicts (name -> number | None) -> values float32 [N, F] (NaN missing), missing bool.

    A value that is None, absent, not a number, NaN or infinite counts as missing.
    """
    values = np.full((len(rows), len(feature_names)), np.nan, dtype=np.float32)
    for i, row in enumerate(rows):
        for j, name in enumerate(feature_names):
            value = row.get(name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
                continue
            if math.isfinite(float(value)):
                values[i, j] = float(value)
    return values, np.isnan(values)
