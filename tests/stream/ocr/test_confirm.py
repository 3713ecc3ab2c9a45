"""The memo of text-field values PaddleOCR confirmed (`stream.ocr.confirm`): pure, no models."""

from __future__ import annotations

import pytest

from stream.ocr.confirm import ConfirmedValues


def test_a_value_is_trusted_once_paddleocr_read_the_same() -> None:
    memo = ConfirmedValues(8)
    assert not memo.trusts("lot_id", "AB1234-56")
    memo.record("lot_id", "AB1234-56", "AB1234-56")
    assert memo.trusts("lot_id", "AB1234-56")
    # Per field: the same text in another field is not confirmed.
    assert not memo.trusts("batch", "AB1234-56")


def test_a_disputed_value_is_never_trusted_again() -> None:
    memo = ConfirmedValues(8)
    memo.record("lot_id", "XR0359-44", "XR0359-44")
    # The student read a "VR" lot as "XR": whatever it reads as "XR0359-44" is suspect now.
    memo.record("lot_id", "XR0359-44", "VR0359-44")
    assert not memo.trusts("lot_id", "XR0359-44")
    memo.record("lot_id", "XR0359-44", "XR0359-44")
    assert not memo.trusts("lot_id", "XR0359-44")
    assert memo.counts() == {"lot_id": (0, 1)}


def test_a_line_paddleocr_could_not_parse_says_nothing() -> None:
    memo = ConfirmedValues(8)
    memo.record("lot_id", "AB1234-56", None)
    assert not memo.trusts("lot_id", "AB1234-56") and memo.counts() == {}
    memo.record("lot_id", "AB1234-56", "AB1234-56")
    memo.record("lot_id", "AB1234-56", None)
    assert memo.trusts("lot_id", "AB1234-56")


def test_the_newest_values_are_kept() -> None:
    memo = ConfirmedValues(2)
    for value in ("AA0001-01", "AA0002-01"):
        memo.record("lot_id", value, value)
    assert memo.trusts("lot_id", "AA0001-01")  # used: now the newest
    memo.record("lot_id", "AA0003-01", "AA0003-01")
    assert memo.trusts("lot_id", "AA0001-01") and memo.trusts("lot_id", "AA0003-01")
    assert not memo.trusts("lot_id", "AA0002-01")
    assert memo.counts() == {"lot_id": (2, 0)}


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ConfirmedValues(0)
