"""Text-field lines the frames never printed, made from the line's own glyphs (issue 13).

A student learns only the letters its training lots print: on line-a's 12 training lots it read
an unseen lot "IL3961-89" as "L3961-89" on every frame, and such lines fall back to PaddleOCR
(docs/benchmarks.md). The other lines of the same frame print many more letters in the same face,
weight and size: the labels (TEMP, EXPOSURE, HUMIDITY...) and the values' digits.

For each training frame, glyphs are cut from its labelled lines by ink runs (`stream.ocr.ink`),
only where a line's runs pair one to one with its characters (a label word's letters, or the
value's characters). A text field's line is then copied with its value's glyphs replaced, one by
one, by glyphs of other characters of the same kind (a capital by a capital, a digit by a digit)
from that frame, at the same spacing; the copy's label is the new value by construction, and it
must match the field's pattern. Glyphs come only from lines whose trimmed crop has the same
height, so they share the copy's scale and baseline at the student's input.

An italic face leans its glyphs over each other's columns: line-c's lot ids paired their runs on 4
of its first 60 frames. A frame's lines are therefore cut upright: sheared by the one of `SHEARS`
that pairs the most characters of its lines (0 for an upright face), and a copy is leaned back by
as much once drawn (50 copies from those 60 frames; docs/benchmarks.md, "ocr25"). A line gives
glyphs only where both its label's and its value's runs pair: where only one part paired, the
count matched by chance often enough to file a "0" under "O" or a "6" under "K".

Pure functions over `Line`s and arrays; `oanet ocr distill` adds the copies to its training lines
(`DistillConfig.splice_copies`), never to the held-out ones.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from oanet.profile import FieldSpec, LineProfile
from stream.ocr.ink import InkRun, ink_runs, label_and_value_words
from stream.ocr.lines import Line
from stream.ocr.student import label_text, line_input, value_text

# The width a line is scaled into before its glyphs are cut: wide enough that no line is
# squeezed (a squeezed line's glyphs would be narrower than its neighbours').
_UNSQUEEZED = 8192

SOURCE_SPLICE = "splice"

# One frame's glyphs: crop height -> character -> glyph images ([height, columns], floats)
GlyphBank = dict[int, dict[str, list[np.ndarray]]]

# Horizontal shears tried to stand a frame's glyphs upright (columns moved per row, bottom row
# most): 0 first, so an upright face stays as printed. Line-c's italic values paired most at
# 0.15-0.2, its labels at 0.25-0.3; at 0.4 few values paired.
SHEARS = (0.0, 0.1, 0.2, 0.3)


def _margin(amount: float, height: int) -> int:
    return int(np.ceil(abs(amount) * (height - 1)))


def shear(image: np.ndarray, amount: float) -> np.ndarray:
    """`image` [height, columns] with row y moved right by `round(amount * y)` whole columns
    (left where negative), widened by `_margin` columns so nothing leaves it (on the left where
    negative). Whole columns, not interpolated: `shear(.., -amount)` gives every pixel back, so a
    copy's label and separators stay as printed (interpolated twice, a thin "=" blurred into a
    "-", and a student trained on such copies read the sign of X OFS values wrong)."""
    if amount == 0.0:
        return image
    height, width = image.shape
    margin = _margin(amount, height)
    out = np.zeros((height, width + margin), image.dtype)
    start = margin if amount < 0 else 0
    for row, offset in enumerate(np.round(amount * np.arange(height)).astype(int)):
        out[row, start + offset : start + offset + width] = image[row]
    return out


@dataclass(frozen=True)
class CutLine:
    """A labelled line at the student's input height, unsqueezed, with its ink runs paired."""

    image: np.ndarray  # [height, width] float32, as `line_input` makes it
    label: list[tuple[str, InkRun]]  # empty: the line's runs do not pair one to one
    value: list[tuple[str, InkRun]]  # empty: the line's runs do not pair one to one


def cut_line(line: Line, spec: FieldSpec, height: int, lean: float = 0.0) -> CutLine | None:
    """`line` at the student's input height, unsqueezed and sheared by `lean`, its runs paired
    with its label's and value's characters where both pair one to one (else neither); None for
    an unlabelled line."""
    if line.value is None:
        return None
    trimmed = line.trimmed
    width = max(1, round(trimmed.shape[1] * height / max(1, trimmed.shape[0])))
    image = shear(line_input(trimmed, height, min(width, _UNSQUEEZED)), lean)
    runs = ink_runs(image)
    label_part, value_part = label_and_value_words(runs, len(spec.label.split()))
    label_runs = [r for word in label_part for r in word]
    value_runs = [r for word in value_part for r in word]
    label, value = label_text(spec), value_text(spec, line.value)
    if len(label_runs) != len(label) or len(value_runs) != len(value):
        return CutLine(image, [], [])
    return CutLine(image, list(zip(label, label_runs, strict=True)), list(zip(value, value_runs, strict=True)))


