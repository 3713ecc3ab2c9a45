"""Rendered AOI-like frames in a profile's layout, for OCR tests.

Deliberately independent of `training.synth`, so OCR tests pin the OCR stage rather than the
generator (the generator's own frames are read in test_engine.py / test_cli.py too).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from oanet.profile import FieldSpec, LineProfile

DEFAULT_PROFILE = Path(__file__).resolve().parents[2] / "oanet" / "profiles" / "line-a.yaml"
FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX, cv2.FONT_HERSHEY_TRIPLEX)
SEPARATORS = (": ", " = ", "  ")


def sample_value(spec: FieldSpec, rng: np.random.Generator) -> float | str:
    if spec.kind == "text":
        letters = "".join(rng.choice(list("ABCDEFGHJKLMNPRSTUVWXYZ"), 2))
        return f"{letters}{int(rng.integers(0, 10000)):04d}-{int(rng.integers(0, 100)):02d}"
    low, high = spec.spec if spec.spec else (spec.plausible or (0.0, 100.0))
    width = high - low
    value = float(rng.uniform(low - 0.3 * width, high + 0.3 * width))  # some out of spec
    if spec.plausible:
        value = min(max(value, spec.plausible[0]), spec.plausible[1])
    return round(value, spec.decimals if spec.decimals is not None else 2)


def format_line(spec: FieldSpec, value: float | str, separator: str) -> str:
    if isinstance(value, str):
        shown = value
    else:
        shown = f"{value:.{spec.decimals if spec.decimals is not None else 2}f}"
    return f"{spec.label}{separator}{shown}" + (f" {spec.unit}" if spec.unit else "")


def render_frame(
    profile: LineProfile,
    params: dict[str, Any],
    *,
    seed: int = 0,
    font: int | None = None,
    height_px: int | None = None,
    printed: set[str] | None = None,
    dark_panel: bool = False,
    noise: float = 3.0,
) -> np.ndarray:
    """A BGR frame: textured object area, a panel with a header and one line per field ROI."""
    rng = np.random.default_rng(seed)
    w, h = profile.frame.width, profile.frame.height
    frame = np.full((h, w, 3), 70, np.uint8)
    ox, oy, ow, oh = profile.object_roi
    frame[oy : oy + oh, ox : ox + ow] = rng.integers(40, 120, (oh, ow, 1), dtype=np.uint8)
    px, py, pw, ph = profile.panel_roi
    paper, ink = ((30, 30, 30), (225, 225, 225)) if dark_panel else ((228, 230, 226), (25, 25, 25))
    cv2.rectangle(frame, (px, py), (px + pw - 1, py + ph - 1), paper, -1)
    font = FONTS[seed % len(FONTS)] if font is None else font
    cv2.putText(frame, "AOI LINE STATUS", (px + 12, py + 40), font, 0.8, ink, 2, cv2.LINE_AA)
    target_h = height_px or int(rng.integers(18, 27))
    for spec in profile.fields:
        if spec.roi is None or (printed is not None and spec.name not in printed) or spec.name not in params:
            continue
        text = format_line(spec, params[spec.name], SEPARATORS[int(rng.integers(len(SEPARATORS)))])
        x, y, rw, rh = spec.roi
        thickness = 2 if font != cv2.FONT_HERSHEY_PLAIN else 1
        scale = cv2.getFontScaleFromHeight(font, target_h, thickness)
        (tw, th), _ = cv2.getTextSize(text, font, scale, thickness)
        if tw > rw - 12:  # keep the line inside its slot, as a real panel layout does
            scale *= (rw - 12) / tw
            (tw, th), _ = cv2.getTextSize(text, font, scale, thickness)
        cv2.putText(frame, text, (x + 6, y + (rh + th) // 2), font, scale, ink, thickness, cv2.LINE_AA)
    if noise:
        frame = np.clip(frame + rng.normal(0, noise, frame.shape), 0, 255).astype(np.uint8)
    return frame


def encode(image: np.ndarray, ext: str = ".png") -> bytes:
    ok, buffer = cv2.imencode(ext, image)
    assert ok
    return buffer.tobytes()
