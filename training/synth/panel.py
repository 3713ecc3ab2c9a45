"""The parameter panel: the header line and one printed line per profile field.

A machine prints every field in one font and size, so those are chosen per frame and vary across
frames (several Hershey faces, sizes, weights, colour schemes, separators). Text is fitted into
each field's roi with a vertical margin, so small camera shifts and rotations keep it inside the
roi the OCR stage crops.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from oanet.profile import FieldSpec, LineProfile
from training.synth.params import format_value

FONTS = (
    cv2.FONT_HERSHEY_SIMPLEX,
    cv2.FONT_HERSHEY_DUPLEX,
    cv2.FONT_HERSHEY_COMPLEX,
    cv2.FONT_HERSHEY_TRIPLEX,
    cv2.FONT_HERSHEY_PLAIN,
)
SEPARATORS = (": ", ":", " = ", "  ", "= ")
# A profile's `printing.fonts` names (oanet.profile.PRINT_FONTS) -> OpenCV faces.
FONT_FACES = {
    "simplex": cv2.FONT_HERSHEY_SIMPLEX,
    "plain": cv2.FONT_HERSHEY_PLAIN,
    "duplex": cv2.FONT_HERSHEY_DUPLEX,
    "complex": cv2.FONT_HERSHEY_COMPLEX,
    "triplex": cv2.FONT_HERSHEY_TRIPLEX,
    "complex_small": cv2.FONT_HERSHEY_COMPLEX_SMALL,
    "script_simplex": cv2.FONT_HERSHEY_SCRIPT_SIMPLEX,
    "script_complex": cv2.FONT_HERSHEY_SCRIPT_COMPLEX,
}
# (panel background, text, header) in BGR: dark machine overlays and light report-style panels.
_SCHEMES = (
    ((18, 18, 18), (235, 235, 235), (120, 220, 255)),
    ((10, 10, 10), (90, 235, 120), (90, 235, 120)),
    ((30, 22, 16), (240, 230, 170), (255, 255, 255)),
    ((235, 235, 232), (25, 25, 25), (140, 60, 20)),
    ((200, 205, 205), (15, 15, 60), (15, 15, 60)),
)
_LINE_MARGIN = 10  # px kept free above and below the text inside a field roi
_LEFT_MARGIN = (5, 12)
_DEFAULT_LINE_HEIGHT = 48


@dataclass(frozen=True)
class PrintedField:
    name: str
    text: str
    value_box: tuple[int, int, int, int]  # x, y, w, h of the value (and unit) in frame pixels


def field_slots(profile: LineProfile) -> dict[str, tuple[int, int, int, int]]:
    """Each field's line slot: its roi, or the next free line in the panel when it has none."""
    px, py, pw, ph = profile.panel_roi
    slots = {f.name: f.roi for f in profile.fields if f.roi is not None}
    bottom = max((y + h for _, y, _, h in slots.values()), default=py + _DEFAULT_LINE_HEIGHT + 8)
    for spec in profile.fields:
        if spec.roi is None:
            height = min(_DEFAULT_LINE_HEIGHT, max(16, py + ph - bottom))
            slots[spec.name] = (px + 8, bottom + 8, pw - 16, height)
            bottom += 8 + height
    return slots  # type: ignore[return-value]


def header_box(profile: LineProfile, slots: dict[str, tuple[int, int, int, int]]) -> tuple[int, int, int, int]:
    px, py, pw, _ = profile.panel_roi
    top_of_fields = min(y for _, y, _, _ in slots.values())
    return px + 8, py + 4, pw - 16, max(12, top_of_fields - py - 8)


def _text_height(font: int, scale: float, thickness: int) -> tuple[int, int]:
    (_, height), baseline = cv2.getTextSize("0AgT", font, scale, thickness)
    return height, baseline


