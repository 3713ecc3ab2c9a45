"""PNG/JPEG header inspection: dimensions, colour model, truncation, without decoding."""

from __future__ import annotations

import numpy as np
import pytest

from oanet.contracts import DeadLetterCode
from stream.worker.errors import FrameRejected
from stream.worker.imageinfo import inspect_image
from tests.stream.worker.images import cmyk_jpeg, jpeg, noise, png, png_bomb, png_with_corrupt_data


@pytest.mark.parametrize(("channels", "model"), [(1, "gray"), (3, "rgb"), (4, "rgba")])
def test_png_dimensions_and_colour_model(channels, model):
    info = inspect_image(png(noise(321, 123, channels)))
    assert (info.format, info.width, info.height, info.color_model, info.bit_depth) == ("png", 321, 123, model, 8)


def test_sixteen_bit_png_reports_its_depth():
    image = np.random.default_rng(1).integers(0, 65535, (40, 50, 3), dtype=np.uint16)
    info = inspect_image(png(image))
    assert (info.width, info.height, info.bit_depth) == (50, 40, 16)


@pytest.mark.parametrize(("channels", "model"), [(1, "gray"), (3, "rgb")])
def test_jpeg_dimensions_and_colour_model(channels, model):
    info = inspect_image(jpeg(noise(333, 99, channels)))
    assert (info.format, info.width, info.height, info.color_model, info.bit_depth) == ("jpeg", 333, 99, model, 8)


def test_cmyk_jpeg_is_recognised():
    info = inspect_image(cmyk_jpeg(64, 48))
    assert (info.width, info.height, info.color_model) == (64, 48, "cmyk")


def test_bomb_dimensions_are_read_from_a_few_kilobytes():
    data = png_bomb(7000, 6000)
    assert len(data) < 200_000
    info = inspect_image(data)
    assert info.pixels == 42_000_000


def _code(data: bytes) -> str:
    with pytest.raises(FrameRejected) as caught:
        inspect_image(data)
    assert caught.value.stage == "decode" and caught.value.message
    return caught.value.code


@pytest.mark.parametrize("cut", [0.2, 0.5, 0.9, 0.999])
def test_truncated_png_and_jpeg(cut):
    for data in (png(noise()), jpeg(noise())):
        assert _code(data[: int(len(data) * cut)]) == DeadLetterCode.TRUNCATED


def test_a_cut_inside_the_header_is_truncation_too():
    data = png(noise())
    assert _code(data[:20]) == DeadLetterCode.TRUNCATED
    assert _code(jpeg(noise())[:10]) == DeadLetterCode.TRUNCATED


def test_jpeg_with_trailing_bytes_after_end_of_image_is_complete():
    data = jpeg(noise()) + b"camera trailer"
    assert inspect_image(data).width == 320


def test_empty_and_foreign_bytes():
    assert _code(b"") == DeadLetterCode.EMPTY_FRAME
    assert _code(b"GIF89a" + bytes(100)) == DeadLetterCode.UNDECODABLE
    assert _code(np.random.default_rng(3).bytes(5000)) == DeadLetterCode.UNDECODABLE


def test_corrupt_png_header_is_undecodable():
    data = bytearray(png(noise()))
    data[12:16] = b"XXXX"  # the first chunk is no longer IHDR
    assert _code(bytes(data)) == DeadLetterCode.UNDECODABLE
    data = bytearray(png(noise()))
    data[25] = 7  # colour type 7 does not exist
    assert _code(bytes(data)) == DeadLetterCode.UNDECODABLE


def test_well_formed_png_with_bad_data_passes_the_header_check():
    # The decoder finds this one (test_ocr_stage): the header check must not reject it.
    assert inspect_image(png_with_corrupt_data()).format == "png"
