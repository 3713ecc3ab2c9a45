"""A faulty OCR stage for the worker's fault tests: the product's stage, except that a frame
marked with `mark(png, CRASH)` kills the pool process it runs in and one marked `HANG` never
finishes. Module-level, so spawned pool processes import it by name.
"""

from __future__ import annotations

import os
import signal
import struct
import time
import zlib

from stream.worker import ocr_stage

CRASH = b"crash"
HANG = b"hang"
_KEYWORD = b"oanet-test-fault\x00"


def mark(png: bytes, fault: bytes) -> bytes:
    """The PNG with a tEXt chunk (ignored by decoders) naming the fault, right after IHDR."""
    data = _KEYWORD + fault
    chunk = struct.pack(">I", len(data)) + b"tEXt" + data + struct.pack(">I", zlib.crc32(b"tEXt" + data))
    ihdr_end = 8 + 8 + 13 + 4
    return png[:ihdr_end] + chunk + png[ihdr_end:]


def read_frame(data: bytes, info):
    if _KEYWORD + CRASH in data:
        os.kill(os.getpid(), signal.SIGKILL)
    if _KEYWORD + HANG in data:
        while True:
            time.sleep(1)
    return ocr_stage.read_frame(data, info)
