"""Admission of a consumed record: header policy, profile, byte and pixel limits, colour model."""

from __future__ import annotations

import datetime as dt

import pytest

from oanet.contracts import (
    HEADER_CAPTURED_AT,
    HEADER_FRAME_ID,
    HEADER_LINE_ID,
    HEADER_PROFILE,
    STAGE_DECODE,
    STAGE_HEADERS,
    DeadLetterCode,
)
from stream.worker.errors import FrameRejected
from stream.worker.frames import FramePolicy, SourceRef, admit, frame_id_of
from tests.stream.worker.images import cmyk_jpeg, jpeg, noise, png, png_bomb

SOURCE = SourceRef("aoi.frames", 2, 41)
PNG = png(noise())


@pytest.fixture
def policy():
    def make(**overrides) -> FramePolicy:
        values = dict(max_bytes=1 << 20, max_pixels=40_000_000, color_models=frozenset({"gray", "rgb", "rgba"}),
                      profiles=frozenset({"line-t"}), default_profile="line-t", required_headers=frozenset())
        values.update(overrides)
        return FramePolicy(**values)

    return make


def rejected(policy, value=PNG, headers=(), key=b"line-t") -> FrameRejected:
    with pytest.raises(FrameRejected) as caught:
        admit(SOURCE, key, value, headers, policy)
    return caught.value


def test_a_good_frame_becomes_a_typed_frame(policy):
    headers = [(HEADER_FRAME_ID, b"cam1-000042"), (HEADER_LINE_ID, b"line-t"),
               (HEADER_CAPTURED_AT, b"2026-11-22T10:00:00.250Z"), (HEADER_PROFILE, b"line-t"), ("extra", b"kept")]
    frame = admit(SOURCE, b"key-line", PNG, headers, policy())
    assert frame.frame_id == "cam1-000042" and frame.line_id == "line-t" and frame.profile == "line-t"
    assert frame.captured_at == dt.datetime(2026, 11, 22, 10, 0, 0, 250000, tzinfo=dt.timezone.utc)
    assert (frame.image.width, frame.image.height) == (320, 240)
    assert frame.headers == tuple(headers) and frame.value == PNG and frame.source == SOURCE
    assert frame.ignored_headers == ()


def test_defaults_without_headers(policy):
    frame = admit(SOURCE, b"line-7", PNG, None, policy())
    assert frame.frame_id == "aoi.frames-2-41"  # docs/contracts.md: <topic>-<partition>-<offset>
    assert frame.line_id == "line-7"  # the key is the line id
    assert frame.captured_at is None and frame.profile == "line-t"


def test_naive_capture_time_is_utc(policy):
    frame = admit(SOURCE, None, PNG, [(HEADER_CAPTURED_AT, b"2026-11-22T10:00:00")], policy())
    assert frame.captured_at.tzinfo == dt.timezone.utc


def test_required_headers_missing_or_malformed(policy):
    strict = policy(required_headers=frozenset({HEADER_FRAME_ID, HEADER_CAPTURED_AT}))
    error = rejected(strict, headers=[(HEADER_CAPTURED_AT, b"2026-11-22T10:00:00Z")])
    assert (error.code, error.stage) == (DeadLetterCode.MISSING_HEADER, STAGE_HEADERS)
    assert "frame_id" in error.message
    for bad in (b"yesterday", b"", b"\xff\xfe", b"2026-13-45T99:00:00"):
        error = rejected(strict, headers=[(HEADER_FRAME_ID, b"f1"), (HEADER_CAPTURED_AT, bad)])
        assert error.code == DeadLetterCode.MALFORMED_HEADER, bad
    error = rejected(strict, headers=[(HEADER_FRAME_ID, b"f1"), (HEADER_FRAME_ID, b"f2"),
                                      (HEADER_CAPTURED_AT, b"2026-11-22T10:00:00Z")])
    assert error.code == DeadLetterCode.MALFORMED_HEADER and "2 times" in error.message
    error = rejected(strict, headers=[(HEADER_FRAME_ID, b"bad\nid"), (HEADER_CAPTURED_AT, b"2026-11-22T10:00:00Z")])
    assert error.code == DeadLetterCode.MALFORMED_HEADER


def test_malformed_headers_that_are_not_required_are_ignored(policy):
    frame = admit(SOURCE, None, PNG, [(HEADER_FRAME_ID, b"\xff\xfe"), (HEADER_CAPTURED_AT, b"soon")], policy())
    assert frame.frame_id == "aoi.frames-2-41" and frame.captured_at is None
    assert set(frame.ignored_headers) == {HEADER_FRAME_ID, HEADER_CAPTURED_AT}


def test_unknown_profile(policy):
    error = rejected(policy(), headers=[(HEADER_PROFILE, b"line-z")])
    assert (error.code, error.stage) == (DeadLetterCode.UNKNOWN_PROFILE, STAGE_HEADERS)
    assert "line-z" in error.message and "line-t" in error.message


def test_byte_limit_comes_before_any_parsing(policy):
    error = rejected(policy(max_bytes=len(PNG) - 1))
    assert (error.code, error.stage) == (DeadLetterCode.FRAME_TOO_LARGE, STAGE_DECODE)
    assert admit(SOURCE, None, PNG, (), policy(max_bytes=len(PNG))).value == PNG


def test_pixel_limit_is_the_decompression_bomb_guard(policy):
    error = rejected(policy(), value=png_bomb(7000, 6000))
    assert error.code == DeadLetterCode.TOO_MANY_PIXELS and "7000x6000" in error.message


def test_colour_models(policy):
    assert rejected(policy(), value=cmyk_jpeg()).code == DeadLetterCode.UNUSABLE_COLOR
    grey = png(noise(channels=1))
    assert admit(SOURCE, None, grey, (), policy()).image.color_model == "gray"
    assert rejected(policy(color_models=frozenset({"rgb"})), value=grey).code == DeadLetterCode.UNUSABLE_COLOR
    assert admit(SOURCE, None, jpeg(noise()), (), policy()).image.format == "jpeg"


def test_empty_and_null_values(policy):
    assert rejected(policy(), value=b"").code == DeadLetterCode.EMPTY_FRAME
    assert rejected(policy(), value=None).code == DeadLetterCode.EMPTY_FRAME  # a tombstone


def test_frame_id_of_is_best_effort(policy):
    assert frame_id_of(((HEADER_FRAME_ID, b"x1"),), SOURCE) == "x1"
    assert frame_id_of(((HEADER_FRAME_ID, b"\xff"),), SOURCE) == "aoi.frames-2-41"
    assert frame_id_of((), SOURCE) == "aoi.frames-2-41"
