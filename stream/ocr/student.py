"""A line's own recogniser, distilled from PaddleOCR by `oanet ocr distill` (issue 13): reading side.

The student is a small CTC network over one field line (the same trimmed crop PaddleOCR reads,
from `stream.ocr.crops`), with a charset taken from the line profile: its labels, units,
digits, sign, point and the characters its text fields' patterns allow. It reads what a panel
prints with spaces, separators and an explicit plus sign left out ("TEMP172.4C"), which the
field parser accepts as it accepts PaddleOCR's dropped spaces.

Every read carries a confidence over the value part of the line only: for each character,
how sure the network is that it is there, and that nothing else is in its span (`ctc_decode`). The field is known from its ROI, so the label letters are a sanity check,
not something to be sure of: the student's one systematic error is at the line's left edge.
`oanet ocr distill` calibrates a threshold per field on held-out lines; a read below its
field's threshold, or one the parser rejects, is not used (the engine gives that line to
PaddleOCR).

Pure functions (charset, input geometry, CTC decoding) plus `Student`, which runs the exported
ONNX graph with onnxruntime (no torch at reading time).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from oanet.profile import FieldSpec, LineProfile
from stream.ocr.errors import StudentError
from stream.ocr.ink import GlyphWidths, InkRun, count_value_ink, ink_runs, misfit_glyphs, paired_glyphs
from stream.ocr.parse import parse_field, values_equal
from stream.ocr.records import FieldReading
from stream.ocr.settings import OcrSettings
from triton_models.oanet_fusion import core

STUDENT_MODEL_FILE = core.STUDENT_FILE
STUDENT_META_FILE = "recognizer.json"
STUDENT_FORMAT = 1
# The ONNX graph's tensor names are the served model's (one table: triton_models/oanet_fusion/core.py).
INPUT_NAME = core.STUDENT_INPUT
OUTPUT_NAME = core.STUDENT_OUTPUT
# Horizontal down-sampling of the network: one CTC time step per this many input columns.
TIME_STRIDE = 4
# Ink is stretched to [0, 1] above the background by at least this many grey levels, so a
# faint line is not amplified into noise.
_MIN_STRETCH = 24.0


# -- charset and targets (pure) ----------------------------------------------------------


def _pattern_chars(pattern: str) -> set[str]:
    """Every character a regular expression can match (ASCII printable universe)."""
    try:
        from re import _parser as sre_parse  # type: ignore[attr-defined]  # Python >= 3.11
    except ImportError:  # pragma: no cover
        import sre_parse  # type: ignore[no-redef]

    universe = [c for c in string.printable if not c.isspace()]
    compiled = re.compile(pattern)
    out: set[str] = set()

    def walk(items: Iterable[tuple[Any, Any]]) -> None:
        for op, arg in items:
            name = str(op)
            if name == "LITERAL":
                out.add(chr(arg))
            elif name == "IN":
                members = set()
                negate = False
                for sub_op, sub_arg in arg:
                    sub = str(sub_op)
                    if sub == "NEGATE":
                        negate = True
                    elif sub == "LITERAL":
                        members.add(chr(sub_arg))
                    elif sub == "RANGE":
                        members.update(chr(c) for c in range(sub_arg[0], sub_arg[1] + 1))
                    elif sub == "CATEGORY":
                        members.update(c for c in universe if re.fullmatch(_CATEGORY.get(str(sub_arg), "."), c))
                out.update((set(universe) - members) if negate else members)
            elif name == "ANY" or name == "NOT_LITERAL":
                out.update(universe)
            elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
                walk(arg[2])
            elif name == "SUBPATTERN":
                walk(arg[-1])
            elif name == "BRANCH":
                for branch in arg[1]:
                    walk(branch)
            elif name in ("ASSERT", "ASSERT_NOT"):
                walk(arg[1])

    walk(sre_parse.parse(compiled.pattern))
    return {c for c in out if not c.isspace()}


_CATEGORY = {"CATEGORY_DIGIT": r"\d", "CATEGORY_WORD": r"\w", "CATEGORY_NOT_DIGIT": r"\D", "CATEGORY_NOT_WORD": r"\W"}


# What a text field without a pattern may print.
_FREE_TEXT = frozenset(string.ascii_uppercase + string.digits + "-")
# What a number may print: an explicit "+" is left to the blank, but a read may still hold one.
_NUMBER_CHARS = frozenset("0123456789.-+")


def profile_charset(profile: LineProfile) -> str:
    """The characters a student of this line can emit, sorted (CTC class i + 1 = charset[i])."""
    chars: set[str] = set("0123456789.-")
    for spec in profile.fields:
        chars.update(spec.label)
        chars.update(spec.unit or "")
        if spec.kind == "text":
            chars.update(_pattern_chars(spec.pattern) if spec.pattern else _FREE_TEXT)
    return "".join(sorted(c for c in chars if not c.isspace()))


def value_charset(spec: FieldSpec) -> frozenset[str]:
    """The characters the value part of a line of `spec` can hold: its number or text, and its unit.

    A glyph read as another can only make a wrong value of this field where both glyphs are among
    them: a lot id's "O" read for a "Q" cannot happen in a temperature (calibration's floors)."""
    value = _NUMBER_CHARS if spec.kind == "number" else (_pattern_chars(spec.pattern) if spec.pattern else _FREE_TEXT)
    return frozenset(value | set(unit_text(spec)))


def format_printed(spec: FieldSpec, value: float | int | str) -> str:
    """A value as the panel prints it (numbers at the field's decimals)."""
    if spec.kind == "text" or isinstance(value, str):
        return str(value)
    places = spec.decimals if spec.decimals is not None else 2
    return f"{float(value):.{places}f}"


def label_text(spec: FieldSpec) -> str:
    """The field's label as the student reads it: spaces left out."""
    return "".join(spec.label.split())


def unit_text(spec: FieldSpec) -> str:
    """The field's unit as the student reads it: spaces left out ("" when it has none)."""
    return "".join((spec.unit or "").split())


def target_text(spec: FieldSpec, value: float | int | str) -> str:
    """What the student is taught to read for a line: label, value and unit without spaces.

    Separators (":", "=") and an explicit "+" are left to the CTC blank: they vary from frame
    to frame and carry nothing the parser needs.
    """
    text = spec.label + format_printed(spec, value).lstrip("+") + (spec.unit or "")
    return "".join(text.split())


_NUMBER = r"-?\d+(?:\.\d+)?"


def label_part_ok(prefix: str, label: str, other_labels: Sequence[str] = ()) -> bool:
    """Whether a read's label part stands for `label` (spaces left out).

    Forgiven: the label's first letter missing, or one character before it (a "B" from the
    crop's left border on every line); or one letter read as another anywhere but in the
    label's last place ("BEAK" or "DEAK" for PEAK, "BOTWT" for DOT WT: an unseen face's first
    letter), when no other label of the line (`other_labels`, spaces left out) is also one
    letter away. The field is known from its ROI and the value part is checked on its own, so
    a label letter changes no value. An error at the label's end could move a character
    across the boundary with the value ("O2" + "5.1" read "Q25.1"), so it is refused, and so
    is any change of the label's length beyond the left-edge defect.
    """
    if prefix == label or prefix == label[1:] or (len(prefix) == len(label) + 1 and prefix[1:] == label):
        return True
    return (len(label) >= 2 and _one_substitution(prefix, label) and prefix[-1] == label[-1]
            and not any(other == prefix or _one_substitution(prefix, other) for other in other_labels))


def label_letters_dropped(prefix: str, label: str) -> bool:
    """Whether a read's label part is the label with letters left out where the student drops
    them on faces it has not seen: up to two at its start, and its last one where it touches
    the separator ("ZOFFSE" for Z OFFSET= on a line printing "T=" as one blob, "NDFORCE" for
    BOND FORCE). Half the label or more must remain. Only with the value's ink paired glyph by
    glyph (`value_ink_paired`) does such a read stand: a label letter read as a digit of the
    value ("ZOFFSE7" + "1.10") is then one character more than the value's runs."""
    if len(prefix) < max(2, (len(label) + 1) // 2) or prefix == label:
        return False
    return any(prefix == label[start:end] for start in (0, 1, 2) for end in (len(label), len(label) - 1))


def value_ink_paired(read: StudentRead, spec: FieldSpec, value: str) -> bool:
    """Whether the value part `value` (with its unit, as `split_value` cut it) pairs one to one
    with its ink runs (a leading "+" left out; the number alone where the unit stands as its own
    word), and no run is left over."""
    if read.ink is None:
        return False
    unit = unit_text(spec)
    label_words = len(spec.label.split())
    if count_value_ink(read.ink, label_words, value, unit, plus_possible(spec, value)).unexplained:
        return False
    pairs = value_glyphs(read.ink, spec, value)
    return len(pairs) in (len(value), len(value) - len(unit)) and len(pairs) > 0


def _one_substitution(a: str, b: str) -> bool:
    """Same length, exactly one place different."""
    return len(a) == len(b) and sum(x != y for x, y in zip(a, b, strict=True)) == 1


@dataclass(frozen=True)
class StudentRead:
    """One line as the student read it, and how sure it was of each character.

    `char_confidence[j]`: the least sure time step from the step after character j - 1 up to
    character j's last step; the blanks before a character count, so a character half seen
    and dropped there lowers it. `tail_confidence`: the least sure step after the last one.
    `ink`: the ink runs of the input the read came from (`stream.ocr.ink`; None: not measured).
    `char_identity[j]`: how sure the read is that character j is no other character, its doubt
    whether a glyph is there at all left out (`step_confidence(presence_free=True)` over its
    span); None: not measured.
    """

    text: str
    char_confidence: tuple[float, ...]
    tail_confidence: float
    ink: tuple[InkRun, ...] | None = None
    char_identity: tuple[float, ...] | None = None

    @property
    def confidence(self) -> float:
        """The whole line's: its least sure time step."""
        return min((*self.char_confidence, self.tail_confidence))

    def confidence_from(self, start: int) -> float:
        """The least sure time step from character `start` (its blanks before it) to the end."""
        return min((*self.char_confidence[start:], self.tail_confidence))

    def doubts_one_glyph_only(self, start: int, bar: float) -> bool:
        """From character `start` on: below `bar` only in whether one glyph is there at all (a
        letter dropped or kept, once), and at least `bar` sure that no character is another."""
        if self.char_identity is None or min(self.char_identity[start:], default=1.0) < bar:
            return False
        return sum(c < bar for c in (*self.char_confidence[start:], self.tail_confidence)) == 1

    @classmethod
    def uniform(cls, text: str, confidence: float) -> StudentRead:
        return cls(text, (confidence,) * len(text), confidence)


def split_value(text: str, spec: FieldSpec) -> tuple[str, str] | None:
    """A read -> (label part, value part with its unit), or None when no value ends it.

    Numbers: the label exactly, else everything before the longest number that ends the
    read (a digit is never left in the label part). Text: the only suffix the field's
    pattern matches (an ambiguous split is refused), or what follows the exact label.
    """
    unit = unit_text(spec)
    if not text.endswith(unit):
        return None
    body = text[: len(text) - len(unit)]
    label = label_text(spec)
    if spec.kind == "number":
        if body.startswith(label) and re.fullmatch(_NUMBER, body[len(label) :]):
            return label, body[len(label) :] + unit
        match = re.fullmatch(f"(.*?)({_NUMBER})", body)
        return (match.group(1), match.group(2) + unit) if match else None
    if not spec.pattern:
        return (label, body[len(label) :] + unit) if body.startswith(label) and len(body) > len(label) else None
    splits = [i for i in range(1, len(body)) if re.fullmatch(spec.pattern, body[i:])]
    return (body[: splits[0]], body[splits[0] :] + unit) if len(splits) == 1 else None


def well_formed_read(read: StudentRead, spec: FieldSpec, other_labels: Sequence[str] = ()) -> FieldReading | None:
    """The student's read of a line as a reading, or None when it is not exactly a line.

    The value part must be exactly what the student was taught to read for that value (value
    at its decimals, unit) and the parser must accept it; whatever the parser would have to
    forgive or correct is refused, so a confident but half-right read cannot pass. The label
    part must be the label, or show only the left-edge defect or one letter read as another
    (`label_part_ok`; `other_labels`: the line's other labels, `other_labels_of`); on a number
    line it may also miss letters where students drop them (`label_letters_dropped`) when the
    value's ink pairs with its characters glyph by glyph (`value_ink_paired`). The
    reading's confidence is the value part's (`StudentRead.confidence_from`): the field is
    known from its ROI, and the label's letters say nothing about the value.
    """
    split = split_value(read.text, spec)
    if split is None:
        return None
    prefix, value_part = split
    label = label_text(spec)
    if not label_part_ok(prefix, label, other_labels) and not (
            spec.kind == "number" and label_letters_dropped(prefix, label)
            and value_ink_paired(read, spec, value_part)):
        return None
    text = label + value_part
    reading = parse_field(text, spec, read.confidence_from(len(prefix)))
    if reading.missing or reading.value is None or text != target_text(spec, reading.value):
        return None
    return replace(reading, raw_text=read.text)


def label_alone(read: StudentRead, spec: FieldSpec, bar: float) -> bool:
    """The read is the line's label, or the start of it, and at least `bar` sure of every step,
    the steps after it included: no value shows (a stain or a cable over it). PaddleOCR reads
    such lines as the label too, and the parser finds no value in either read; on students'
    reads of the lines of 8 unseen lots of three layouts it held only for smudged lines
    (docs/benchmarks.md, "ocr23")."""
    label = label_text(spec)
    return len(read.text) >= min(2, len(label)) and label.startswith(read.text) and read.confidence >= bar


def second_view_agrees(again: StudentRead, reading: FieldReading, spec: FieldSpec,
                       other_labels: Sequence[str] = ()) -> bool:
    """Whether the second view's read (`Student.recognize_shifted`) of the line `reading` came
    from is itself a well-formed line of the same value. Any other read, a malformed one included,
    leaves the line to PaddleOCR: the two views of one crop disagree, so the first may be wrong."""
    again_reading = well_formed_read(again, spec, other_labels)
    return again_reading is not None and values_equal(spec, again_reading.value, reading.value)


def other_labels_of(profile: LineProfile, spec: FieldSpec) -> tuple[str, ...]:
    """The labels of the line's other fields as the student reads them (`label_part_ok`)."""
    return tuple(label_text(other) for other in profile.fields if other.name != spec.name)


def unexplained_ink(read: StudentRead, spec: FieldSpec, widths: GlyphWidths | None = None) -> int:
    """Ink of the line's value that the read does not explain (`stream.ocr.ink`): runs it has no
    character for, and, with the student's learnt `widths`, runs too wide or too narrow for the
    character read there.

    Above 0 the read left a glyph out (a dropped leading digit) or read one as another of a
    different width (an unseen lot's "Y" as "I"), as confidently as a right read; only a
    threshold above it kept it out before. Such a read falls back like a malformed one. 0 when
    the read has no value part or its ink was not measured. An explicit "+" is allowed before
    any number that is not negative: the panel may print one, and the student is taught to
    leave it to the blank.
    """
    split = split_value(read.text, spec)
    if read.ink is None or split is None:
        return 0
    value = split[1]
    missing = count_value_ink(read.ink, len(spec.label.split()), value, unit_text(spec),
                              plus_possible(spec, value)).unexplained
    misfits = misfit_glyphs(value_glyphs(read.ink, spec, value), widths) if widths else 0
    return missing + misfits


def value_glyphs(runs: Sequence[InkRun], spec: FieldSpec, value: str) -> list[tuple[str, float]]:
    """(character, run width) pairs of the value part `value` of a line of `spec`
    (`stream.ocr.ink.paired_glyphs`): what the glyph widths are learnt from and checked on."""
    return paired_glyphs(runs, len(spec.label.split()), value, unit_text(spec), plus_possible(spec, value))


def plus_possible(spec: FieldSpec, value: str) -> bool:
    """Whether the panel may print an explicit "+" before this value part (taught as blank)."""
    return spec.kind == "number" and not value.startswith("-")


def value_text(spec: FieldSpec, value: float | int | str) -> str:
    """The value part of `target_text`: what follows the label."""
    return target_text(spec, value)[len(label_text(spec)) :]


def encode_text(text: str, charset: str) -> list[int] | None:
    """CTC class ids of `text`, or None when it holds a character outside the charset."""
    index = {c: i + 1 for i, c in enumerate(charset)}
    try:
        return [index[c] for c in text]
    except KeyError:
        return None


def _emitted(held: np.ndarray, before: np.ndarray, after: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per step t: what steps t and t + 1 emit when step t holds class held[t] between before[t]
    and after[t] (CTC collapse, locally), as (first, second) class ids, -1 for nothing. Packed
    to the front, so that "k, then nothing" is "nothing, then k" when the next step's class is k."""
    here = np.where((held != 0) & (held != before), held, -1)
    there = np.where((after != 0) & (after != held), after, -1)
    return np.where(here >= 0, here, there), np.where(here >= 0, there, -1)


def step_confidence(probs: np.ndarray, path: Sequence[int] | np.ndarray, presence_free: bool = False) -> np.ndarray:
    """Per time step: the probability of every class that would leave the decoded text as it is.

    A step on the border of a character is often blank or that character at about 0.5 each:
    where CTC places a character, not what it reads. Those classes (blank, the previous and
    the next step's class) count for the step when putting one of them there changes nothing
    after collapsing; any other class would add, drop or change a character.

    `presence_free`: the probability that no character is read as another. A blank on a
    character's step and any class on a blank step can only drop or add a character (is a
    glyph there at all, or a letter doubled); those count too, so what is left is a character
    read as another (`StudentRead.char_identity`).

    `probs` [..., T, C] and `path` [..., T]: a line, or lines of one length at once (steps of
    `probs` past the path's are not its).
    """
    text_sure, letter_sure = step_confidences(probs, path)
    return letter_sure if presence_free else text_sure


def step_confidences(probs: np.ndarray, path: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`step_confidence` both ways at once, (text as decoded, no character read as another):
    the terms they share are computed once (`ctc_decode` needs both for every line)."""
    path = np.asarray(path, np.intp)
    probs = probs[..., : path.shape[-1], :]
    before, after = np.zeros_like(path), np.zeros_like(path)
    before[..., 1:], after[..., :-1] = path[..., :-1], path[..., 1:]
    same = _emitted(path, before, after)

    def mass(of: np.ndarray) -> np.ndarray:
        return np.take_along_axis(probs, of[..., None], axis=-1)[..., 0].astype(np.float64)

    def counted(other: np.ndarray, candidate: np.ndarray) -> np.ndarray:
        emitted = _emitted(other, before, after)
        return np.where(candidate & (emitted[0] == same[0]) & (emitted[1] == same[1]), mass(other), 0.0)

    # The candidates are a set: blank, the previous and the next step's class, less the step's own.
    blank = np.zeros_like(path)
    own = mass(path)
    previous = counted(before, (before != 0) & (before != path))
    following = counted(after, (after != 0) & (after != path) & (after != before))
    text_sure = own + counted(blank, path != 0) + previous + following
    letter_sure = np.where(path == 0, 1.0, own + np.where(path != 0, mass(blank), 0.0) + previous + following)
    return text_sure, letter_sure


def ctc_decode(
    logits: np.ndarray,
    charset: str,
    steps: Sequence[int] | np.ndarray | None = None,
    inputs: np.ndarray | None = None,
) -> list[StudentRead]:
    """Greedy CTC over [N, T, C] logits -> one read per line; with the network's `inputs`
    ([N, 1, H, W]), each read also carries the ink runs of its line (`StudentRead.ink`).

    Only the first `steps[i]` time steps of line i are its line (`line_steps`); the rest saw
    the black right padding of a batch. CTC never constrains those steps (blank and a repeat
    of the last character are equally right there), so they are ambiguous: decoded, they add
    phantom characters; counted, they make every line look unsure.

    Confidence of a character: the least of its best step's probability (is it there at all)
    and `step_confidence` over its span, the blanks before it included (is anything else
    there). Not the winning probability of each step: on the border of every character blank
    and the character are near 0.5 each, which made right reads score 0.45-0.6.
    """
    shifted = logits - logits.max(axis=2, keepdims=True)
    probs = np.exp(shifted)
    probs /= probs.sum(axis=2, keepdims=True)
    best = probs.argmax(axis=2)
    count, total = best.shape
    if not count:
        return []
    lengths = [total if steps is None else max(1, min(total, int(steps[i]))) for i in range(count)]
    # Every line at once (a loop over each line's steps cost a millisecond a frame). Past its
    # length a line holds blank, so that its last character ends there.
    on_line = np.arange(total) < np.array(lengths)[:, None]
    path = np.where(on_line, best, 0)
    emitting = path != 0
    before, after = np.zeros_like(path), np.zeros_like(path)
    before[:, 1:], after[:, :-1] = path[:, :-1], path[:, 1:]
    # Spans: character j's from the step after character j - 1's last to its own last, the
    # blanks before it included; then the line's tail. Steps past the line's length, and one
    # more column that ends the tail on its line, are sure and hold no character.
    width = total + 1
    text_steps, letter_steps = step_confidences(probs, path)
    sure = np.ones((count, width))
    sure[:, :-1] = np.where(on_line, text_steps, 1.0)
    held = np.full((count, width), -np.inf)  # each step's probability of the character it holds
    held[:, :-1] = np.where(emitting, np.take_along_axis(probs, path[..., None], axis=2)[..., 0], -np.inf)
    line, last = np.nonzero(emitting & (path != after))
    bounds = np.sort(np.concatenate((np.arange(count) * width, line * width + last + 1)))
    span_sure = np.minimum(np.minimum.reduceat(sure.ravel(), bounds), 1.0)
    confidence = np.minimum(span_sure, np.maximum.reduceat(held.ravel(), bounds)).tolist()
    span_sure = span_sure.tolist()
    letter_sure = np.ones((count, width))
    letter_sure[:, :-1] = np.where(on_line, letter_steps, 1.0)
    identity = np.minimum(np.minimum.reduceat(letter_sure.ravel(), bounds), 1.0).tolist()
    codes = path[emitting & (path != before)].tolist()
    out = []
    done = 0  # characters of the lines before: line i's spans start at done + i
    for i, (n, chars) in enumerate(zip(lengths, np.bincount(line, minlength=count).tolist(), strict=True)):
        text = "".join(charset[k - 1] for k in codes[done : done + chars])
        tail = done + i + chars
        ink = None if inputs is None else tuple(ink_runs(inputs[i].reshape(inputs.shape[-2:]), n * TIME_STRIDE))
        out.append(StudentRead(text, tuple(confidence[done + i : tail]), span_sure[tail], ink,
                               tuple(identity[done + i : tail])))
        done += chars
    return out


# -- input geometry (pure) ---------------------------------------------------------------


def to_gray(crop: np.ndarray) -> np.ndarray:
    return crop if crop.ndim == 2 else cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)


def scaled_width(crop: np.ndarray, height: int, width: int) -> int:
    """Columns a crop fills in the student's input: scaled to `height`, squeezed past `width`."""
    h, w = crop.shape[:2]
    return int(max(1, min(width, round(w * height / max(h, 1)))))


def line_steps(crop: np.ndarray, height: int, width: int) -> int:
    """CTC time steps that cover a crop's columns (the rest of the input is padding)."""
    return min(width // TIME_STRIDE, -(-scaled_width(crop, height, width) // TIME_STRIDE))


def line_input(crop: np.ndarray, height: int, width: int) -> np.ndarray:
    """A trimmed line crop -> the student's float32 [height, width] input.

    Either polarity of print becomes bright ink on black, stretched above the background, so
    exposure and panel colour schemes matter less; scaled to `height` keeping the aspect ratio
    (squeezed only when wider than `width`) and left-aligned, black on the right.
    """
    gray = to_gray(crop)
    background = _median(gray)
    gray = gray.astype(np.float32)
    if background > 127.0:
        gray = 255.0 - gray
        background = 255.0 - background
    h = gray.shape[0]
    new_w = scaled_width(gray, height, width)
    interpolation = cv2.INTER_AREA if h > height else cv2.INTER_LINEAR
    scaled = cv2.resize(gray, (new_w, height), interpolation=interpolation)
    peak = _percentile(scaled, 99.5)
    scaled = np.clip((scaled - background) / max(peak - background, _MIN_STRETCH), 0.0, 1.0)
    out = np.zeros((height, width), np.float32)
    out[:, :new_w] = scaled
    return out


def _median(gray: np.ndarray) -> float:
    """float(np.median(gray)) of a grey crop; for 8-bit grey from its histogram, in a third of the
    time of a partial sort."""
    if gray.dtype != np.uint8:
        return float(np.median(gray.astype(np.float32)))
    cumulative = np.cumsum(cv2.calcHist([gray], [0], None, [256], [0, 256]).ravel(), dtype=np.int64)
    low, high = np.searchsorted(cumulative, [(gray.size - 1) // 2, gray.size // 2], side="right").tolist()
    return (low + high) / 2


def _percentile(values: np.ndarray, q: float) -> float:
    """np.percentile(values, q) (linear), on one partial sort of the values: numpy's own
    partitions around four points and takes twice as long."""
    flat = values.ravel()
    index = (flat.size - 1) * q / 100
    if index >= flat.size - 1:
        return float(flat.max())
    below = math.floor(index)
    low, high = np.partition(flat, [below, below + 1])[below : below + 2].astype(np.float64)
    return float(low + (high - low) * (index - below))


def shifted_batch(batch: np.ndarray, columns: int) -> np.ndarray:
    """`batch` ([N, 1, height, width]) moved right by `columns`, black coming in on the left: the
    same lines seen at another phase of the network's time steps."""
    out = np.zeros_like(batch)
    out[..., columns:] = batch[..., : batch.shape[-1] - columns]
    return out


def input_batch(crops: Sequence[np.ndarray], height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """[N, 1, height, width] float32 for one network call, and each line's time steps."""
    batch = np.zeros((len(crops), 1, height, width), np.float32)
    for i, crop in enumerate(crops):
        batch[i, 0] = line_input(crop, height, width)
    steps = np.array([line_steps(crop, height, width) for crop in crops], np.int64)
    return batch, steps


# -- the saved student -------------------------------------------------------------------


# A text field (a lot or batch id) is read by the student on its threshold only when its calibration
# lines printed at least this many distinct values; otherwise only where PaddleOCR confirmed its read
# (`stream.ocr.confirm`, `Student.confirmation_threshold`). Its confident wrong reads are
# letters a new lot combines in ways the training lots did not, and a calibration part holds two
# or three lots: on 8 unseen lots every line-a student read some lot ids wrong at up to 0.99 (14
# to 48 wrong values in 400 frames), and line-c's batch ids likewise (docs/benchmarks.md,
# "ocr19"). Its views are many, but its distinct values are what the threshold is estimated on.
MIN_TEXT_VALUES = 20
# A threshold no read reaches (a confidence is at most 1).
NEVER = 2.0
# A read its field's threshold accepts but that is less sure than this is read again from a second
# view (`Student.recognize_shifted`) and used only where both views give the same value
# (`second_view_agrees`). A threshold sits just above the most confident wrong read calibration
# showed, and a test set's wrong reads are that tail's next draws: line-c's student read an unseen
# frame's "O2=503 ppm" as 593 at 0.78 over its 0.70 threshold. Such reads were unstable: on 6
# nuisance views of every number line of three 400-frame test sets (about 44,000 accepted reads),
# the second view disagreed with 9 of the 12 wrong reads the thresholds let through, and with
# 0.09-0.20% of the right reads as printed (0.23-0.39% of nuisance views), which PaddleOCR then
# reads (docs/benchmarks.md, "ocr24").
SECOND_VIEW_BELOW = 0.95
# Half a time step: the view the network's columns-to-steps phase changes most for.
SECOND_VIEW_SHIFT = TIME_STRIDE // 2


@dataclass(frozen=True)
class StudentMeta:
    """What `recognizer.json` holds next to the ONNX graph."""

    profile: str
    profile_sha256: str
    charset: str
    height: int
    width: int
    threshold: float
    teacher: str = ""
    format: int = STUDENT_FORMAT
    stats: dict[str, Any] = field(default_factory=dict)
    # Each character's run width range on the training lines (`stream.ocr.ink`); empty: no
    # width check (students distilled before it).
    glyph_widths: dict[str, tuple[float, float]] = field(default_factory=dict)
    # A threshold per field name, calibrated on that field's reads (`stream.ocr.calibration`);
    # a field without one uses `threshold`, the pooled one (all of a student's fields before
    # they were calibrated apart).
    field_thresholds: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StudentMeta:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def teacher_settings(settings: OcrSettings) -> OcrSettings:
    """The same OCR settings without a student: PaddleOCR reads every line."""
    return settings.model_copy(update={"recognizer": None})


def profile_sha256(profile: LineProfile) -> str:
    return hashlib.sha256(profile.model_dump_json().encode()).hexdigest()


def load_meta(folder: Path) -> StudentMeta:
    folder = Path(folder)
    meta_path, model_path = folder / STUDENT_META_FILE, folder / STUDENT_MODEL_FILE
    for path in (meta_path, model_path):
        if not path.is_file():
            raise StudentError(
                f"{folder} is not a distilled recogniser: {path.name} is missing "
                "(make one with `oanet ocr distill --data DIR --out DIR`)"
            )
    try:
        meta = StudentMeta.from_json(json.loads(meta_path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as exc:
        raise StudentError(f"cannot read {meta_path}: {exc}") from None
    if meta.format != STUDENT_FORMAT:
        raise StudentError(f"{meta_path} has format {meta.format}; this version reads format {STUDENT_FORMAT}")
    return meta


def student_digest(folder: Path) -> str:
    """Identifies a student (weights, charset, threshold) in the OCR feature cache key."""
    load_meta(folder)  # the same clear error for a folder without a student
    digest = hashlib.sha256()
    for name in (STUDENT_MODEL_FILE, STUDENT_META_FILE):
        try:
            digest.update((Path(folder) / name).read_bytes())
        except OSError as exc:
            raise StudentError(f"cannot read the recogniser {Path(folder) / name}: {exc.strerror or exc}") from None
    return digest.hexdigest()[:12]


class OnnxStudentNetwork:
    """The student's ONNX graph run by onnxruntime in this process (CPU)."""

    def __init__(self, model_path: Path, threads: int = 0):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
            raise StudentError(f"cannot load {model_path}: {exc}") from None

    def logits(self, batch: np.ndarray) -> np.ndarray:
        (logits,) = self._session.run([OUTPUT_NAME], {INPUT_NAME: batch})
        return np.asarray(logits)


class Student:
    """Runs a distilled recogniser: every line of a frame in one network call.

    The network is the folder's ONNX graph run with onnxruntime here, or `network` (anything
    with `logits(batch)`, such as `stream.ocr.student_server.TritonStudentNetwork`) serving the
    same weights; the charset, thresholds and glyph widths come from the folder either way.
    """

    def __init__(self, folder: Path, profile: LineProfile, threads: int = 0, network: Any = None):
        folder = Path(folder)
        self._bind(load_meta(folder), profile, student_digest(folder), f"the recogniser in {folder}")
        self.network = network if network is not None else OnnxStudentNetwork(folder / STUDENT_MODEL_FILE, threads)

    @classmethod
    def from_meta(cls, meta: StudentMeta, profile: LineProfile, network: Any, digest: str, where: str) -> Student:
        """A student whose files are elsewhere: its `recognizer.json` as `meta`, its network as
        `network` (a served student read from Triton's model config: stream/ocr/student_server.py)."""
        student = cls.__new__(cls)
        student._bind(meta, profile, digest, where)
        student.network = network
        return student

    def _bind(self, meta: StudentMeta, profile: LineProfile, digest: str, where: str) -> None:
        if meta.format != STUDENT_FORMAT:
            raise StudentError(f"{where} has format {meta.format}; this version reads format {STUDENT_FORMAT}")
        if meta.profile_sha256 != profile_sha256(profile):
            raise StudentError(
                f"{where} was distilled for line profile {meta.profile!r} "
                f"as it was then, not for {profile.name!r} as it is now; distill it again for this profile"
            )
        self.meta = meta
        self.version = f"student={digest}"
        # Students calibrated before the distinct values were counted have none: their text
        # fields go to PaddleOCR too.
        values = (meta.stats.get("calibration") or {}).get("text_values") or {}
        self._untrusted = {f.name for f in profile.fields
                           if f.kind == "text" and values.get(f.name, 0) < MIN_TEXT_VALUES}

    @property
    def threshold(self) -> float:
        """The pooled threshold: the one of a field without its own."""
        return self.meta.threshold

    def threshold_for(self, name: str) -> float:
        """The confidence a read of field `name` needs to be used (`NEVER` for a text field whose
        calibration printed fewer than `MIN_TEXT_VALUES` distinct values)."""
        if name in self._untrusted:
            return NEVER
        return self.meta.field_thresholds.get(name, self.meta.threshold)

    def confirmation_threshold(self, name: str) -> float | None:
        """For a text field `threshold_for` refuses: the confidence its read needs to be used once
        PaddleOCR has confirmed the read (`stream.ocr.confirm`); None for every other field.

        The pooled threshold, above every wrong read of every field in calibration: the field's
        own is `NEVER`, and the letters of unseen lots it was set against are what the
        confirmation catches; what is left are digits read as others, which every field shares."""
        if name not in self._untrusted:
            return None
        return self.meta.threshold

    @property
    def glyph_widths(self) -> dict[str, tuple[float, float]]:
        return self.meta.glyph_widths

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """[N, 1, height, width] float32 inputs -> [N, T, C] logits."""
        return self.network.logits(batch)

    def recognize(self, crops: Sequence[np.ndarray]) -> list[StudentRead]:
        """Trimmed line crops -> one read each, one network call for all of them."""
        if not crops:
            return []
        batch, steps = input_batch(crops, self.meta.height, self.meta.width)
        return ctc_decode(self.logits(batch), self.meta.charset, steps, batch)

    def recognize_shifted(self, crops: Sequence[np.ndarray]) -> list[StudentRead]:
        """The same lines read from a second view: each input moved right by half a time step
        (`SECOND_VIEW_SHIFT`) and decoded over the steps of the first (one more step than the
        line covers reads the black margin, where line-b's student wrote a stray "-")."""
        if not crops:
            return []
        batch, steps = input_batch(crops, self.meta.height, self.meta.width)
        shifted = shifted_batch(batch, SECOND_VIEW_SHIFT)
        return ctc_decode(self.logits(shifted), self.meta.charset, steps, shifted)
