"""The field parser over a table of real OCR confusions (PLATFORM.md and runs on synthetic frames)."""

from __future__ import annotations

import pytest

from oanet.profile import FieldSpec, LineProfile
from stream.ocr.parse import match_label, normalize, parse_field, parse_lines, strip_unit, values_equal
from stream.ocr.records import (
    REASON_AMBIGUOUS,
    REASON_DECIMALS,
    REASON_GARBLED,
    REASON_IMPLAUSIBLE,
    REASON_NO_LABEL,
    REASON_NO_TEXT,
    REASON_PATTERN,
)

# (raw recognizer text, field, expected value)
READS = [
    ("TEMP: 172.4 C", "temp", 172.4),
    ("TEMP187.2C", "temp", 187.2),  # dropped spaces (PLATFORM.md)
    ("temp: 172.4 c", "temp", 172.4),  # case
    ("TEMP: 1O2.4 C", "temp", 102.4),  # O for 0
    ("TEMP: 1o2.4 C", "temp", 102.4),  # o for 0
    ("TEMP: l72.4 C", "temp", 172.4),  # l for 1
    ("TEMP: I72.4 C", "temp", 172.4),  # I for 1
    ("TEMP: 1 72.4 C", "temp", 172.4),  # stray space inside the value
    ("TEMP: 172,4 C", "temp", 172.4),  # decimal comma
    ("TEMP：172.4℃", "temp", 172.4),  # full-width colon, degree-Celsius sign
    ("TEMPi 172.4 C", "temp", 172.4),  # ':' read as 'i'
    ("TEMP. 172.4 C", "temp", 172.4),  # ':' read as '.'
    ("TEMP: 172.4", "temp", 172.4),  # unit lost
    ("TEMP: 172.4 C.", "temp", 172.4),  # trailing junk
    ("E×POSURE 10.05 ms", "exposure", 10.05),  # × for X (PLATFORM.md)
    ("EXPOSURE: 10.05 ms", "exposure", 10.05),
    ("EXPOSURE:10.O5ms", "exposure", 10.05),
    ("EXPOSURE: 1S.05 ms", "exposure", 15.05),  # S for 5
    ("EXPOSURE: 1B.05 ms", "exposure", 18.05),  # B for 8
    ("EXPOSURE=10.05 m5", "exposure", 10.05),  # unit misread loosely matched
    ("BOND FORCE: 30.1 gf", "bond_force", 30.1),
    ("BONDFORCE: 30.1 gf", "bond_force", 30.1),  # dropped space inside the label
    ("8OND FORCE: 30.1 gf", "bond_force", 30.1),  # digit inside the label
    ("BOND F0RCE 30.1gf", "bond_force", 30.1),
    ("Z OFFSET = -3.25 um", "z_offset", -3.25),
    ("Z0FFSET = 一3.25 um", "z_offset", -3.25),  # '一' for minus, digit in label (PLATFORM.md)
    ("ZOFFSET=—3.25um", "z_offset", -3.25),  # em dash
    ("Z OFFSET = –3.25 μm", "z_offset", -3.25),  # en dash, micro sign
    ("Z OFFSET = − 3.25 um", "z_offset", -3.25),  # minus sign, stray space
    ("Z OFFSET = +3.25 um", "z_offset", 3.25),  # explicit plus
    ("2 OFFSET  3.25 um", "z_offset", 3.25),  # 2 for Z in the label
    ("TILT: -0.125 deg", "tilt", -0.125),
    ("TIlT:-0.125deg", "tilt", -0.125),
    ("TILT -0.125 de9", "tilt", -0.125),
    ("HUMIDITY: 45.2 %RH", "humidity", 45.2),
    ("HUMlDITY 45.2%RH", "humidity", 45.2),
    ("HUMIDITY:44.6%RH", "humidity", 44.6),
    ("SPEED: 5O.1 mm/s", "speed", 50.1),
    ("SPEED 50.1mm/s", "speed", 50.1),
    ("SPEED: 50.1 mmls", "speed", 50.1),
    ("PRESSURE: 101.3 kPa", "pressure", 101.3),
    ("PRESSURE: 101.3 KPa", "pressure", 101.3),
    ("US POWER: 100 mW", "us_power", 100.0),
    ("USP0WER100mW", "us_power", 100.0),
    ("LOT: AB1234-07", "lot_id", "AB1234-07"),
    ("LOT:AB1234-07", "lot_id", "AB1234-07"),
    ("L0T:A81234一07", "lot_id", "AB1234-07"),  # 8 for B where the pattern needs a letter
    ("LOT: AB12O4-07", "lot_id", "AB1204-07"),  # O for 0 where the pattern needs a digit
    ("LOT: ab1234-07", "lot_id", "AB1234-07"),
    ("LOT: AB 1234-07", "lot_id", "AB1234-07"),
]


