"""The CPU stage in this process: decode with header cross-checks, OCR, object ROI."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from oanet.contracts import DeadLetterCode
from stream.worker import ocr_stage
from stream.worker.errors import FrameRejected
from stream.worker.imageinfo import inspect_image
from tests.stream.worker.images import png, png_with_corrupt_data
from oanet.preprocess import crop_object_roi


@pytest.fixture(scope="module")
def stage(line_t_profile, tmp_path_factory):
    from stream.ocr.settings import OcrSettings

    config = ocr_stage.StageConfig(line_t_profile, OcrSettings(cache_dir=tmp_path_factory.mktemp("ocr")), 32)
    executor = ocr_stage.make_executor(config, 0)  # one thread of this process
    pid, version = executor.submit(ocr_stage.warm_up).result(timeout=300)
    assert "paddleocr=" in version
    yield executor
    executor.shutdown()


def run(stage, data: bytes):
    return stage.submit(ocr_stage.read_frame, data, inspect_image(data)).result(timeout=120)


def test_a_dataset_frame_is_read_and_cropped(stage, line_t_dataset, line_t_profile):
    entry = line_t_dataset.entries[1]
    data = line_t_dataset.read_bytes(entry)
    prepared = run(stage, data)
    assert prepared.record.names == [f.name for f in line_t_profile.fields]
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    frame = (line_t_profile.frame.width, line_t_profile.frame.height)
    assert np.array_equal(prepared.roi, crop_object_roi(image, line_t_profile.object_roi, frame, 32))
    assert prepared.decode_ms >= 0 and prepared.ocr_ms > 0


def test_frames_of_another_size_but_the_same_layout_are_scaled(stage, line_t_dataset):
    image = line_t_dataset.read_image(line_t_dataset.entries[2])
    prepared = run(stage, png(cv2.resize(image, (640, 480))))
    assert prepared.roi.shape == (32, 32, 3)


def test_decoder_failures_and_layout_mismatch_are_rejected(stage):
    with pytest.raises(FrameRejected) as caught:
        run(stage, png_with_corrupt_data())
    assert caught.value.code == DeadLetterCode.UNDECODABLE
    with pytest.raises(FrameRejected) as caught:
        run(stage, png(np.zeros((320, 240, 3), np.uint8)))  # portrait: not this line's layout
    assert caught.value.code == DeadLetterCode.PROFILE_MISMATCH and "aspect ratio" in caught.value.message
