"""The memo of text-field reads PaddleOCR confirmed (`stream.ocr.confirm`): pure, no models."""

from __future__ import annotations

import pytest

from oanet.profile import FieldSpec
from stream.ocr.confirm import ConfirmedValues, TextRead, confirmed_reading, text_read
from stream.ocr.parse import edit_distance
from stream.ocr.student import StudentRead, target_text

LOT = FieldSpec(name="lot_id", label="LOT", kind="text", pattern=r"^[A-Z]{2}[0-9]{4}-[0-9]{2}$")


def _value(text: str) -> TextRead:
    return TextRead(text, True)


def _fingerprint(text: str) -> TextRead:
    return TextRead(text, False)


def test_a_value_is_trusted_once_paddleocr_read_the_same() -> None:
    memo = ConfirmedValues(8)
    assert memo.value_for("lot_id", _value("AB1234-56")) is None
    memo.record("lot_id", _value("AB1234-56"), "AB1234-56")
    assert memo.value_for("lot_id", _value("AB1234-56")) == "AB1234-56"
    # Per field: the same text in another field is not confirmed.
    assert memo.value_for("batch", _value("AB1234-56")) is None


def test_a_disputed_value_is_never_trusted_again() -> None:
    memo = ConfirmedValues(8)
    memo.record("lot_id", _value("XR0359-44"), "XR0359-44")
    # The student read a "VR" lot as "XR": whatever it reads as "XR0359-44" is suspect now.
    memo.record("lot_id", _value("XR0359-44"), "VR0359-44")
    assert memo.value_for("lot_id", _value("XR0359-44")) is None
    memo.record("lot_id", _value("XR0359-44"), "XR0359-44")
    assert memo.value_for("lot_id", _value("XR0359-44")) is None
    assert memo.counts() == {"lot_id": (0, 1)}


def test_a_well_formed_read_never_stands_for_another_value() -> None:
    # A read that spells a valid id is that id or nothing: mapped to the lot PaddleOCR read, a
    # real "XR0359-44" lot would get the other lot's value.
    memo = ConfirmedValues(8)
    memo.record("lot_id", _value("XR0359-44"), "VR0359-44")
    assert memo.value_for("lot_id", _value("XR0359-44")) is None
    assert memo.counts() == {"lot_id": (0, 1)}


def test_a_read_that_can_be_no_value_stands_for_what_paddleocr_read_on_its_line() -> None:
    memo = ConfirmedValues(8)
    dropped = _fingerprint("M1038-76")  # "LOTM1038-76": the student drops the T of "TM1038-76"
    memo.record("lot_id", dropped, "TM1038-76")
    assert memo.value_for("lot_id", dropped) == "TM1038-76"
    memo.record("lot_id", dropped, "TM1038-76")
    assert memo.value_for("lot_id", dropped) == "TM1038-76"
    # The same malformed text as a value key is another key.
    assert memo.value_for("lot_id", _value("M1038-76")) is None
    # Two lots the student reads alike ("SM1038-76" with its S dropped too): neither again.
    memo.record("lot_id", dropped, "SM1038-76")
    assert memo.value_for("lot_id", dropped) is None
    memo.record("lot_id", dropped, "TM1038-76")
    assert memo.value_for("lot_id", dropped) is None
    assert memo.counts() == {"lot_id": (0, 1)}


def test_a_line_paddleocr_could_not_parse_says_nothing() -> None:
    memo = ConfirmedValues(8)
    memo.record("lot_id", _value("AB1234-56"), None)
    assert memo.value_for("lot_id", _value("AB1234-56")) is None and memo.counts() == {}
    memo.record("lot_id", _value("AB1234-56"), "AB1234-56")
    memo.record("lot_id", _value("AB1234-56"), None)
    assert memo.value_for("lot_id", _value("AB1234-56")) == "AB1234-56"


def test_the_newest_reads_are_kept() -> None:
    memo = ConfirmedValues(2)
    for value in ("AA0001-01", "AA0002-01"):
        memo.record("lot_id", _value(value), value)
    assert memo.value_for("lot_id", _value("AA0001-01"))  # used: now the newest
    memo.record("lot_id", _value("AA0003-01"), "AA0003-01")
    assert memo.value_for("lot_id", _value("AA0001-01")) and memo.value_for("lot_id", _value("AA0003-01"))
    assert memo.value_for("lot_id", _value("AA0002-01")) is None
    assert memo.counts() == {"lot_id": (2, 0)}


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ConfirmedValues(0)


def test_the_key_of_a_read() -> None:
    right = StudentRead.uniform(target_text(LOT, "TM1038-76"), 0.95)
    assert text_read(right, LOT, (), None, 0.9) == (_value("TM1038-76"), 0.95)
    assert text_read(right, LOT, (), None, 0.96) is None  # below the bar
    # A letter dropped: no value, so what follows the label is the key; the label's own
    # confidence does not count.
    dropped = StudentRead("LOTM1038-76", (0.3, 0.3, 0.3) + (0.95,) * 8, 0.95)
    assert text_read(dropped, LOT, (), None, 0.9) == (_fingerprint("M1038-76"), 0.95)
    # The label's first letter half seen (the left-edge defect): its unsure step does not count.
    edge = StudentRead("OTM1038-76", (0.56,) + (0.95,) * 9, 0.95)
    assert text_read(edge, LOT, (), None, 0.9) == (_fingerprint("M1038-76"), 0.95)
    assert text_read(StudentRead("OTM1038-76", (0.95, 0.95, 0.56) + (0.95,) * 7, 0.95), LOT, (), None, 0.9) is None
    # The label not read exactly: the whole line is the key, with the whole line's confidence.
    garbled = StudentRead("L0TM1038-76", (0.95,) * 11, 0.95)
    assert text_read(garbled, LOT, (), None, 0.9) == (_fingerprint("L0TM1038-76"), 0.95)
    assert text_read(StudentRead("0TM1038-76", (0.3,) + (0.95,) * 9, 0.95), LOT, (), None, 0.9) is None
    assert text_read(StudentRead("LOT", (0.99,) * 3, 0.99), LOT, (), None, 0.9) is None  # nothing after it


