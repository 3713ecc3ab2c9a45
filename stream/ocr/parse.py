"""Raw recognized text -> typed field values. Pure: no OCR, no images, no I/O.

The recognizer (PP-OCRv4, Chinese+English) makes predictable mistakes on printed panels: it
drops spaces ("TEMP187.2C"), reads "×" for X and "一" for a minus sign, and swaps look-alike
letters and digits (O/0, l/1, S/5, B/8). So the *label* is matched loosely (it only tells us
which field a line is) while the *value* must parse exactly after undoing confusions that
are unambiguous in its position: a wrong number is worse than a missing one, because the
model is trained to cope with missing fields, not with silently wrong ones.

A clean value outside the field's spec range is returned as a value: that is a parameter
defect for the model to catch, not a reading error. Outside the `plausible` range, it is a
misread and becomes missing.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from oanet.profile import FieldSpec, LineProfile
from stream.ocr.records import (
    REASON_AMBIGUOUS,
    REASON_DECIMALS,
    REASON_GARBLED,
    REASON_IMPLAUSIBLE,
    REASON_NO_LABEL,
    REASON_NO_TEXT,
    REASON_PATTERN,
    FieldReading,
)

# Bump when parsing changes what a given raw text yields: it is part of the feature-cache key.
PARSER_VERSION = "1"

# Dash-like characters the recognizer emits for a printed minus/hyphen ("一" is CJK "one").
_DASHES = "一—–−－‐‑‒―ー﹣"
# After NFKC (which already folds full-width forms): characters to canonical ASCII.
_NORMALIZE = str.maketrans({**{c: "-" for c in _DASHES}, "×": "X", "·": ".", "。": ".", "，": ","})

# Label matching: fold look-alikes to one representative so "Z0FFSET", "TlLT", "E×POSURE"
# and "8OND" compare equal to the printed label. Applied to both sides after upper-casing.
_LABEL_FOLD = str.maketrans({"0": "O", "Q": "O", "1": "I", "L": "I", "|": "I", "!": "I",
                             "5": "S", "$": "S", "8": "B", "2": "Z", "6": "G", "×": "X"})

# In a number, after the label and unit are removed, letters can only be misread digits.
_DIGIT_FIXES = str.maketrans({"O": "0", "o": "0", "Q": "0", "D": "0", "l": "1", "I": "1", "i": "1",
                              "|": "1", "!": "1", "S": "5", "s": "5", "B": "8", "Z": "2", "z": "2"})
_NUMBER = re.compile(r"^[+-]?(\d+)(?:\.(\d+))?$")
# Separators between label and value (docs/contracts.md: ":", "=" or spaces) and their misreads.
_LEADING_SEPARATORS = re.compile(r"^[\s:=;]+")
# A lone separator misread as a letter or a dot, then whitespace: "TEMPi 172.4", "TEMP. 172.4".
_MISREAD_SEPARATOR = re.compile(r"^[iIl|!.,](?=\s)")
_TRAILING_JUNK = re.compile(r"[\s.,;:'\"`)\]}°]+$")

# Pattern-guided correction of text values (lot ids): each look-alike's other reading.
_TEXT_SWAPS = {"O": "0", "0": "O", "Q": "0", "D": "0", "I": "1", "1": "I", "L": "1", "S": "5",
               "5": "S", "B": "8", "8": "B", "Z": "2", "2": "Z", "G": "6", "6": "G"}
_MAX_SWAP_POSITIONS = 10


def normalize(text: str) -> str:
    """Unicode compatibility forms to ASCII where the panel font has only ASCII."""
    return unicodedata.normalize("NFKC", text).translate(_NORMALIZE)


def _label_key(text: str) -> str:
    return "".join(c for c in text.upper().translate(_LABEL_FOLD) if c.isalnum())


def _label_tolerance(length: int) -> int:
    # Short labels must match exactly (after folding) or "LOT" would match anything short.
    return 0 if length <= 3 else (1 if length <= 7 else 2)


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: characters dropped, added or changed to turn `a` into `b`."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


@dataclass(frozen=True)
class LabelMatch:
    distance: int
    rest: str  # the text after the label: separator, value, unit


def match_label(text: str, label: str) -> LabelMatch | None:
    """Find `label` at the start of `text`, loosely; None when it is not there.

    Compares alphanumerics only (spaces and punctuation dropped, look-alikes folded) and
    allows a small edit distance for longer labels.
    """
    target = _label_key(label)
    if not target:
        return None
    # (folded char, index in text) for every alphanumeric character of the line.
    skeleton = [(c.upper().translate(_LABEL_FOLD), i) for i, c in enumerate(text) if c.isalnum()]
    if len(skeleton) >= len(target) and "".join(c for c, _ in skeleton[: len(target)]) == target:
        # The exact label: distance 0 at its own length ranks first whatever else is near. Most
        # lines start so (every student read), and the edit distances below cost more than the rest.
        return LabelMatch(distance=0, rest=text[skeleton[len(target) - 1][1] + 1 :])
    tolerance = _label_tolerance(len(target))
    best: tuple[int, int, int] | None = None  # (distance, |k - len|, k)
    for k in range(max(1, len(target) - tolerance), min(len(skeleton), len(target) + tolerance) + 1):
        prefix = "".join(c for c, _ in skeleton[:k])
        distance = edit_distance(target, prefix)
        if distance <= tolerance:
            candidate = (distance, abs(k - len(target)), k)
            if best is None or candidate < best:
                best = candidate
    if best is None:
        return None
    end = skeleton[best[2] - 1][1] + 1
    return LabelMatch(distance=best[0], rest=text[end:])


def match_field(text: str, fields: Sequence[FieldSpec]) -> tuple[FieldSpec, LabelMatch] | None:
    """The field whose label starts `text` (full mode); the closest, then the longest label."""
    best: tuple[tuple[float, int], FieldSpec, LabelMatch] | None = None
    for spec in fields:
        found = match_label(text, spec.label)
        if found is None:
            continue
        key_len = len(_label_key(spec.label))
        rank = (found.distance / key_len, -key_len)
        if best is None or rank < best[0]:
            best = (rank, spec, found)
    return None if best is None else (best[1], best[2])


# Units: look-alikes folded on both sides ("l/min" is often read "1/min").
_UNIT_FOLD = str.maketrans({"μ": "u", "°": None, "1": "l", "i": "l", "|": "l", "0": "o", "5": "s"})


def _unit_key(text: str) -> str:
    folded = unicodedata.normalize("NFKC", text).lower().translate(_UNIT_FOLD)
    return "".join(folded.split())


def strip_unit(text: str, unit: str | None) -> str:
    """Remove the field's unit (loosely matched) from the end of `text`, if it is there."""
    text = _TRAILING_JUNK.sub("", text)
    if not unit:
        return text
    target = _unit_key(unit)
    if not target:
        return text
    tolerance = 0 if len(target) <= 1 else 1
    # Candidate suffixes by character position in the original text, spaces ignored.
    positions = [i for i, c in enumerate(text) if not c.isspace()]
    best: tuple[int, int, int] | None = None  # (distance, |length - len(target)|, start index)
    for length in range(max(1, len(target) - tolerance), len(target) + tolerance + 1):
        if length > len(positions):
            break
        start = positions[-length]
        # A unit never starts inside the number: keep digits, signs and decimal marks, unless
        # the character is the unit's own first letter misread ("1/min" for "l/min").
        if text[start] in "0123456789.,+-" and _unit_key(text[start]) != target[0]:
            continue
        distance = edit_distance(target, _unit_key(text[start:]))
        if distance <= tolerance:
            candidate = (distance, abs(length - len(target)), start)
            if best is None or candidate < best:
                best = candidate
    return text if best is None else _TRAILING_JUNK.sub("", text[: best[2]])


