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


@dataclass(frozen=True)
class CutLine:
    """A labelled line at the student's input height, unsqueezed, with its ink runs paired."""

    image: np.ndarray  # [height, width] float32, as `line_input` makes it
    label: list[tuple[str, InkRun]]  # empty: the label's runs do not pair one to one
    value: list[tuple[str, InkRun]]  # empty: the value's runs do not pair one to one


def cut_line(line: Line, spec: FieldSpec, height: int) -> CutLine | None:
    """`line` at the student's input height, its runs paired with its label's and value's
    characters where they pair one to one; None for an unlabelled line."""
    if line.value is None:
        return None
    trimmed = line.trimmed
    width = max(1, round(trimmed.shape[1] * height / max(1, trimmed.shape[0])))
    image = line_input(trimmed, height, min(width, _UNSQUEEZED))
    runs = ink_runs(image)
    label_part, value_part = label_and_value_words(runs, len(spec.label.split()))
    label_runs = [r for word in label_part for r in word]
    value_runs = [r for word in value_part for r in word]
    label, value = label_text(spec), value_text(spec, line.value)
    return CutLine(
        image,
        list(zip(label, label_runs, strict=True)) if len(label_runs) == len(label) else [],
        list(zip(value, value_runs, strict=True)) if len(value_runs) == len(value) else [],
    )


def glyph_bank(lines: Sequence[Line], profile: LineProfile, height: int) -> GlyphBank:
    """The glyphs of one frame's lines, by crop height and character."""
    bank: GlyphBank = {}
    for line in lines:
        cut = cut_line(line, profile.fields[line.field], height)
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


def splice_line(line: Line, spec: FieldSpec, bank: GlyphBank, rng: np.random.Generator, height: int) -> Line | None:
    """A copy of a text field's line with another value, drawn with the frame's glyphs (None:
    its value's runs do not pair with its characters, or no new value matches the pattern)."""
    cut = cut_line(line, spec, height)
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
    image = (np.clip(np.concatenate(parts, axis=1), 0.0, 1.0) * 255).astype(np.uint8)
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
        bank = glyph_bank(frame_lines, profile, height)
        for line in texts:
            for _ in range(copies):
                copy = splice_line(line, profile.fields[line.field], bank, rng, height)
                if copy is not None:
                    out.append(copy)
    return out
