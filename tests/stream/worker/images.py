"""Encoded images for decode and dead-letter tests: valid, truncated, corrupt, bombs, odd colours."""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np


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
