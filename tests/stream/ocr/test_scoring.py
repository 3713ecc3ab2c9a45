"""Score: what `oanet ocr` reports per engine and per field (pure, no models)."""

from __future__ import annotations

from oanet.profile import LineProfile
from stream.ocr.records import ENGINE_PADDLE, ENGINE_STUDENT, FieldReading, ParameterRecord
from stream.ocr.scoring import Score


def _record(profile: LineProfile, truth: dict, teacher_read: set[str]) -> ParameterRecord:
    readings = tuple(
        FieldReading(spec.name, truth[spec.name], "", 0.99,
                     engine=ENGINE_PADDLE if spec.name in teacher_read else ENGINE_STUDENT)
        for spec in profile.fields
    )
    return ParameterRecord(readings, frame_id="f", mode="template")


def test_fallback_is_counted_per_group_and_per_field(line_profile: LineProfile) -> None:
    truth = {spec.name: ("AB1234-07" if spec.kind == "text" else 1.5) for spec in line_profile.fields}
    lot = next(spec.name for spec in line_profile.fields if spec.kind == "text")
    score = Score(line_profile)
    # Four clean frames: the lot id left to PaddleOCR on the first two, "temp" on one.
    for teacher_read in ({lot}, {lot, "temp"}, set(), set()):
        score.add(_record(line_profile, truth, teacher_read), truth, nuisance=False)
    score.add(_record(line_profile, truth, {"speed"}), truth, nuisance=True)
    fields = len(line_profile.fields)
    assert score.fallback_rate("clean") == 3 / (4 * fields)
    assert score.fallback_rate("nuisance") == 1 / fields
    by_field = score.fallback_by_field("clean")
    assert by_field[lot] == 0.5 and by_field["temp"] == 0.25 and by_field["speed"] == 0.0
    assert set(by_field) == set(line_profile.field_names)
    assert score.fallback_by_field("nuisance")["speed"] == 1.0