def paired_characters(lines: Sequence[Line], profile: LineProfile, height: int, lean: float) -> int:
    """How many characters of `lines` their ink runs pair with, cut at `lean`."""
    cuts = [cut_line(line, profile.fields[line.field], height, lean) for line in lines]
    return sum(len(cut.label) + len(cut.value) for cut in cuts if cut is not None)


def frame_lean(lines: Sequence[Line], profile: LineProfile, height: int) -> float:
    """The shear of `SHEARS` that pairs the most characters of one frame's lines (the first of
    equals: 0 where the face is upright)."""
    counts = [paired_characters(lines, profile, height, lean) for lean in SHEARS]
    return SHEARS[int(np.argmax(counts))]


def glyph_bank(lines: Sequence[Line], profile: LineProfile, height: int, lean: float = 0.0) -> GlyphBank:
    """The glyphs of one frame's lines, by crop height and character, cut at `lean`."""
    bank: GlyphBank = {}
    for line in lines:
        cut = cut_line(line, profile.fields[line.field], height, lean)
        if cut is None:
            continue
        chars = bank.setdefault(line.trimmed.shape[0], {})
        for char, run in (*cut.label, *cut.value):
            chars.setdefault(char, []).append(cut.image[:, run.start : run.end])
    return bank


def _same_kind(char: str, pool: Sequence[str], rng: np.random.Generator) -> str:
    """A random character of `pool` of the kind of `char` (capital, small letter, digit); any
    other character (a "-") stays."""
    for kind in (str.isupper, str.islower, str.isdigit):
        if kind(char):
            choices = [c for c in pool if kind(c)]
            return choices[int(rng.integers(len(choices)))] if choices else char
    return char


def splice_line(line: Line, spec: FieldSpec, bank: GlyphBank, rng: np.random.Generator, height: int,
                lean: float = 0.0) -> Line | None:
    """A copy of a text field's line with another value, drawn with the frame's glyphs cut at
    `lean` and leaned back (None: its value's runs do not pair with its characters, or no new
    value matches the pattern)."""
    cut = cut_line(line, spec, height, lean)
    glyphs = bank.get(line.trimmed.shape[0], {})
    if cut is None or not cut.value or not glyphs:
        return None
    old = "".join(char for char, _ in cut.value)
    new = "".join(_same_kind(char, sorted(glyphs), rng) for char in old)
    if new == old or (spec.pattern and not re.fullmatch(spec.pattern, new)):
        return None
    runs = [run for _, run in cut.value]
    parts = [cut.image[:, : runs[0].start]]
    for i, char in enumerate(new):
        pool = glyphs.get(char) or [cut.image[:, runs[i].start : runs[i].end]]
        parts.append(pool[int(rng.integers(len(pool)))])
        gap_end = runs[i + 1].start if i + 1 < len(runs) else cut.image.shape[1]
        parts.append(np.zeros((height, max(0, gap_end - runs[i].end)), np.float32))
    drawn = np.concatenate(parts, axis=1)
    if lean:
        # Leaned back; the margin that takes on the left puts every column where it was printed.
        drawn = shear(drawn, -lean)[:, _margin(lean, height) :]
    image = (np.clip(drawn, 0.0, 1.0) * 255).astype(np.uint8)
    return Line(line.frame_id, line.field, image, image, new, SOURCE_SPLICE, line.nuisance)


def spliced_lines(
    lines: Sequence[Line], profile: LineProfile, rng: np.random.Generator, copies: int, height: int
) -> list[Line]:
    """Up to `copies` spliced copies of every labelled text-field line of `lines`, each drawn
    with the glyphs of its own frame."""
    if copies < 1 or not any(spec.kind == "text" for spec in profile.fields):
        return []
    frames: dict[str, list[Line]] = {}
    for line in lines:
        frames.setdefault(line.frame_id, []).append(line)
    out: list[Line] = []
    for frame_id in sorted(frames):
        frame_lines = frames[frame_id]
        texts = [x for x in frame_lines if profile.fields[x.field].kind == "text" and x.value is not None]
        if not texts:
            continue
        lean = frame_lean(frame_lines, profile, height)
        bank = glyph_bank(frame_lines, profile, height, lean)
        for line in texts:
            for _ in range(copies):
                copy = splice_line(line, profile.fields[line.field], bank, rng, height, lean)
                if copy is not None:
                    out.append(copy)
    return out