def draw_panel(
    canvas: np.ndarray,
    profile: LineProfile,
    params: dict[str, float | int | str],
    header: str,
    rng: np.random.Generator,
) -> list[PrintedField]:
    """Print the header and every field with a value in `params` onto the frame, in place.

    Faces and separators are the profile's `printing` ones where it has them, else the built-in
    mix (the same random draws either way, so a profile without `printing` prints as before).
    """
    style = profile.printing
    fonts = tuple(FONT_FACES[f] for f in style.fonts) if style is not None and style.fonts else FONTS
    separators = style.separators if style is not None and style.separators else SEPARATORS
    background, ink, header_ink = _SCHEMES[int(rng.integers(len(_SCHEMES)))]
    px, py, pw, ph = profile.panel_roi
    canvas[py : py + ph, px : px + pw] = background
    font = fonts[int(rng.integers(len(fonts)))]
    thickness = 1 if font == cv2.FONT_HERSHEY_PLAIN and rng.random() < 0.3 else int(rng.integers(1, 3))
    font |= cv2.FONT_ITALIC if style is not None and style.italic else 0
    separator = separators[int(rng.integers(len(separators)))]
    explicit_plus = bool(rng.random() < 0.5)
    unit_gap = " " if rng.random() < 0.8 else ""

    slots = field_slots(profile)
    lines: list[tuple[FieldSpec, str, str]] = []
    for spec in profile.fields:
        if spec.name not in params:
            continue
        value = format_value(spec, params[spec.name], explicit_plus)
        if spec.unit:
            value += unit_gap + spec.unit
        lines.append((spec, spec.label + separator, value))

    # One scale for all fields: the largest that fits every slot, capped by a per-frame size.
    target_height = rng.uniform(15, 25)
    scale = target_height / _text_height(font, 1.0, thickness)[0]
    for spec, label, value in lines:
        _, _, w, h = slots[spec.name]
        (tw, _), _ = cv2.getTextSize(label + value, font, scale, thickness)
        text_h, baseline = _text_height(font, scale, thickness)
        fit = min((w - 2 * _LEFT_MARGIN[1]) / max(tw, 1), (h - 2 * _LINE_MARGIN) / max(text_h + baseline, 1))
        scale *= min(1.0, fit)
    text_h, baseline = _text_height(font, scale, thickness)

    left = int(rng.integers(*_LEFT_MARGIN))
    printed = []
    for spec, label, value in lines:
        x, y, _, h = slots[spec.name]
        base_y = y + (h + text_h - baseline) // 2 + 1
        cv2.putText(canvas, label + value, (x + left, base_y), font, scale, ink, thickness, cv2.LINE_AA)
        (label_w, _), _ = cv2.getTextSize(label, font, scale, thickness)
        (value_w, _), _ = cv2.getTextSize(value, font, scale, thickness)
        printed.append(
            PrintedField(spec.name, label + value, (x + left + label_w, base_y - text_h, value_w, text_h + baseline))
        )

    hx, hy, hw, hh = header_box(profile, slots)
    header_font = FONTS[int(rng.integers(len(FONTS)))]
    header_scale = min(0.9 * scale, (hh - 6) / sum(_text_height(header_font, 1.0, 1)))
    (header_w, _), _ = cv2.getTextSize(header, header_font, header_scale, 1)
    header_scale *= min(1.0, (hw - left - _LEFT_MARGIN[1]) / max(header_w, 1))
    header_h, _ = _text_height(header_font, header_scale, 1)
    cv2.putText(canvas, header, (hx + left, hy + (hh + header_h) // 2), header_font, header_scale, header_ink, 1,
                cv2.LINE_AA)
    return printed


def smudge(
    canvas: np.ndarray, printed: list[PrintedField], rng: np.random.Generator
) -> list[str]:
    """Make some printed values unreadable (grease, a stain, a cable across the panel).

    Returns the names of the fields hit; their ground truth still records the printed value.
    """
    candidates = [p for p in printed if p.value_box[2] > 0]
    if not candidates:
        return []
    if rng.random() < 0.5:
        # One occluder across a run of consecutive lines, covering their values.
        count = int(rng.integers(2, min(4, len(candidates)) + 1)) if len(candidates) > 1 else 1
        start = int(rng.integers(0, len(candidates) - count + 1))
        hit = candidates[start : start + count]
        x0 = min(p.value_box[0] for p in hit) - 4
        x1 = max(p.value_box[0] + p.value_box[2] for p in hit) + 4
        y0 = min(p.value_box[1] for p in hit) - 6
        y1 = max(p.value_box[1] + p.value_box[3] for p in hit) + 6
        shade = float(rng.uniform(40, 200))
        # Opaque: a faint ghost of the digits would still be read by OCR.
        color = np.array([shade, shade * 0.95, shade * 0.9], np.float32)
        texture = rng.normal(0, 4, (y1 - y0, 1, 1)).astype(np.float32)
        canvas[y0:y1, x0:x1] = np.clip(color + texture, 0, 255).astype(np.uint8)
    else:
        # Individual smears: the value's ink is wiped into a blur and a greasy film.
        count = int(rng.integers(1, min(3, len(candidates)) + 1))
        hit = [candidates[i] for i in sorted(rng.choice(len(candidates), size=count, replace=False).tolist())]
        for p in hit:
            x, y, w, h = p.value_box
            x0, y0, x1, y1 = max(x - 6, 0), max(y - 8, 0), x + w + 6, y + h + 8
            patch = canvas[y0:y1, x0:x1]
            smeared = cv2.blur(patch, (max(3, w // 3) | 1, max(3, h // 2) | 1))
            film = np.full_like(patch, int(rng.uniform(60, 200)))
            canvas[y0:y1, x0:x1] = cv2.addWeighted(smeared, 0.55, film, 0.45, 0)
    return [p.name for p in hit]
