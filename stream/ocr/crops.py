"""Image side of the OCR stage without the recognizer: decode, fit to the profile, crop, trim,
and group detected boxes into printed lines. Pure functions on numpy arrays (OpenCV only).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from oanet.profile import LineProfile
from stream.ocr.errors import FrameMismatchError, ImageDecodeError

# A frame is scaled to the profile frame when its aspect ratio is within this of the
# profile's; beyond that the layout cannot be the profile's (e.g. portrait vs landscape).
MAX_ASPECT_MISMATCH = 0.10
# Ink: pixels this far (grey levels) from their column's background, at least, and at least
# this many times the slot's noise (the median distance of its pixels from their background).
MIN_INK_CONTRAST = 28
NOISE_FACTOR = 6.0
# Connected ink blobs smaller than this many pixels are sensor noise, not strokes or dots.
MIN_BLOB_AREA = 4
# Rows holding at least this share of the densest row's ink belong to the text band.
BAND_ROW_SHARE = 0.15
# Margin kept around trimmed ink, as a share of the ink height: PP-OCR's recognizer was
# trained on detector crops, which have about this much context; none or a lot both hurt.
TRIM_MARGIN_Y = 0.25
TRIM_MARGIN_X = 0.5


def decode_image(data: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    """Encoded PNG/JPEG bytes (or an already decoded array) -> BGR uint8 image."""
    if isinstance(data, np.ndarray):
        image = data
    else:
        if data is None or len(data) == 0:
            raise ImageDecodeError("frame is empty (0 bytes); expected PNG or JPEG image bytes")
        buffer = np.frombuffer(bytes(data), np.uint8)
        image = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
        if image is None:
            raise ImageDecodeError(f"frame is not a decodable PNG/JPEG image ({len(data)} bytes)")
    if image.size == 0 or image.ndim not in (2, 3):
        raise ImageDecodeError(f"frame has an unusable shape {tuple(image.shape)}")
    if image.dtype != np.uint8:
        if image.dtype == np.uint16:
            image = (image // 257).astype(np.uint8)
        else:
            raise ImageDecodeError(f"frame has an unsupported pixel type {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] != 3:
        raise ImageDecodeError(f"frame has {image.shape[2]} channels; expected 1, 3 or 4")
    return image


def fit_to_profile(image: np.ndarray, profile: LineProfile) -> np.ndarray:
    """Scale a frame to the profile's frame size (docs/contracts.md), refusing another layout."""
    height, width = image.shape[:2]
    target_w, target_h = profile.frame.width, profile.frame.height
    if (width, height) == (target_w, target_h):
        return image
    ratio, target_ratio = width / height, target_w / target_h
    if abs(ratio / target_ratio - 1.0) > MAX_ASPECT_MISMATCH:
        raise FrameMismatchError(
            f"frame {width}x{height} does not fit line profile {profile.name!r} "
            f"({target_w}x{target_h}): aspect ratio {ratio:.3f} vs {target_ratio:.3f}"
        )
    interpolation = cv2.INTER_AREA if width > target_w else cv2.INTER_CUBIC
    return cv2.resize(image, (target_w, target_h), interpolation=interpolation)


def crop(image: np.ndarray, roi: Sequence[int]) -> np.ndarray:
    x, y, w, h = roi
    return image[y : y + h, x : x + w]


def ink_mask(gray: np.ndarray) -> np.ndarray:
    """Pixels that differ from their column's background; either polarity of print."""
    # The median of a column is background as long as text covers less than half of it,
    # which holds for a line slot; per column so a lighting gradient does not read as ink.
    background = _column_medians(gray)
    diff = np.abs(gray.astype(np.int16) - background.astype(np.int16))
    threshold = MIN_INK_CONTRAST
    # The noise only matters when it is high enough to raise the threshold: it cannot be when
    # half the pixels are below that level, and a whole median costs more than counting them.
    if np.count_nonzero(diff > MIN_INK_CONTRAST / NOISE_FACTOR) > (diff.size - 1) // 2:
        threshold = max(MIN_INK_CONTRAST, NOISE_FACTOR * float(np.median(diff)))
    return (diff > threshold).astype(np.uint8)


