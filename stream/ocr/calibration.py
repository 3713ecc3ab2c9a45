"""The held-out side of `oanet ocr distill`: parts of frames, fixed views, the checks and the
calibration (issue 13).

Frames are held out by whole lots (`text_groups`, `split_frames`): the *selection* part picks the
checkpoint (`HeldOutViews.outcomes` -> `Checkpoint`), the *calibration* part sets the thresholds
(`calibrate`): for each field, just above the most confident read of that field that the engine
would accept but that is wrong, and above every field's substitutions (`Thresholds`). Reads the
ink check refuses (`stream.ocr.ink`, with the glyph widths `glyph_widths` learns on the training
lines) fall back whatever their confidence, so they do not set it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stream.ocr.budget import MAX_NUMBER_WRONG_RATE
from stream.ocr.ink import GlyphWidths, ink_runs, learn_glyph_widths
from stream.ocr.lines import Line, slot_view
from stream.ocr.parse import values_equal
from stream.ocr.student import (
    MIN_TEXT_VALUES,
    NEVER,
    TIME_STRIDE,
    StudentRead,
    ctc_decode,
    line_input,
    line_steps,
    other_labels_of,
    unexplained_ink,
    value_charset,
    value_glyphs,
    value_text,
    well_formed_read,
)


def text_groups(lines: Sequence[Line], profile) -> dict[str, str]:
    """Frame id -> the values its text fields print (a lot id, a recipe), as one key.

    Frames that print the same lot go to the same part of `split_frames`: a held-out part then
    holds lots the student never trained on, as a new lot on the line will be. Held out frame by
    frame, every lot of the calibration frames was also a training lot, and calibration never saw
    the confident wrong reads a new lot gets ("LOTTY0409-10" for YI0409-10,
    docs/benchmarks.md).
    """
    values: dict[str, list[str]] = {}
    for line in lines:
        if profile.fields[line.field].kind == "text" and line.value is not None:
            values.setdefault(line.frame_id, []).append(f"{profile.fields[line.field].name}={line.value}")
    return {frame: ";".join(sorted(v)) for frame, v in values.items()}


def split_frames(
    lines: Sequence[Line], shares: Sequence[float], rng: np.random.Generator,
    groups: dict[str, str] | None = None,
) -> list[list[Line]]:
    """[training lines, then one list per share]: whole frames, so a frame's lines stay together,
    and whole groups of frames (`groups`: frame id -> key; a frame without one is its own group).

    A part takes groups until it holds its share of the frames; each held-out part gets at least
    one group while the training part keeps one.
    """
    groups = groups or {}
    members: dict[str, list[str]] = {}
    for frame in sorted({line.frame_id for line in lines}):
        members.setdefault(groups.get(frame, f"frame:{frame}"), []).append(frame)
    order = [members[key] for key in rng.permutation(sorted(members))]
    total = sum(len(m) for m in order)
    owner: dict[str, int] = {}
    start = 0
    for part, share in enumerate(shares, start=1):
        taken = 0
        while start < len(order) - 1 and (taken == 0 or taken < share * total):
            if taken and taken + len(order[start]) > share * total * 1.5:
                break  # a big group would take far more than the share: leave it for training
            owner.update({frame: part for frame in order[start]})
            taken += len(order[start])
            start += 1
    parts: list[list[Line]] = [[] for _ in range(len(shares) + 1)]
    for line in lines:
        parts[owner.get(line.frame_id, 0)].append(line)
    return parts


# Nuisance views of each calibration line. The threshold is the most confident wrong read among
# them: a rare tail, which more views estimate better. With 2, a student whose calibration found
# its most confident wrong read at 0.676 read two test values wrong at 0.77 and 0.78
# (docs/benchmarks.md); the views cost about 2 ms each.
CALIBRATION_NUISANCES = 6
KIND_PRINTED = "as printed"
KIND_NUISANCE = "nuisance"


@dataclass(frozen=True)
class HeldOutViews:
    """Fixed inputs of held-out lines: each as printed, and `nuisances` strong views of it.

    Made once, so every checkpoint reads exactly the same inputs.
    """

    lines: tuple[Line, ...]
    kinds: tuple[str, ...]
    views: tuple[tuple[np.ndarray, int], ...]

    @classmethod
    def of(cls, lines: Sequence[Line], nuisances: int, seed: int, height: int, width: int) -> HeldOutViews:
        rng = np.random.default_rng(seed)
        owners, kinds, views = [], [], []
        for line in lines:
            if line.value is None:
                continue
            views.append((line_input(line.trimmed, height, width), line_steps(line.trimmed, height, width)))
            owners.append(line)
            kinds.append(KIND_PRINTED)
            for _ in range(nuisances):
                views.append(slot_view(line, rng, True, height, width))
                owners.append(line)
                kinds.append(KIND_NUISANCE)
        return cls(tuple(owners), tuple(kinds), tuple(views))

    def outcomes(self, net, profile, charset: str, widths: GlyphWidths | None = None) -> list[Outcome]:
        """One per view: what the engine would make of the student's read (`widths`: the
        student's learnt glyph widths, for the ink check)."""
        out = []
        for line, kind, read in zip(self.lines, self.kinds, read_lines(net, self.views, charset), strict=True):
            spec = profile.fields[line.field]
            value = str(line.value) if spec.kind == "text" else ""
            reading = well_formed_read(read, spec, other_labels_of(profile, spec))
            if reading is None:
                out.append(Outcome(kind, spec.name, None, False, value=value))
                continue
            correct = values_equal(spec, reading.value, line.value)
            if unexplained_ink(read, spec, widths):
                out.append(Outcome(kind, spec.name, None, correct, ink_refused=True, value=value))
            else:
                # As many characters as the printed value: a glyph read as another.
                printed, read_value = value_text(spec, line.value), value_text(spec, reading.value)
                swapped = not correct and len(read_value) == len(printed)
                swaps = frozenset((a, b) for a, b in zip(printed, read_value) if a != b) if swapped else frozenset()
                out.append(Outcome(kind, spec.name, reading.confidence, correct, substitution=swapped, swaps=swaps,
                                   value=value))
        return out


