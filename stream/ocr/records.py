"""Parameter records: what the OCR stage hands to the model, the verdict and the feature cache.

Kept free of OCR and image libraries so training, the worker and tests can use them cheaply.
Readings are always in profile order, one per profile field: that order is the feature order.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from oanet.profile import LineProfile

Value = float | str | None

# Why a field is missing. Strings (not an Enum) because they travel in JSON and headers.
REASON_NO_TEXT = "no_text"  # nothing printed/visible where the field should be
REASON_NO_LABEL = "label_not_found"  # text found, but not this field's label
REASON_GARBLED = "garbled"  # label found, value does not parse exactly
REASON_DECIMALS = "decimals"  # number parsed but with the wrong number of decimals
REASON_IMPLAUSIBLE = "implausible"  # number outside the field's plausible range
REASON_PATTERN = "pattern_mismatch"  # text value does not match the field's pattern
REASON_AMBIGUOUS = "ambiguous"  # several corrections of OCR confusions fit the pattern
REASON_NOT_READ = "not_read"  # the mode in use does not read this field (no ROI, no fallback)
REASONS = (
    REASON_NO_TEXT,
    REASON_NO_LABEL,
    REASON_GARBLED,
    REASON_DECIMALS,
    REASON_IMPLAUSIBLE,
    REASON_PATTERN,
    REASON_AMBIGUOUS,
    REASON_NOT_READ,
)

# Which engine produced a reading (FieldReading.engine): the distilled line recogniser, or
# PaddleOCR's recogniser on the template line, or PaddleOCR's detection + recognition.
ENGINE_STUDENT = "student"
ENGINE_PADDLE = "paddleocr"
ENGINE_PADDLE_DETECTION = "paddleocr-det"
ENGINES = (ENGINE_STUDENT, ENGINE_PADDLE, ENGINE_PADDLE_DETECTION)


@dataclass(frozen=True)
class FieldReading:
    name: str
    value: Value
    raw_text: str = ""
    confidence: float = 0.0
    missing: bool = False
    reason: str | None = None  # one of REASONS when missing, else None
    engine: str = ""  # one of ENGINES; "" in records written before engines were recorded

    @classmethod
    def absent(
        cls, name: str, reason: str, raw_text: str = "", confidence: float = 0.0, engine: str = ""
    ) -> FieldReading:
        return cls(name=name, value=None, raw_text=raw_text, confidence=confidence, missing=True, reason=reason,
                   engine=engine)

    def by(self, engine: str) -> FieldReading:
        return replace(self, engine=engine)

    def to_json(self) -> dict[str, Any]:
        out = {
            "value": self.value,
            "raw": self.raw_text,
            "confidence": round(float(self.confidence), 4),
            "reason": self.reason,
        }
        if self.engine:
            out["engine"] = self.engine
        return out


@dataclass(frozen=True)
class ParameterRecord:
    readings: tuple[FieldReading, ...]
    frame_id: str | None = None
    mode: str = ""
    # Per-stage wall time in ms (decode, ocr, ...); informative, not part of equality.
    timings_ms: dict[str, float] = field(default_factory=dict, compare=False)

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.readings]

    @property
    def values(self) -> list[Value]:
        return [r.value for r in self.readings]

    @property
    def missing_mask(self) -> list[bool]:
        return [r.missing for r in self.readings]

    @property
    def missing(self) -> list[str]:
        return [r.name for r in self.readings if r.missing]

    @property
    def engines(self) -> dict[str, str]:
        """Field -> the engine that read it ("" where not recorded)."""
        return {r.name: r.engine for r in self.readings}

    @property
    def params(self) -> dict[str, Value]:
        return {r.name: r.value for r in self.readings}

    def reading(self, name: str) -> FieldReading:
        for r in self.readings:
            if r.name == name:
                return r
        raise KeyError(name)

    def with_frame_id(self, frame_id: str | None) -> ParameterRecord:
        return ParameterRecord(self.readings, frame_id, self.mode, dict(self.timings_ms))

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.frame_id,
            "params": self.params,
            "missing": self.missing,
            "readings": {r.name: r.to_json() for r in self.readings},
            "mode": self.mode,
            "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], profile: LineProfile | None = None) -> ParameterRecord:
        """Inverse of `to_json`; with a profile, readings are checked and put in profile order."""
        readings_data = data.get("readings") or {}
        params = data.get("params") or {}
        missing = set(data.get("missing") or ())
        names = profile.field_names if profile is not None else list(params)
        if profile is not None and set(params) != set(names):
            raise ValueError(f"record fields {sorted(params)} do not match profile {profile.name!r} fields {names}")
        readings = []
        for name in names:
            extra = readings_data.get(name) or {}
            readings.append(
                FieldReading(
                    name=name,
                    value=params.get(name),
                    raw_text=extra.get("raw", ""),
                    confidence=float(extra.get("confidence", 0.0)),
                    missing=name in missing,
                    reason=extra.get("reason"),
                    engine=extra.get("engine", ""),
                )
            )
        return cls(
            readings=tuple(readings),
            frame_id=data.get("id"),
            mode=data.get("mode", ""),
            timings_ms=dict(data.get("timings_ms") or {}),
        )

    @classmethod
    def all_missing(
        cls, profile: LineProfile, reason: str, frame_id: str | None = None, mode: str = ""
    ) -> ParameterRecord:
        readings = tuple(FieldReading.absent(f.name, reason) for f in profile.fields)
        return cls(readings=readings, frame_id=frame_id, mode=mode)
