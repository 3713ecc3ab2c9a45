"""The worker's output messages (pure): a `Verdict` for the verdicts topic, a `DeadLetter`
for the dead-letter topic. docs/contracts.md "Topics and messages"; schema: stream/schemas.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from kafka.record.default_records import DefaultRecordBatchBuilder

from oanet.contracts import (
    HEADER_ERROR_CODE,
    HEADER_ERROR_MESSAGE,
    HEADER_ERROR_STAGE,
    HEADER_FRAME_ID,
    HEADER_ORIGINAL_NULL,
    HEADER_ORIGINAL_SHA256,
    HEADER_ORIGINAL_SIZE,
    HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_TOPIC,
    VERDICT_SCHEMA,
)
from stream.ocr.records import ParameterRecord
from stream.worker.frames import Frame, Headers, SourceRef
from triton_models.oanet_fusion.core import BRANCHES, MODALITIES

# Decimals kept for probabilities and scores: float32 carries about 7 significant digits, so
# more would be noise; fewer would hide real differences between replays.
DECIMALS = 6
# Fields of a verdict that differ between two runs on the same frame and model.
VOLATILE_FIELDS = ("timings_ms", "processed_at", "worker")
MAX_ERROR_MESSAGE = 1000
# Bytes kept free below max.message.bytes when a dead letter is cut to fit: the producer's
# estimate is exact for an uncompressed batch of one record, this covers a broker's own framing.
DEAD_LETTER_SLACK = 256


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def iso(value: dt.datetime) -> str:
    return value.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _number(value: Any) -> float:
    return round(float(value), DECIMALS)


def _param(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return float(value)
    return value


@dataclass(frozen=True)
class ModelOutputs:
    """One frame's row of the model outputs (`infer` returns a batch)."""

    defect_probability: float
    branch_probabilities: tuple[float, float, float]
    gate_weights: tuple[float, float, float]
    kl_scores: tuple[float, float]

    @classmethod
    def row(cls, outputs: Mapping[str, np.ndarray], index: int) -> ModelOutputs:
        def vector(name: str, width: int) -> tuple[float, ...]:
            values = np.asarray(outputs[name], dtype=np.float64).reshape(-1, width)[index]
            return tuple(float(v) for v in values)

        return cls(
            defect_probability=float(np.asarray(outputs["defect_probability"], dtype=np.float64).reshape(-1)[index]),
            branch_probabilities=vector("branch_probabilities", len(BRANCHES)),  # type: ignore[arg-type]
            gate_weights=vector("gate_weights", len(BRANCHES)),  # type: ignore[arg-type]
            kl_scores=vector("kl_scores", len(MODALITIES)),  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class Verdict:
    frame_id: str
    line_id: str | None
    profile: str
    outputs: ModelOutputs
    threshold: float
    record: ParameterRecord
    model_name: str
    model_version: str
    source: SourceRef
    captured_at: dt.datetime | None
    processed_at: dt.datetime
    timings_ms: Mapping[str, float]
    worker: str

    @classmethod
    def build(cls, frame: Frame, record: ParameterRecord, outputs: ModelOutputs, *, threshold: float,
              model_name: str, model_version: str, timings_ms: Mapping[str, float], worker: str,
              processed_at: dt.datetime | None = None) -> Verdict:
        return cls(
            frame_id=frame.frame_id,
            line_id=frame.line_id,
            profile=frame.profile,
            outputs=outputs,
            threshold=threshold,
            record=record,
            model_name=model_name,
            model_version=model_version,
            source=frame.source,
            captured_at=frame.captured_at,
            processed_at=processed_at or utc_now(),
            timings_ms=dict(timings_ms),
            worker=worker,
        )

    @property
    def is_defect(self) -> bool:
        # Compared after rounding, so the published probability and verdict always agree.
        return _number(self.outputs.defect_probability) >= _number(self.threshold)

    @property
    def verdict(self) -> str:
        return "defect" if self.is_defect else "pass"

    def to_json(self) -> dict[str, Any]:
        o = self.outputs
        return {
            "schema": VERDICT_SCHEMA,
            "frame_id": self.frame_id,
            "line_id": self.line_id,
            "profile": self.profile,
            "verdict": self.verdict,
            "defect_probability": _number(o.defect_probability),
            "threshold": _number(self.threshold),
            "branch_probabilities": {b: _number(v) for b, v in zip(BRANCHES, o.branch_probabilities, strict=True)},
            "gate_weights": {b: _number(v) for b, v in zip(BRANCHES, o.gate_weights, strict=True)},
            "kl_scores": {m: _number(v) for m, v in zip(MODALITIES, o.kl_scores, strict=True)},
            "params": {name: _param(value) for name, value in self.record.params.items()},
            "missing": list(self.record.missing),
            "model": {"name": self.model_name, "version": self.model_version},
            "timings_ms": {k: round(float(v), 2) for k, v in self.timings_ms.items()},
            "source": {"topic": self.source.topic, "partition": self.source.partition, "offset": self.source.offset},
            "captured_at": iso(self.captured_at) if self.captured_at is not None else None,
            "processed_at": iso(self.processed_at),
            "worker": self.worker,
        }

    def encode(self) -> bytes:
        return json.dumps(self.to_json(), separators=(",", ":"), allow_nan=False).encode("utf-8")

    @property
    def key(self) -> bytes:
        return self.frame_id.encode("utf-8")

    @property
    def headers(self) -> list[tuple[str, bytes]]:
        return [(HEADER_FRAME_ID, self.key)]


def stable_part(message: Mapping[str, Any]) -> dict[str, Any]:
    """A verdict message without the fields that differ between runs (for replay checks)."""
    return {k: v for k, v in message.items() if k not in VOLATILE_FIELDS}


@dataclass(frozen=True)
class DeadLetter:
    """A frame the worker cannot verdict: original key, value and headers, plus why."""

    source: SourceRef
    frame_id: str
    key: bytes | None
    value: bytes | None
    original_headers: Headers
    code: str
    stage: str
    message: str

    @property
    def headers(self) -> list[tuple[str, bytes]]:
        message = self.message.replace("\n", " ")[:MAX_ERROR_MESSAGE]
        return [
            *self.original_headers,
            (HEADER_ERROR_CODE, self.code.encode()),
            (HEADER_ERROR_MESSAGE, message.encode("utf-8", "replace")),
            (HEADER_ERROR_STAGE, self.stage.encode()),
            (HEADER_SOURCE_TOPIC, self.source.topic.encode()),
            (HEADER_SOURCE_PARTITION, str(self.source.partition).encode()),
            (HEADER_SOURCE_OFFSET, str(self.source.offset).encode()),
        ]

    def record(self, limit: int) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
        """(key, value, headers) to produce, never more than `limit` bytes (max.message.bytes).

        The original bytes go as they came while they fit. The original record fitted the frames
        topic, but the error headers come on top: near the limit the value is cut to what fits and
        the headers carry its original size and sha256. A record with neither key nor value (Kafka
        refuses to send one) gets an empty value and a header saying so.
        """
        headers, value = self.headers, self.value
        if value is None and self.key is None:
            return None, b"", [*headers, (HEADER_ORIGINAL_NULL, b"value")]
        if _size(self.key, value, headers) + DEAD_LETTER_SLACK <= limit:
            return self.key, value, headers
        original = value or b""
        headers = [*headers, (HEADER_ORIGINAL_SIZE, str(len(original)).encode()),
                   (HEADER_ORIGINAL_SHA256, hashlib.sha256(original).hexdigest().encode())]
        room = limit - DEAD_LETTER_SLACK - _size(self.key, b"", headers)
        if room < 0:  # original headers that leave no room: keep only this worker's own
            headers = headers[len(self.original_headers):]
            room = limit - DEAD_LETTER_SLACK - _size(self.key, b"", headers)
        return self.key, original[:max(0, room)], headers


def _size(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> int:
    """Bytes of a record as the producer counts them against its max_request_size."""
    return DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers)