def _column_medians(gray: np.ndarray) -> np.ndarray:
    """np.median(gray, axis=0) of a grey image, partially sorting its columns as rows: numpy's
    own works on the strided columns, and takes a third longer on a slot."""
    rows = gray.shape[0]
    middle = sorted({(rows - 1) // 2, rows // 2})
    return np.partition(cv2.transpose(gray), middle, axis=1)[:, middle].mean(axis=1)


def ink_box(image: np.ndarray) -> tuple[int, int, int, int] | None:
    """[x, y, w, h] around the ink of a line slot, or None when the slot is blank."""
    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    ink = ink_mask(gray)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= MIN_BLOB_AREA
    keep[0] = False  # label 0 is the background
    if not keep.any():
        return None
    # Most slots have no speck to drop, and looking every pixel's blob up costs more than the rest.
    mask = ink.astype(bool) if keep[1:].all() else keep[labels]
    # The text band: rows with a real share of the line's ink. Bounding boxes of blobs would
    # follow a thin artefact (a blur/JPEG streak, a neighbour's descender) to the slot edge
    # and shrink the text the recognizer sees; row projections ignore it.
    rows = mask.sum(axis=1)
    dense = np.flatnonzero(rows >= max(1.0, BAND_ROW_SHARE * rows.max()))
    y0, y1 = _densest_run(dense, rows, max_gap=2)
    columns = np.flatnonzero(mask[y0:y1].any(axis=0))
    return int(columns[0]), y0, int(columns[-1] - columns[0] + 1), y1 - y0


def _densest_run(indices: np.ndarray, weights: np.ndarray, max_gap: int) -> tuple[int, int]:
    """[start, end) of the run of `indices` (gaps up to max_gap merged) with the most weight."""
    best, best_weight = (int(indices[0]), int(indices[0]) + 1), -1.0
    start = prev = int(indices[0])
    for i in [*map(int, indices[1:]), None]:
        if i is None or i - prev > max_gap + 1:
            weight = float(weights[start : prev + 1].sum())
            if weight > best_weight:
                best, best_weight = (start, prev + 1), weight
            if i is None:
                break
            start = i
        prev = i
    return best


def trim_to_ink(image: np.ndarray) -> np.ndarray | None:
    """The slot cut down to its ink plus a margin (None when blank)."""
    box = ink_box(image)
    if box is None:
        return None
    x, y, w, h = box
    height, width = image.shape[:2]
    my, mx = max(2, round(TRIM_MARGIN_Y * h)), max(3, round(TRIM_MARGIN_X * h))
    top, bottom = max(0, y - my), min(height, y + h + my)
    left, right = max(0, x - mx), min(width, x + w + mx)
    trimmed = image[top:bottom, left:right]
    # Text that fills its slot gets its margin as background-coloured padding: glyphs
    # touching the crop edge make the recognizer drop characters ("55.4" read as "5.4").
    pads = (my - (y - top), my - (bottom - y - h), mx - (x - left), mx - (right - x - w))
    if any(pads):
        trimmed = cv2.copyMakeBorder(trimmed, *pads, cv2.BORDER_CONSTANT, value=channel_medians(image))
    return trimmed


def channel_medians(image: np.ndarray) -> list[int]:
    """int(np.median) of each channel of a uint8 image, from its histogram: a whole median
    sorts the slot, which cost more than finding its ink."""
    channels = [image] if image.ndim == 2 else cv2.split(image)
    out = []
    for channel in channels:
        counts = np.cumsum(cv2.calcHist([np.ascontiguousarray(channel)], [0], None, [256], [0, 256]).ravel())
        n = channel.size
        # The two middle values (one for an odd count), as np.median averages them.
        low, high = np.searchsorted(counts, [(n - 1) // 2 + 1, n // 2 + 1])
        out.append(int((int(low) + int(high)) / 2))
    return out


def union_roi(rois: Sequence[Sequence[int]], pad: int, frame: tuple[int, int]) -> tuple[int, int, int, int]:
    """Bounding [x, y, w, h] of `rois`, padded and clipped to a (width, height) frame."""
    x0 = max(0, min(r[0] for r in rois) - pad)
    y0 = max(0, min(r[1] for r in rois) - pad)
    x1 = min(frame[0], max(r[0] + r[2] for r in rois) + pad)
    y1 = min(frame[1], max(r[1] + r[3] for r in rois) + pad)
    return x0, y0, x1 - x0, y1 - y0


@dataclass(frozen=True)
class TextBox:
    text: str
    score: float
    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def height(self) -> float:
        return self.y1 - self.y0


def group_rows(boxes: Sequence[TextBox]) -> list[list[TextBox]]:
    """Detected boxes -> printed rows, top to bottom, each left to right.

    The detector may split one printed line at a wide gap (label | value), so boxes that
    overlap vertically by more than half the smaller height belong to one row.
    """
    rows: list[list[TextBox]] = []
    for box in sorted(boxes, key=lambda b: (b.y0 + b.y1) / 2):
        for row in rows:
            top, bottom = min(b.y0 for b in row), max(b.y1 for b in row)
            overlap = min(bottom, box.y1) - max(top, box.y0)
            if overlap > 0.5 * min(box.height, bottom - top):
                row.append(box)
                break
        else:
            rows.append([box])
    return [sorted(row, key=lambda b: b.x0) for row in rows]
