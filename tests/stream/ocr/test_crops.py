"""Image side of the OCR stage without models: decoding, scaling, trimming, row grouping."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from oanet.profile import LineProfile
from stream.ocr import crops
from stream.ocr.errors import FrameMismatchError, ImageDecodeError

from tests.stream.frames import encode


@pytest.mark.parametrize("data", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40])
def test_undecodable_bytes_raise_a_specific_error(data: bytes) -> None:
    with pytest.raises(ImageDecodeError, match="PNG/JPEG|empty"):
        crops.decode_image(data)


def test_decode_accepts_png_jpeg_gray_and_alpha() -> None:
    image = np.full((20, 30, 3), 200, np.uint8)
    assert crops.decode_image(encode(image)).shape == (20, 30, 3)
    assert crops.decode_image(encode(image, ".jpg")).shape == (20, 30, 3)
    assert crops.decode_image(np.full((20, 30), 9, np.uint8)).shape == (20, 30, 3)
    assert crops.decode_image(np.full((20, 30, 4), 9, np.uint8)).shape == (20, 30, 3)
    with pytest.raises(ImageDecodeError):
        crops.decode_image(np.zeros((0, 5, 3), np.uint8))


def test_frames_of_another_size_are_scaled(line_profile: LineProfile) -> None:
    small = np.zeros((384, 512, 3), np.uint8)
    assert crops.fit_to_profile(small, line_profile).shape == (768, 1024, 3)


def test_frames_of_another_layout_are_refused(line_profile: LineProfile) -> None:
    with pytest.raises(FrameMismatchError, match="aspect ratio"):
        crops.fit_to_profile(np.zeros((1024, 768, 3), np.uint8), line_profile)


def _line_image(text: str, height: int = 48, width: int = 496, dark: bool = False) -> np.ndarray:
    paper, ink = (20, 230) if dark else (230, 20)
    image = np.full((height, width, 3), paper, np.uint8)
    cv2.putText(image, text, (10, 33), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (ink,) * 3, 2, cv2.LINE_AA)
    return image


@pytest.mark.parametrize("dark", [False, True])
def test_trim_keeps_the_text_with_a_margin(dark: bool) -> None:
    image = _line_image("TEMP: 172.4 C", dark=dark)
    x, y, w, h = crops.ink_box(image)
    assert 8 <= x <= 12 and 10 <= y <= 18 and 150 <= w <= 230 and 14 <= h <= 24
    trimmed = crops.trim_to_ink(image)
    assert trimmed.shape[0] > h and trimmed.shape[1] < image.shape[1]


def test_trim_ignores_a_thin_streak_to_the_slot_edge() -> None:
    image = _line_image("HUMIDITY: 44.6 %RH")
    image[:, 70] = 20  # one dark column from top to bottom (a blur/JPEG artefact)
    _, y, _, h = crops.ink_box(image)
    assert y > 5 and h < 30


def test_text_filling_the_slot_gets_padded() -> None:
    image = np.full((24, 200, 3), 230, np.uint8)
    cv2.putText(image, "55.4", (4, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (20, 20, 20), 2, cv2.LINE_AA)
    assert crops.trim_to_ink(image).shape[0] > 24


@pytest.mark.parametrize("value", [0, 255, 128])
def test_blank_slots_have_no_ink(value: int) -> None:
    assert crops.trim_to_ink(np.full((48, 496, 3), value, np.uint8)) is None


def test_sensor_noise_is_not_ink() -> None:
    rng = np.random.default_rng(0)
    noisy = np.clip(128 + rng.normal(0, 4, (48, 496, 3)), 0, 255).astype(np.uint8)
    assert crops.trim_to_ink(noisy) is None


def test_group_rows_joins_boxes_of_one_line() -> None:
    boxes = [
        crops.TextBox("172.4 C", 0.9, 120, 10, 200, 30),
        crops.TextBox("TEMP:", 0.9, 10, 12, 80, 31),
        crops.TextBox("SPEED: 50.1 mm/s", 0.9, 10, 70, 220, 92),
    ]
    rows = crops.group_rows(boxes)
    assert [[b.text for b in row] for row in rows] == [["TEMP:", "172.4 C"], ["SPEED: 50.1 mm/s"]]


def test_union_roi_is_clipped_to_the_frame() -> None:
    assert crops.union_roi([(10, 10, 20, 20), (100, 50, 10, 10)], 16, (105, 200)) == (0, 0, 105, 76)


def test_noise_raises_the_ink_threshold() -> None:
    """Rows alternating 100 and 110: every column's background is 105 (an even count's median is
    the mean of its middle two), every pixel 5 from it, so ink must be 6 x 5 = 30 levels off."""
    gray = np.tile(np.array([[100], [110]], np.uint8), (24, 60))
    gray[1, 10], gray[3, 20] = 136, 134  # 31 and 29 levels off
    assert np.flatnonzero(crops.ink_mask(gray)).tolist() == [1 * 60 + 10]


@pytest.mark.parametrize("height", [1, 2, 47, 48])
def test_column_backgrounds_are_the_medians(height: int) -> None:
    gray = np.random.default_rng(height).integers(0, 256, (height, 33), np.uint8)
    assert np.array_equal(crops._column_medians(gray), np.median(gray, axis=0))


def test_a_speck_does_not_reach_the_box() -> None:
    image = _line_image("TEMP: 172.4 C")
    image[40:42, 480] = 20  # two pixels of noise, far right
    assert crops.ink_box(image) == crops.ink_box(_line_image("TEMP: 172.4 C"))


@pytest.mark.parametrize("channels", [0, 1, 3])
def test_channel_medians_are_numpys_medians(channels: int) -> None:
    rng = np.random.default_rng(channels)
    for _ in range(200):
        height, width = (int(v) for v in rng.integers(1, 40, 2))
        low = int(rng.integers(0, 255))
        shape = (height, width) if channels == 0 else (height, width, channels)
        image = rng.integers(low, int(rng.integers(low + 1, 257)), shape).astype(np.uint8)
        expected = [int(v) for v in np.median(image.reshape(-1, channels or 1), axis=0)]
        assert crops.channel_medians(image) == expected