@dataclass(frozen=True)
class Outcome:
    kind: str  # KIND_PRINTED or KIND_NUISANCE
    field: str
    # None: the engine gives the line to PaddleOCR whatever the threshold (not exactly a line,
    # or ink the read has no character for)
    confidence: float | None
    correct: bool
    ink_refused: bool = False  # well formed, but refused by the ink check (`unexplained_ink`)
    # wrong with as many characters as the printed value: a glyph read as another ("6" for "8")
    substitution: bool = False
    # a substitution's (printed, read) characters where they differ; empty: not known, so the
    # substitution counts for every field
    swaps: frozenset[tuple[str, str]] = frozenset()
    # a text field's printed value (a lot id): its distinct values are counted (`MIN_TEXT_VALUES`)
    value: str = ""


# A field gets a threshold of its own only when at least this many of its calibration views
# reach a threshold at all (well formed, not refused by the ink check); the others keep the
# pooled one. Every field's own threshold is at least above every field's substitutions
# (`calibrate_outcomes`). With 6 nuisance views of every calibration line a field has about
# 550-650 such views on 600 frames; the per-field rule first tried on about 90 lines per field,
# without the ink check, let a wrong value through (docs/benchmarks.md, "A step budget").
MIN_FIELD_VIEWS = 200


@dataclass(frozen=True)
class Thresholds:
    """The confidence a student read of each field needs: `by_field` where calibration set
    one, else `default` (the pooled threshold, above every field's wrong reads). `floor`: the
    highest of the fields' floors, above every substitution (each field's own floor, above the
    substitutions its characters allow, is in the calibration stats)."""

    default: float
    by_field: dict[str, float]
    floor: float = 0.0

    def of(self, name: str) -> float:
        return self.by_field.get(name, self.default)


def _just_above(confidences: Sequence[float], floor: float) -> float:
    return max(floor, float(np.nextafter(max(confidences), 1.0)) if confidences else 0.0)


def _swap_possible(outcome: Outcome, chars: frozenset[str] | None) -> bool:
    """Whether `outcome`'s substitution could happen in a field whose values hold `chars` (None
    or no swaps recorded: assume it could)."""
    return chars is None or not outcome.swaps or any(a in chars and b in chars for a, b in outcome.swaps)


