"""What the chaos producer sends: good frames of a line, bad ones of many kinds, one poison.

Each kind names what a worker must make of it (a verdict, or a dead letter with one code), so
the auditor can tell a frame charged for somebody else's fault from one handled as designed.
The bad kinds are the inputs a line meets in production: tombstones and null records, bytes
that are no image, cut or corrupt images, decompression bombs, colour models the model cannot
use, frames of another layout, headers that are missing, malformed or name another line, a
frame one header short of the broker's limit, blank frames and unreadable panels.

The poison frame is a good frame whose object area is one flat grey (`POISON_GRAY`); the served
image encoder of a `poison_repository` copy raises on exactly that input, as a bad model
release would on some real frame: Triton answers INTERNAL and the worker must isolate it
(`inference_failed`) without charging its neighbours.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import shutil
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from kafka import KafkaProducer
from kafka.record.default_records import DefaultRecordBatchBuilder
from kafka.structs import TopicPartition

from oanet.contracts import HEADER_CAPTURED_AT, HEADER_FRAME_ID, HEADER_PROFILE, DeadLetterCode
from oanet.preprocess import scale_roi
from oanet.profile import LineProfile

VERDICT = "verdict"  # the expected outcome of a frame a worker must verdict
POISON_GRAY = 77
POISON = "poison"
GOOD = "good"
# Headers every frame carries; the chaos workers require both (worker.required_headers), so a
# frame without one, or with a malformed one, is a kind of bad frame.
REQUIRED_HEADERS = (HEADER_FRAME_ID, HEADER_CAPTURED_AT)
# The near-limit frame leaves at most this many bytes of max.message.bytes unused.
NEAR_LIMIT_SLACK = 400
Headers = list[tuple[str, bytes]]

# ------------------------------------------------------------------------------ encoded images


def png(image: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(".png", image)
    assert ok
    return buffer.tobytes()


def jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buffer.tobytes()


def noise(width: int = 320, height: int = 240, channels: int = 3, seed: int = 0) -> np.ndarray:
    shape = (height, width) if channels == 1 else (height, width, channels)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def cmyk_jpeg(width: int = 320, height: int = 240) -> bytes:
    """A CMYK JPEG (Adobe APP14), as print workflows write them; PIL can, OpenCV cannot."""
    from PIL import Image

    out = io.BytesIO()
    Image.new("CMYK", (width, height), (10, 20, 30, 40)).save(out, "JPEG")
    return out.getvalue()


def png_bomb(width: int, height: int) -> bytes:
    """A valid grey PNG of zeros: a few kB that decode to width x height bytes."""
    return png(np.zeros((height, width), np.uint8))


def png_with_corrupt_data(width: int = 320, height: int = 240) -> bytes:
    """Well-formed chunks (IHDR, IDAT, IEND) whose IDAT is not zlib data: passes the header
    checks, fails in the decoder."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"not zlib at all" * 10) + chunk(b"IEND", b"")


def record_size(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    """Bytes of a record as the producer counts them against max.message.bytes."""
    return DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, [tuple(h) for h in headers])


# ------------------------------------------------------------------------------ kinds


@dataclass(frozen=True)
class Kind:
    """A kind of frame: what it is, what the worker must make of it, and how to build it."""

    name: str
    expected: str  # VERDICT or a DeadLetterCode
    build: Callable[[Headers], tuple[bytes | None, bytes | None, Headers]]  # headers -> (key, value, headers)


def captured_now() -> bytes:
    return dt.datetime.now(dt.timezone.utc).isoformat().encode()


def frame_headers(frame_id: str) -> Headers:
    return [(HEADER_FRAME_ID, frame_id.encode()), (HEADER_CAPTURED_AT, captured_now())]


