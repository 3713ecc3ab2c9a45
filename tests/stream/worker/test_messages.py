"""Verdict and dead-letter messages: the JSON Schema, determinism, error headers."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import jsonschema
import numpy as np
import pytest
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
    DeadLetterCode,
)
from stream.ocr.records import FieldReading, ParameterRecord
from stream.schemas import verdict_schema, verdict_validator
from stream.worker.frames import FramePolicy, SourceRef, admit
from stream.worker.messages import DeadLetter, ModelOutputs, Verdict, stable_part
from tests.stream.worker.images import noise, png

SOURCE = SourceRef("aoi.frames", 1, 7)
POLICY = FramePolicy(max_bytes=1 << 20, max_pixels=10**8, color_models=frozenset({"rgb"}),
                     profiles=frozenset({"line-t"}), default_profile="line-t")
RECORD = ParameterRecord(readings=(
    FieldReading("temp", 171.5, "TEMP 171.5C", 0.99),
    FieldReading.absent("force", "garbled", "F0RCE ?"),
    FieldReading("lot_id", "AB1234-01", "LOT AB1234-01", 0.97),
), frame_id="x1", mode="template")


def outputs(p: float = 0.73, n: int = 1) -> dict[str, np.ndarray]:
    return {
        "defect_probability": np.full(n, p, np.float32),
        "branch_probabilities": np.tile(np.array([0.2, 0.9, 0.7], np.float32), (n, 1)),
        "gate_weights": np.tile(np.array([0.25, 0.5, 0.25], np.float32), (n, 1)),
        "kl_scores": np.tile(np.array([0.4, 3.2], np.float32), (n, 1)),
    }


def make_verdict(p: float = 0.73, threshold: float = 0.5, captured: bytes | None = b"2026-11-22T10:00:00Z",
                 **kwargs) -> Verdict:
    headers = [(HEADER_FRAME_ID, b"x1")] + ([("captured_at", captured)] if captured else [])
    frame = admit(SOURCE, b"line-t", png(noise()), headers, POLICY)
    return Verdict.build(frame, RECORD, ModelOutputs.row(outputs(p), 0), threshold=threshold, model_name="oanet",
                         model_version="3", timings_ms={"decode": 1.5, "ocr": 20.25, "inference": 3.0, "total": 30.0},
                         worker="host:1", **kwargs)


def test_the_schema_is_a_valid_json_schema_named_by_the_contract():
    schema = verdict_schema()
    jsonschema.validators.validator_for(schema).check_schema(schema)
    assert schema["properties"]["schema"]["const"] == VERDICT_SCHEMA


def test_a_verdict_validates_and_carries_everything_design_md_lists():
    message = json.loads(make_verdict().encode())
    verdict_validator().validate(message)
    assert message["schema"] == VERDICT_SCHEMA
    assert message["frame_id"] == "x1" and message["line_id"] == "line-t" and message["verdict"] == "defect"
    assert message["defect_probability"] == pytest.approx(0.73, abs=1e-6) and message["threshold"] == 0.5
    assert message["branch_probabilities"] == pytest.approx({"image": 0.2, "params": 0.9, "fused": 0.7}, abs=1e-6)
    assert message["gate_weights"] == {"image": 0.25, "params": 0.5, "fused": 0.25}
    assert message["kl_scores"] == pytest.approx({"image": 0.4, "params": 3.2}, abs=1e-6)
    assert message["params"] == {"temp": 171.5, "force": None, "lot_id": "AB1234-01"}
    assert message["missing"] == ["force"]
    assert message["model"] == {"name": "oanet", "version": "3"}
    assert message["source"] == {"topic": "aoi.frames", "partition": 1, "offset": 7}
    assert message["timings_ms"]["ocr"] == 20.25
    assert message["captured_at"] == "2026-11-22T10:00:00.000Z"
    for key in ("captured_at", "processed_at"):  # jsonschema checks date-time only with rfc3339-validator
        assert dt.datetime.fromisoformat(message[key]).tzinfo is not None


def test_schema_rejects_what_a_reader_could_not_use():
    validator = verdict_validator()
    good = json.loads(make_verdict().encode())
    for broken in (
        {**good, "verdict": "maybe"},
        {**good, "defect_probability": 1.5},
        {**good, "schema": "oanet.verdict.v0"},
        {k: v for k, v in good.items() if k != "frame_id"},
        {**good, "gate_weights": {"image": 1.0}},
        {**good, "unexpected": 1},
    ):
        with pytest.raises(jsonschema.ValidationError):
            validator.validate(broken)


def test_verdict_is_decided_on_the_published_numbers():
    assert make_verdict(p=0.5, threshold=0.5).verdict == "defect"
    assert make_verdict(p=0.4999999, threshold=0.5).verdict == "defect"  # equal after rounding to 6 decimals
    assert make_verdict(p=0.499, threshold=0.5).verdict == "pass"


def test_replays_differ_only_in_volatile_fields():
    first = json.loads(make_verdict().encode())
    later = json.loads(make_verdict(processed_at=dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)).encode())
    assert first != later and stable_part(first) == stable_part(later)
    assert set(first) - set(stable_part(first)) == {"timings_ms", "processed_at", "worker"}


def test_verdict_without_capture_time_and_key():
    verdict = make_verdict(captured=None)
    assert json.loads(verdict.encode())["captured_at"] is None
    assert verdict.key == b"x1" and verdict.headers == [(HEADER_FRAME_ID, b"x1")]


def test_model_outputs_row_picks_one_frame_of_a_batch():
    batch = outputs(0.3, n=4)
    batch["defect_probability"][2] = 0.9
    row = ModelOutputs.row(batch, 2)
    assert row.defect_probability == pytest.approx(0.9) and len(row.branch_probabilities) == 3
    assert len(row.kl_scores) == 2


def test_dead_letter_keeps_the_original_and_names_the_error():
    original = ((HEADER_FRAME_ID, b"x9"), ("camera", b"\x00\x01binary"))
    letter = DeadLetter(SOURCE, "x9", b"line-t", b"\x89PNG...", original, DeadLetterCode.TRUNCATED, "decode",
                        "PNG is truncated:\nno IEND " + "x" * 5000)
    headers = letter.headers
    assert tuple(headers[: len(original)]) == original
    added = dict(headers[len(original):])
    assert added[HEADER_ERROR_CODE] == b"truncated_image" and added[HEADER_ERROR_STAGE] == b"decode"
    assert added[HEADER_SOURCE_TOPIC] == b"aoi.frames" and added[HEADER_SOURCE_PARTITION] == b"1"
    assert added[HEADER_SOURCE_OFFSET] == b"7"
    assert b"\n" not in added[HEADER_ERROR_MESSAGE] and len(added[HEADER_ERROR_MESSAGE]) <= 1000


def _size(key, value, headers) -> int:
    return DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers)


def test_a_dead_letter_that_fits_goes_as_it_came():
    letter = DeadLetter(SOURCE, "x9", b"line-t", b"abc" * 100, ((HEADER_FRAME_ID, b"x9"),), "empty_frame", "decode",
                        "m")
    assert letter.record(10_000) == (b"line-t", b"abc" * 100, letter.headers)


@pytest.mark.parametrize("headers_bytes", [0, 3000])
def test_a_dead_letter_over_the_limit_is_cut_to_fit_and_says_so(headers_bytes):
    value = np.random.default_rng(0).bytes(20_000)
    original = ((HEADER_FRAME_ID, b"x9"), ("note", b"n" * headers_bytes))
    letter = DeadLetter(SOURCE, "x9", b"line-t", value, original, DeadLetterCode.FRAME_TOO_LARGE, "decode",
                        "too large " * 200)
    limit = _size(b"line-t", value, list(original)) + 300  # the original fitted, its dead letter would not
    key, cut, headers = letter.record(limit)
    assert _size(key, cut, headers) <= limit and key == b"line-t"
    assert 0 < len(cut) < len(value) and value.startswith(cut)
    extra = dict(headers)
    assert extra[HEADER_ORIGINAL_SIZE] == b"20000"
    assert extra[HEADER_ORIGINAL_SHA256] == hashlib.sha256(value).hexdigest().encode()
    assert extra[HEADER_ERROR_CODE] == b"frame_too_large"


def test_a_dead_letter_whose_original_headers_leave_no_room_keeps_the_workers_headers():
    original = ((HEADER_FRAME_ID, b"x9"), ("note", b"n" * 5000))
    letter = DeadLetter(SOURCE, "x9", None, b"v" * 100, original, DeadLetterCode.INTERNAL_ERROR, "ocr", "bug")
    key, cut, headers = letter.record(3000)
    assert _size(key, cut, headers) <= 3000
    assert "note" not in dict(headers) and dict(headers)[HEADER_ORIGINAL_SIZE] == b"100"


def test_a_dead_letter_of_a_record_without_key_and_value_has_an_empty_value_that_says_so():
    letter = DeadLetter(SOURCE, "p-1-7", None, None, (), DeadLetterCode.EMPTY_FRAME, "decode", "empty")
    key, value, headers = letter.record(10_000)
    assert key is None and value == b"" and dict(headers)[HEADER_ORIGINAL_NULL] == b"value"
    tombstone = DeadLetter(SOURCE, "p-1-7", b"line-t", None, (), DeadLetterCode.EMPTY_FRAME, "decode", "empty")
    assert tombstone.record(10_000)[:2] == (b"line-t", None)  # a key alone sends as it came