def _strip_separator(rest: str) -> str:
    rest = _LEADING_SEPARATORS.sub("", rest)
    rest = _MISREAD_SEPARATOR.sub("", rest)
    return _LEADING_SEPARATORS.sub("", rest)


def parse_number(text: str, spec: FieldSpec) -> tuple[float | int | None, str | None]:
    """(value, None) or (None, reason) for the value part of a number field's line."""
    core = _TRAILING_JUNK.sub("", strip_unit(text, spec.unit))
    core = "".join(core.split()).translate(_DIGIT_FIXES)
    if "," in core and "." not in core and core.count(",") == 1:
        core = core.replace(",", ".")  # decimal comma
    match = _NUMBER.match(core)
    if not match:
        return None, REASON_GARBLED if core else REASON_NO_TEXT
    decimals = len(match.group(2) or "")
    if spec.decimals is not None and decimals != spec.decimals:
        return None, REASON_DECIMALS
    # Printed without decimals: an int, as the manifest and the panel show it.
    value = int(core) if spec.decimals == 0 else float(core)
    if spec.plausible is not None and not spec.plausible[0] <= value <= spec.plausible[1]:
        return None, REASON_IMPLAUSIBLE
    return value, None


def _pattern_candidates(value: str) -> list[str]:
    positions = [i for i, c in enumerate(value) if c in _TEXT_SWAPS][:_MAX_SWAP_POSITIONS]
    out = []
    for choice in itertools.product((False, True), repeat=len(positions)):
        chars = list(value)
        for swap, i in zip(choice, positions, strict=True):
            if swap:
                chars[i] = _TEXT_SWAPS[chars[i]]
        out.append("".join(chars))
    return out