def bad_kinds(profile: LineProfile, good: bytes, key: bytes, max_message_bytes: int) -> list[Kind]:
    """The bad frames, built once from one good encoded frame of `profile` (cheap to send often)."""
    image = cv2.imdecode(np.frombuffer(good, np.uint8), cv2.IMREAD_COLOR)
    h, w = image.shape[:2]  # the dataset's frame size: the profile's or another of its aspect ratio
    whole_png, whole_jpeg = png(noise(w, h, seed=1)), jpeg(image)
    unreadable = image.copy()
    px, py, pw, ph = scale_roi(profile.panel_roi, (profile.frame.width, profile.frame.height), image.shape)
    unreadable[py:py + ph, px:px + pw] = noise(pw, ph, seed=2)
    blank = np.full((h, w, 3), 255, np.uint8)

    def plain(value: bytes | None, k: bytes | None = key) -> Callable[[Headers], tuple]:
        return lambda headers: (k, value, headers)

    def near_limit(headers: Headers) -> tuple:
        room = max_message_bytes - NEAR_LIMIT_SLACK - record_size(key, b"", headers)
        return key, _random_bytes(room), headers

    code = DeadLetterCode
    return [
        Kind("tombstone", code.EMPTY_FRAME, plain(None)),
        Kind("null-key-and-value", code.EMPTY_FRAME, plain(None, None)),
        Kind("empty-value", code.EMPTY_FRAME, plain(b"")),
        Kind("not-an-image", code.UNDECODABLE, plain(b"GIF89a" + bytes(2000))),
        Kind("corrupt-png-data", code.UNDECODABLE, plain(png_with_corrupt_data(w, h))),
        Kind("truncated-jpeg", code.TRUNCATED, plain(whole_jpeg[: len(whole_jpeg) // 2])),
        Kind("truncated-png", code.TRUNCATED, plain(whole_png[: len(whole_png) // 2])),
        Kind("pixel-bomb", code.TOO_MANY_PIXELS, plain(png_bomb(7000, 6000))),
        Kind("cmyk-jpeg", code.UNUSABLE_COLOR, plain(cmyk_jpeg(w, h))),
        Kind("wrong-dimensions", code.PROFILE_MISMATCH, plain(png(noise(h, w, seed=3)))),
        Kind("unknown-profile", code.UNKNOWN_PROFILE,
             lambda headers: (key, good, [*headers, (HEADER_PROFILE, b"no-such-line")])),
        Kind("malformed-header", code.MALFORMED_HEADER,
             lambda headers: (key, good, [headers[0], (HEADER_CAPTURED_AT, b"half past ten")])),
        Kind("missing-header", code.MISSING_HEADER, lambda headers: (key, good, headers[1:])),
        Kind("oversize-near-limit", code.FRAME_TOO_LARGE, near_limit),
        Kind("blank-image", VERDICT, plain(png(blank))),
        Kind("unreadable-panel", VERDICT, plain(png(unreadable))),
    ]


def poison_kind(profile: LineProfile, good: bytes, key: bytes) -> Kind:
    """A good frame whose object area is flat POISON_GRAY: the poisoned encoder raises on it."""
    image = cv2.imdecode(np.frombuffer(good, np.uint8), cv2.IMREAD_COLOR)
    x, y, w, h = scale_roi(profile.object_roi, (profile.frame.width, profile.frame.height), image.shape)
    image[y:y + h, x:x + w] = POISON_GRAY
    value = png(image)
    return Kind(POISON, DeadLetterCode.INFERENCE_FAILED, lambda headers: (key, value, headers))


def _random_bytes(size: int) -> bytes:
    return np.random.default_rng(size).bytes(max(0, size))


# ------------------------------------------------------------------------------ sending


def send_record(producer: KafkaProducer, topic: str, partition: int, key: bytes | None, value: bytes | None,
                headers: Headers):
    """producer.send, and a record with neither key nor value too, as librdkafka or the Java
    client send it (kafka-python's `send` refuses one): appended to the producer's batch for
    `partition` directly. Returns the send's future (RecordMetadata)."""
    if value is not None or key is not None:
        return producer.send(topic, value, key=key, headers=headers, partition=partition)
    producer._wait_on_metadata(topic, 60_000)  # noqa: SLF001 - no public way to send a null record
    future, *_ = producer._accumulator.append(TopicPartition(topic, partition), int(time.time() * 1000),  # noqa: SLF001
                                              None, None, headers)
    producer._sender.wakeup()  # noqa: SLF001
    return future


# ------------------------------------------------------------------------------ the poisoned model

POISON_PATCH = f"""

# --- chaos only: a model release that raises on one input (bench/chaos_frames.py)
_unpoisoned_forward = TritonPythonModel._forward


def _poisoned_forward(self, arrays):
    rois = arrays[core.ROI_INPUT]
    flat = (rois.reshape(len(rois), -1).min(axis=1) == {POISON_GRAY}) & (rois.reshape(len(rois), -1).max(axis=1) == {POISON_GRAY})
    if flat.any():
        raise RuntimeError("poisoned input: a flat grey object")
    return _unpoisoned_forward(self, arrays)


TritonPythonModel._forward = _poisoned_forward
"""


def poison_repository(source: Path, target: Path) -> Path:
    """A copy of model repository `source` at `target` whose image encoder (Python-backend
    runner) raises on a flat POISON_GRAY object, with the manifest's hash of the patched file
    updated; an unsigned repository only (the signature would rightly refuse it)."""
    from triton_models.oanet_fusion import core, integrity

    shutil.copytree(source, target)
    versions = sorted((p for p in (target / core.FUSION_MODEL).iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    if not versions:
        raise ValueError(f"{source} holds no exported version")
    version = versions[-1].name
    model = target / core.ENCODER_MODEL / version / "model.py"
    if not model.is_file():
        raise ValueError(f"{source}: the image encoder of version {version} is not the Python-backend runner "
                         "(export with the default --cnn-backend)")
    model.write_text(model.read_text() + POISON_PATCH)
    manifest_path = versions[-1] / core.MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text())
    if (versions[-1] / integrity.SIGNATURE_FILE).exists():
        raise ValueError(f"{source} is signed: the chaos bench needs an unsigned export to poison")
    manifest["files"][f"{core.ENCODER_MODEL}/{version}/model.py"] = integrity.sha256_file(model)
    manifest_path.write_text(json.dumps(manifest, indent=2))
    return target
