"""ParameterRecord / FieldReading: profile order, values, missing mask, JSON round trip."""

from __future__ import annotations

import json

import pytest

from oanet.profile import LineProfile
from stream.ocr.records import REASON_GARBLED, REASON_NO_TEXT, FieldReading, ParameterRecord


def _record(profile: LineProfile) -> ParameterRecord:
    readings = []
    for spec in profile.fields:
        if spec.name == "temp":
            readings.append(FieldReading.absent("temp", REASON_GARBLED, "TEMP: 17#.4 C", 0.41))
        elif spec.kind == "text":
            readings.append(FieldReading(spec.name, "AB1234-07", "LOT: AB1234-07", 0.98))
        else:
            readings.append(FieldReading(spec.name, 1.5, f"{spec.label}: 1.5", 0.95))
    return ParameterRecord(tuple(readings), frame_id="f1", mode="template", timings_ms={"ocr": 80.0})


def test_values_and_mask_follow_profile_order(line_profile: LineProfile) -> None:
    record = _record(line_profile)
    assert record.names == line_profile.field_names
    assert record.values[line_profile.field_names.index("temp")] is None
    assert record.missing_mask == [name == "temp" for name in line_profile.field_names]
    assert record.missing == ["temp"]
    assert record.params["lot_id"] == "AB1234-07"


def test_json_has_params_missing_and_readings(line_profile: LineProfile) -> None:
    data = json.loads(json.dumps(_record(line_profile).to_json()))
    assert data["id"] == "f1"
    assert list(data["params"]) == line_profile.field_names
    assert data["params"]["temp"] is None
    assert data["missing"] == ["temp"]
    assert data["readings"]["temp"] == {"value": None, "raw": "TEMP: 17#.4 C", "confidence": 0.41, "reason": REASON_GARBLED}


def test_json_round_trip(line_profile: LineProfile) -> None:
    record = _record(line_profile)
    again = ParameterRecord.from_json(json.loads(json.dumps(record.to_json())), line_profile)
    assert again == record


def test_from_json_rejects_another_profile(line_profile: LineProfile) -> None:
    data = _record(line_profile).to_json()
    del data["params"]["temp"]
    with pytest.raises(ValueError, match="do not match profile"):
        ParameterRecord.from_json(data, line_profile)


def test_all_missing(line_profile: LineProfile) -> None:
    record = ParameterRecord.all_missing(line_profile, REASON_NO_TEXT, "f9")
    assert record.values == [None] * len(line_profile.fields)
    assert all(record.missing_mask)
    assert {r.reason for r in record.readings} == {REASON_NO_TEXT}


def test_the_engine_of_each_reading_round_trips_and_old_records_still_load(line_profile: LineProfile) -> None:
    from stream.ocr.records import ENGINE_PADDLE, ENGINE_STUDENT

    record = _record(line_profile)
    by = tuple(r.by(ENGINE_STUDENT if i % 2 else ENGINE_PADDLE) for i, r in enumerate(record.readings))
    record = ParameterRecord(by, frame_id="f1", mode="template")
    data = json.loads(json.dumps(record.to_json()))
    assert ParameterRecord.from_json(data, line_profile) == record
    assert record.engines[line_profile.field_names[1]] == ENGINE_STUDENT
    # A record written before engines were recorded has no "engine" key: it loads with "".
    for reading in data["readings"].values():
        del reading["engine"]
    old = ParameterRecord.from_json(data, line_profile)
    assert set(old.engines.values()) == {""} and old.values == record.values