def calibrate_outcomes(
    outcomes: Sequence[Outcome], min_threshold: float, min_field_views: int = MIN_FIELD_VIEWS,
    value_chars: Mapping[str, frozenset[str]] | None = None, number_fields: Collection[str] | None = None,
    text_fields: Collection[str] | None = None,
) -> tuple[Thresholds, dict[str, Any]]:
    """Each field's lowest threshold above every wrong well-formed read of that field and above
    every field's substitutions that its characters allow (never below `min_threshold`), and
    what they leave to PaddleOCR, by kind of view. `value_chars`: field name -> the characters
    its value part holds (`student.value_charset`); without it every substitution counts for
    every field. `number_fields`: the number fields' names, whose views and wrong well-formed
    reads the stats then count (`number_views`, `number_wrong`: `unreliable`). `text_fields`: the
    text fields' names; one whose views print fewer than `MIN_TEXT_VALUES` distinct values gets
    `NEVER` (its reads are used only where PaddleOCR confirmed them: `stream.ocr.confirm`), and the
    stats count them (`text_values`).

    A field with fewer than `min_field_views` views that reach a threshold keeps the pooled one
    (`Thresholds.default`: above every field's wrong reads). One pooled threshold for all fields
    was the rule before: one confident wrong read of one field ("USPOWER17mW" for 117 at 0.887)
    then held back 10% of the right reads of every other field (docs/benchmarks.md).

    Substitutions (a glyph read as another: "PRESSURE102.6kPa" for 102.8, "VAC-78.8kPa" for
    -78.6) set every field's floor: the digits are the same glyphs in every field, and the ink
    check cannot see them. With a field's own wrong reads only, a student whose pressure lines
    had no wrong calibration read accepted "102.6" for 102.8 at 0.70 on test frames. But a
    substitution only floors the fields where both of its glyphs can be printed: a spliced
    student's most confident wrong reads were letters of unseen lot ids, and with them in every
    field's floor, 14% of the clean number lines of unseen lots fell back (docs/benchmarks.md).
    """
    wrong = [o for o in outcomes if o.confidence is not None and not o.correct]
    substitutions = [o for o in wrong if o.substitution]
    pooled = _just_above([o.confidence for o in wrong], min_threshold)
    floor = _just_above([o.confidence for o in substitutions], min_threshold)
    by_field: dict[str, int] = {}
    for o in wrong:
        by_field[o.field] = by_field.get(o.field, 0) + 1
    own: dict[str, float] = {}
    floors: dict[str, float] = {}
    for name in sorted({o.field for o in outcomes}):
        chars = value_chars.get(name) if value_chars is not None else None
        floors[name] = _just_above([o.confidence for o in substitutions if _swap_possible(o, chars)], min_threshold)
        reachable = [o for o in outcomes if o.field == name and o.confidence is not None]
        if len(reachable) >= min_field_views:
            own[name] = _just_above([o.confidence for o in reachable if not o.correct], floors[name])
    values: dict[str, int] = {}
    for name in sorted(text_fields or ()):
        values[name] = len({o.value for o in outcomes if o.field == name})
        if values[name] < MIN_TEXT_VALUES:
            own[name] = NEVER
    thresholds = Thresholds(pooled, own, floor)
    refused = [o for o in outcomes if o.ink_refused]
    stats: dict[str, Any] = {"lines": sum(1 for o in outcomes if o.kind == KIND_PRINTED),
                             "wrong_but_well_formed": len(wrong), "wrong_by_field": dict(sorted(by_field.items())),
                             "thresholds_by_field": {k: round(v, 4) for k, v in own.items()},
                             "substitution_floor": round(floor, 4),
                             "substitution_floor_by_field": {k: round(v, 4) for k, v in floors.items()},
                             "ink_refused": {"wrong": sum(1 for o in refused if not o.correct),
                                             "right": sum(1 for o in refused if o.correct)}}
    if text_fields is not None:
        stats["text_values"] = values
    if number_fields is not None:
        numbers = [o for o in outcomes if o.field in number_fields]
        stats["number_views"] = len(numbers)
        stats["number_wrong"] = sum(1 for o in numbers if o.confidence is not None and not o.correct)
    for kind in (KIND_PRINTED, KIND_NUISANCE):
        mine = [o for o in outcomes if o.kind == kind]
        accepted = [o for o in mine if o.confidence is not None and o.confidence >= thresholds.of(o.field)]
        stats[kind] = {
            "reads": len(mine),
            "accepted": len(accepted),
            "accepted_wrong": sum(1 for o in accepted if not o.correct),
            "fallback_rate": round(1 - len(accepted) / len(mine), 4) if mine else None,
        }
    return thresholds, stats