@pytest.mark.parametrize(("raw", "name", "expected"), READS)
def test_confusions_are_undone(line_profile: LineProfile, raw: str, name: str, expected: object) -> None:
    reading = parse_field(raw, line_profile.field(name), confidence=0.9)
    assert not reading.missing, reading
    assert reading.value == pytest.approx(expected) if isinstance(expected, float) else reading.value == expected
    assert reading.raw_text == raw
    assert reading.confidence == 0.9


# (raw, field, reason): a garbled or implausible read is missing, never a guessed value.
MISSING = [
    ("", "temp", REASON_NO_TEXT),
    ("   ", "temp", REASON_NO_TEXT),
    ("TEMP:", "temp", REASON_NO_TEXT),
    ("TEMP: 17#.4 C", "temp", REASON_GARBLED),
    ("TEMP: 172.4.1 C", "temp", REASON_GARBLED),
    ("TEMP: --172.4 C", "temp", REASON_GARBLED),
    ("TEMP: 172.45 C", "temp", REASON_DECIMALS),  # a digit too many: not silently rounded
    ("TEMP: 1724 C", "temp", REASON_DECIMALS),  # lost decimal point
    ("TEMP: 999.9 C", "temp", REASON_IMPLAUSIBLE),
    ("HUMIDITY: 145.2 %RH", "humidity", REASON_IMPLAUSIBLE),
    ("PRESSURE: 101.3 kPa", "temp", REASON_NO_LABEL),  # another field's line
    ("AOI LINE STATUS", "temp", REASON_NO_LABEL),
    ("LOT: AB12345-07", "lot_id", REASON_PATTERN),
    ("LOT: ###", "lot_id", REASON_PATTERN),
    ("TILT: 0.12 deg", "tilt", REASON_DECIMALS),
]


@pytest.mark.parametrize(("raw", "name", "reason"), MISSING)
def test_bad_reads_are_missing_with_reason(line_profile: LineProfile, raw: str, name: str, reason: str) -> None:
    reading = parse_field(raw, line_profile.field(name))
    assert reading.missing and reading.value is None
    assert reading.reason == reason
    assert reading.raw_text == raw


def test_out_of_spec_but_clean_is_a_value(line_profile: LineProfile) -> None:
    spec = line_profile.field("temp")
    reading = parse_field("TEMP: 195.0 C", spec)
    assert reading.value == 195.0 and not reading.missing
    assert spec.in_spec(reading.value) is False


def test_ambiguous_pattern_correction_is_missing() -> None:
    spec = FieldSpec(name="code", label="CODE", kind="text", pattern="^[A-Z0-9]{2}$")
    # "0O" matches as printed, so it is kept as is (minimal change); "#O" matches nothing.
    assert parse_field("CODE: 0O", spec).value == "0O"
    spec = FieldSpec(name="code", label="CODE", kind="text", pattern="^(?:AO|A0)X$")
    assert parse_field("CODE: AOY", spec).reason == REASON_PATTERN
    spec = FieldSpec(name="code", label="CODE", kind="text", pattern="^(?:A0|AO)$")
    assert parse_field("CODE: A0", spec).value == "A0"
    spec = FieldSpec(name="code", label="CODE", kind="text", pattern="^(?:B0|8O)$")
    assert parse_field("CODE: 80", spec).reason == REASON_AMBIGUOUS