def parse_text(text: str, spec: FieldSpec) -> tuple[str | None, str | None]:
    """(value, None) or (None, reason) for the value part of a text field's line."""
    value = " ".join(strip_unit(text, spec.unit).split())
    value = _TRAILING_JUNK.sub("", value)
    if not value:
        return None, REASON_NO_TEXT
    if spec.pattern is None:
        return value, None
    pattern = re.compile(spec.pattern)
    compact = value.replace(" ", "")
    for candidate in dict.fromkeys((value, compact, compact.upper())):
        if pattern.fullmatch(candidate):
            return candidate, None
    # Undo letter/digit look-alikes, but only when exactly one correction fits the pattern.
    fits = {c for c in _pattern_candidates(compact.upper()) if pattern.fullmatch(c)}
    if len(fits) == 1:
        return fits.pop(), None
    return None, REASON_AMBIGUOUS if fits else REASON_PATTERN


def parse_value(rest: str, spec: FieldSpec) -> tuple[float | str | None, str | None]:
    """Parse what follows the label (separator, value, unit) for `spec`."""
    rest = _strip_separator(rest)
    if spec.kind == "number":
        return parse_number(rest, spec)
    return parse_text(rest, spec)


def parse_field(raw_text: str, spec: FieldSpec, confidence: float = 0.0) -> FieldReading:
    """One printed line known to belong to `spec` (template mode) -> a reading."""
    text = normalize(raw_text).strip()
    if not text:
        return FieldReading.absent(spec.name, REASON_NO_TEXT, raw_text, confidence)
    found = match_label(text, spec.label)
    if found is None:
        return FieldReading.absent(spec.name, REASON_NO_LABEL, raw_text, confidence)
    value, reason = parse_value(found.rest, spec)
    if reason is not None:
        return FieldReading.absent(spec.name, reason, raw_text, confidence)
    return FieldReading(spec.name, value, raw_text, confidence)


def parse_lines(
    lines: Sequence[tuple[str, float]], profile: LineProfile, only: Sequence[str] | None = None
) -> dict[str, FieldReading]:
    """Full mode: recognized lines (text, confidence) in reading order -> readings by field.

    Each line is assigned to the field whose label starts it. When several lines claim a
    field, a parsed value wins over a missing one, then the closer label match, then the
    first line. Fields that no line claims are absent from the result (the caller decides the
    reason). `only` restricts matching to those fields.
    """
    fields = [f for f in profile.fields if only is None or f.name in only]
    best: dict[str, tuple[tuple[int, int, int], FieldReading]] = {}
    for order, (raw, confidence) in enumerate(lines):
        text = normalize(raw).strip()
        matched = match_field(text, fields) if text else None
        if matched is None:
            continue
        spec, found = matched
        value, reason = parse_value(found.rest, spec)
        if reason is None:
            reading = FieldReading(spec.name, value, raw, confidence)
        else:
            reading = FieldReading.absent(spec.name, reason, raw, confidence)
        rank = (int(reading.missing), found.distance, order)
        if spec.name not in best or rank < best[spec.name][0]:
            best[spec.name] = (rank, reading)
    return {name: reading for name, (_, reading) in best.items()}


def values_equal(spec: FieldSpec, read: float | str | None, truth: float | str | None) -> bool:
    """Exact match as printed: numbers compared at the field's decimals, text as strings."""
    if read is None or truth is None:
        return read is None and truth is None
    if spec.kind == "text":
        return str(read) == str(truth)
    try:
        places = spec.decimals if spec.decimals is not None else 6
        return round(float(read), places) == round(float(truth), places)
    except (TypeError, ValueError):
        return False


__all__ = [
    "PARSER_VERSION",
    "LabelMatch",
    "REASON_NO_LABEL",
    "match_field",
    "match_label",
    "normalize",
    "parse_field",
    "parse_lines",
    "parse_number",
    "parse_text",
    "parse_value",
    "strip_unit",
    "values_equal",
]
