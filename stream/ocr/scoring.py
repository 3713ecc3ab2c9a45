"""Score parameter records against a dataset's ground truth (pure; used by `oanet ocr` and bench).

Fields are scored in three groups, because they fail for different reasons:
- `clean`: fields of frames without nuisance (the OCR stage's own accuracy);
- `nuisance`: fields of frames with lighting/blur/noise/shift nuisance, minus smudged fields;
- `smudged`: fields whose printed line was deliberately smudged or occluded (expected to be
  missing often; a *wrong* value there is still an error worth seeing).
A manifest without nuisance information puts every field in `clean`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from oanet.profile import LineProfile
from stream.ocr.parse import values_equal
from stream.ocr.records import ENGINE_PADDLE, ENGINE_PADDLE_DETECTION, ENGINE_STUDENT, ParameterRecord

GROUPS = ("clean", "nuisance", "smudged")
# Issue 3 targets: exact match on clean frames and on nuisance frames (smudged excluded).
TARGETS = {"clean": 0.995, "nuisance": 0.97}


@dataclass
class Tally:
    total: int = 0
    correct: int = 0
    missing: int = 0
    wrong: int = 0  # a value was read and it differs from the truth: the costly error

    def add(self, correct: bool, missing: bool) -> None:
        self.total += 1
        self.correct += int(correct)
        self.missing += int(missing and not correct)
        self.wrong += int(not correct and not missing)

    def merge(self, other: Tally) -> None:
        self.total += other.total
        self.correct += other.correct
        self.missing += other.missing
        self.wrong += other.wrong

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.total if self.total else None

    @property
    def missing_rate(self) -> float | None:
        return self.missing / self.total if self.total else None


@dataclass
class Score:
    profile: LineProfile
    # (group, field) -> tally; fields without ground truth are only counted in `unscored`.
    tallies: dict[tuple[str, str], Tally] = field(default_factory=dict)
    unscored_missing: dict[str, list[bool]] = field(default_factory=dict)
    frames: dict[str, int] = field(default_factory=lambda: {g: 0 for g in ("clean", "nuisance")})
    errors: int = 0
    examples: list[tuple[str, str, object, str]] = field(default_factory=list)
    # (group, engine) -> tally of the fields that engine read (engine "" = none recorded).
    by_engine: dict[tuple[str, str], Tally] = field(default_factory=dict)
    # (group, field, engine) -> fields read: which fields a student leaves to PaddleOCR.
    field_engines: dict[tuple[str, str, str], int] = field(default_factory=dict)

    def add(
        self,
        record: ParameterRecord,
        truth: dict[str, object],
        nuisance: bool,
        smudged: frozenset[str] = frozenset(),
    ) -> None:
        self.frames["nuisance" if nuisance else "clean"] += 1
        for reading in record.readings:
            spec = self.profile.field(reading.name)
            if reading.name not in truth:
                self.unscored_missing.setdefault(reading.name, []).append(reading.missing)
                continue
            group = "smudged" if reading.name in smudged else ("nuisance" if nuisance else "clean")
            ok = values_equal(spec, reading.value, truth[reading.name])  # type: ignore[arg-type]
            self.tallies.setdefault((group, reading.name), Tally()).add(ok, reading.missing)
            self.by_engine.setdefault((group, reading.engine), Tally()).add(ok, reading.missing)
            key = (group, reading.name, reading.engine)
            self.field_engines[key] = self.field_engines.get(key, 0) + 1
            if not ok and not reading.missing and group != "smudged" and len(self.examples) < 20:
                self.examples.append((record.frame_id or "?", reading.name, truth[reading.name], reading.raw_text))

    def group(self, name: str) -> Tally:
        total = Tally()
        for (group, _), tally in self.tallies.items():
            if group == name:
                total.merge(tally)
        return total

    def engine_total(self, engine: str, groups: Sequence[str] = ("clean", "nuisance")) -> Tally:
        return _sum(self.by_engine.get((group, engine)) for group in groups)

    def fallback_rate(self, group: str) -> float | None:
        """With a student: the share of the lines with ink that PaddleOCR read instead."""
        student = self.by_engine.get((group, ENGINE_STUDENT), Tally()).total
        paddle = sum(self.by_engine.get((group, e), Tally()).total for e in (ENGINE_PADDLE, ENGINE_PADDLE_DETECTION))
        return paddle / (student + paddle) if student + paddle else None

    def fallback_by_field(self, group: str) -> dict[str, float]:
        """With a student: per field, the share of its lines with ink that PaddleOCR read."""
        paddle = (ENGINE_PADDLE, ENGINE_PADDLE_DETECTION)
        out: dict[str, float] = {}
        for spec in self.profile.fields:
            student = self.field_engines.get((group, spec.name, ENGINE_STUDENT), 0)
            teacher = sum(self.field_engines.get((group, spec.name, e), 0) for e in paddle)
            if student + teacher:
                out[spec.name] = teacher / (student + teacher)
        return out

    def field_total(self, name: str, groups: Sequence[str] = GROUPS) -> Tally:
        return _sum(self.tallies.get((group, name)) for group in groups)


def _sum(tallies: Iterable[Tally | None]) -> Tally:
    total = Tally()
    for tally in tallies:
        if tally:
            total.merge(tally)
    return total


def fmt_pct(value: float | None) -> str:
    return "   n/a" if value is None else f"{100 * value:6.2f}%"