@dataclass(frozen=True)
class Checkpoint:
    """The selection lines' verdict on the network after `step` steps."""

    step: int
    printed: float  # fallback rate on the selection lines as printed
    nuisance: float  # ... and on their nuisance views
    threshold: float = 0.0  # the pooled threshold calibration on these lines would set
    wrong: int = 0  # well-formed but wrong reads among them (the threshold clears them all)
    malformed: int = 0  # reads that are not exactly a line (a fallback whatever the threshold)
    ink_refused_wrong: int = 0  # wrong reads the ink check refused (no threshold needed for them)

    @property
    def key(self) -> tuple[float, float]:
        return (self.printed, self.nuisance)


def _logits(net, batch: np.ndarray) -> np.ndarray:
    """[N, T, C] logits of a batch: a torch network in training, or a saved `Student`."""
    if hasattr(net, "logits"):
        return net.logits(batch)
    import torch

    with torch.no_grad():
        return net(torch.from_numpy(batch)).numpy()


def read_lines(
    net, views: Sequence[tuple[np.ndarray, int]], charset: str, chunk: int = 256
) -> list[StudentRead]:
    out: list[StudentRead] = []
    for start in range(0, len(views), chunk):
        part = views[start : start + chunk]
        batch = np.stack([v for v, _ in part])[:, None]
        out.extend(ctc_decode(_logits(net, batch), charset, [n for _, n in part], batch))
    return out


def calibrate(
    net, lines: Sequence[Line], profile, charset: str, height: int, width: int, seed: int, min_threshold: float,
    widths: GlyphWidths | None = None,
) -> tuple[Thresholds, dict[str, Any]]:
    """The thresholds above which no held-out read the engine would accept is wrong (views drawn
    with `seed`); `net`: the torch network, or a saved `Student` (`oanet ocr calibrate`)."""
    views = HeldOutViews.of(lines, CALIBRATION_NUISANCES, seed, height, width)
    return calibrate_outcomes(views.outcomes(net, profile, charset, widths), min_threshold,
                              value_chars=value_charsets(profile),
                              number_fields={spec.name for spec in profile.fields if spec.kind == "number"},
                              text_fields={spec.name for spec in profile.fields if spec.kind == "text"})


def wrong_rate_problem(limit: float) -> str | None:
    """What is wrong with a `--max-wrong-rate` value, or None (a share: 0 to 1)."""
    return None if 0.0 <= limit <= 1.0 else f"--max-wrong-rate must be in [0, 1], got {limit}"


def unreliable(calibration: Mapping[str, Any], limit: float = MAX_NUMBER_WRONG_RATE) -> str | None:
    """Why a student's calibration (`calibrate`'s stats) says it is not to be trusted, or None:
    more than `limit` of its number fields' views read wrong yet well formed. Stats without the
    counts (a student calibrated before they were kept) pass."""
    views, wrong = calibration.get("number_views"), calibration.get("number_wrong")
    if not views or wrong is None or wrong / views <= limit:
        return None
    return (f"{wrong} of the {views} calibration reads of number fields were wrong yet well formed "
            f"({100 * wrong / views:.2f}%, above the {100 * limit:g}% of --max-wrong-rate): this network did not "
            "learn the line, and its confident wrong reads are more than its thresholds can hold back")


def value_charsets(profile) -> dict[str, frozenset[str]]:
    """Field name -> the characters its value part holds (`calibrate_outcomes`)."""
    return {spec.name: value_charset(spec) for spec in profile.fields}


def glyph_widths(lines: Sequence[Line], profile, height: int, width: int) -> GlyphWidths:
    """Each character's run width range on labelled lines as printed (`stream.ocr.ink`)."""

    def pairs():
        for line in lines:
            if line.value is None:
                continue
            spec = profile.fields[line.field]
            runs = ink_runs(line_input(line.trimmed, height, width), line_steps(line.trimmed, height, width) * TIME_STRIDE)
            yield from value_glyphs(runs, spec, value_text(spec, line.value))

    return learn_glyph_widths(pairs())