def test_a_key_doubted_only_in_whether_one_glyph_is_there() -> None:
    """Unseen lots' first letters: the student is sure which letter it sees, not that it sees
    one ("X" at 0.59, blank 0.39, every other letter 0.01). Such a read is a key; two such
    doubts, or a letter that may be another, are not."""
    sure = (0.99,) * 8
    one_doubt = StudentRead("LOTDX2675-77", (0.99,) * 4 + (0.59,) + sure[:7], 0.99, None, (0.99,) * 12)
    assert text_read(one_doubt, LOT, (), None, 0.78) == (_value("DX2675-77"), 0.59)
    dropped = StudentRead("LOTD2675-77", (0.99,) * 4 + (0.51,) + sure[:6], 0.99, None, (0.99,) * 11)
    assert text_read(dropped, LOT, (), None, 0.78) == (_fingerprint("D2675-77"), 0.51)
    # The doubt in the label does not count, so a doubt in the value's first letter is the one.
    assert text_read(StudentRead("LOTDX2675-77", (0.5, 0.99, 0.99, 0.99, 0.59) + sure[:7], 0.99, None,
                                 (0.99,) * 12), LOT, (), None, 0.78) == (_value("DX2675-77"), 0.59)
    two_doubts = StudentRead("LOTDX2675-77", (0.99,) * 4 + (0.59, 0.6) + sure[:6], 0.99, None, (0.99,) * 12)
    assert text_read(two_doubts, LOT, (), None, 0.78) is None
    a_letter_left_after = StudentRead("LOTDX2675-77", (0.99,) * 4 + (0.59,) + sure[:7], 0.6, None, (0.99,) * 12)
    assert text_read(a_letter_left_after, LOT, (), None, 0.78) is None
    maybe_another = StudentRead("LOTDX2675-77", (0.99,) * 4 + (0.59,) + sure[:7], 0.99, None,
                                (0.99,) * 4 + (0.6,) + (0.99,) * 7)  # "X" or "K"
    assert text_read(maybe_another, LOT, (), None, 0.78) is None
    # Not measured (a read built without its time steps): the bar alone, as before.
    assert text_read(StudentRead("LOTDX2675-77", (0.99,) * 4 + (0.59,) + sure[:7], 0.99), LOT, (), None, 0.78) is None


def test_the_reading_a_confirmed_read_stands_for() -> None:
    read = StudentRead("LOTM1038-76", (0.95,) * 11, 0.95)
    reading = confirmed_reading(LOT, "TM1038-76", read, 0.95)
    assert reading is not None and not reading.missing
    assert (reading.value, reading.confidence, reading.raw_text) == ("TM1038-76", 0.95, "LOTM1038-76")
    assert confirmed_reading(LOT, "not an id", read, 0.95) is None


def test_an_audit_turn_sends_a_confirmed_read_to_paddleocr_again() -> None:
    memo = ConfirmedValues(8, audit_every=3)
    dropped = _fingerprint("M1038-76")
    memo.record("lot_id", dropped, "TM1038-76")
    uses = [memo.value_for("lot_id", dropped) for _ in range(6)]
    assert uses == ["TM1038-76", "TM1038-76", None, "TM1038-76", "TM1038-76", None]
    # A lot the student reads alike: the student's read passes it off as the first lot until
    # the next audit, where PaddleOCR contradicts it; from then on it is PaddleOCR's.
    assert memo.value_for("lot_id", dropped) == "TM1038-76"  # the mix-up the audit bounds
    memo.record("lot_id", dropped, "SM1038-76")
    assert memo.value_for("lot_id", dropped) is None
    with pytest.raises(ValueError, match="at least 2"):
        ConfirmedValues(8, audit_every=1)


def test_a_fingerprint_is_confirmed_only_within_one_edit_of_what_paddleocr_read() -> None:
    # Far from PaddleOCR's value, the student's read is no second opinion on it: a PaddleOCR
    # misread would otherwise be repeated for the whole lot.
    memo = ConfirmedValues(8)
    garbled = _fingerprint("F.9773-04")  # "ZL9773-04" with two glyphs misread
    memo.record("lot_id", garbled, "ZL9773-04")
    assert memo.value_for("lot_id", garbled) is None and memo.counts() == {}
    for read in ("R0359-44", "XVR0359-44", "YR0359-44"):  # dropped, added, changed
        memo.record("lot_id", _fingerprint(read), "VR0359-44")
        assert memo.value_for("lot_id", _fingerprint(read)) == "VR0359-44"


@pytest.mark.parametrize(
    ("a", "b", "near"),
    [("TM1038-76", "TM1038-76", True), ("M1038-76", "TM1038-76", True), ("TM1038-76", "TM103-76", True),
     ("TM1O38-76", "TM1038-76", True), ("TM1038-7", "TM1038-76", True), ("", "A", True),
     ("M1038-7", "TM1038-76", False), ("MT1038-76", "TM1038-76", False), ("AB", "ABCD", False)],
)
def test_one_edit_is_the_bound_a_fingerprint_meets(a: str, b: str, near: bool) -> None:
    assert (edit_distance(a, b) <= 1) is near and (edit_distance(b, a) <= 1) is near