def test_numbers_printed_without_decimals_are_ints(line_profile: LineProfile) -> None:
    value = parse_field("US POWER: 102 mW", line_profile.field("us_power")).value
    assert value == 102 and isinstance(value, int)


def test_number_without_declared_decimals_accepts_any() -> None:
    spec = FieldSpec(name="gap", label="GAP", unit="mm")
    assert parse_field("GAP: 1.5 mm", spec).value == 1.5
    assert parse_field("GAP: 2 mm", spec).value == 2.0


def test_text_field_without_pattern_keeps_the_text() -> None:
    spec = FieldSpec(name="recipe", label="RECIPE", kind="text")
    assert parse_field("RECIPE: Bond  Std v2", spec).value == "Bond Std v2"


def test_short_labels_must_match_exactly_after_folding(line_profile: LineProfile) -> None:
    assert match_label("LOT: AB1234-07", "LOT") is not None
    assert match_label("L0T: AB1234-07", "LOT") is not None
    assert match_label("LIT: AB1234-07", "LOT") is None


def test_longer_labels_tolerate_one_misread() -> None:
    found = match_label("PRESSIRE: 101.3 kPa", "PRESSURE")
    assert found is not None and found.distance == 1 and found.rest.strip().startswith(":")


def test_strip_unit_never_eats_digits() -> None:
    assert strip_unit("10.05", "ms") == "10.05"
    assert strip_unit("10.05ms", "ms") == "10.05"
    assert strip_unit("172.4 °C", "C") == "172.4"
    assert strip_unit("45.2 % RH", "%RH") == "45.2"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("N2 FL0W: 4.6 1/min", 4.6), ("N2FLOW:5.21/min", 5.2), ("N2 FLOW = 5.3 l/min", 5.3), ("N2 FLOW 5.3", 5.3)],
)
def test_unit_starting_with_a_digit_look_alike(raw: str, expected: float) -> None:
    spec = FieldSpec(name="flow", label="N2 FLOW", unit="l/min", decimals=1)
    assert parse_field(raw, spec).value == expected


def test_normalize_maps_recognizer_characters() -> None:
    assert normalize("一3.25") == "-3.25"
    assert normalize("E×POSURE") == "EXPOSURE"
    assert normalize("ＴＥＭＰ：１") == "TEMP:1"


def test_full_mode_lines_are_matched_to_fields_by_label(line_profile: LineProfile) -> None:
    lines = [
        ("AOI LINE STATUS", 0.99),
        ("Z OFFSET = -3.25 um", 0.9),
        ("TEMP: 17#.4 C", 0.5),  # garbled first...
        ("TEMP: 172.4 C", 0.9),  # ...a clean read of the same field wins
        ("US POWER 100 mW", 0.9),
        ("SPEED: 50.1 mm/s", 0.8),
    ]
    found = parse_lines(lines, line_profile)
    assert found["z_offset"].value == -3.25
    assert found["temp"].value == 172.4
    assert found["us_power"].value == 100.0
    assert found["speed"].value == 50.1
    assert "exposure" not in found  # not printed: the caller decides the reason
    only = parse_lines(lines, line_profile, only=["speed"])
    assert set(only) == {"speed"}


def test_values_equal_compares_as_printed(line_profile: LineProfile) -> None:
    temp, lot, power = line_profile.field("temp"), line_profile.field("lot_id"), line_profile.field("us_power")
    assert values_equal(temp, 172.4, 172.4000001)
    assert not values_equal(temp, 172.4, 172.5)
    assert values_equal(power, 100.0, 100)
    assert values_equal(lot, "AB1234-07", "AB1234-07")
    assert not values_equal(lot, None, "AB1234-07")
    assert values_equal(lot, None, None)
