"""What a PNG or JPEG header says, read without decoding a pixel (pure; no OpenCV).

The worker checks byte size, format, dimensions (decompression-bomb guard), colour model and
completeness from these few bytes before it lets a decoder allocate anything: a 60 kB PNG
can declare 100k x 100k pixels, and a truncated JPEG decodes "successfully" into a half-grey
image with libjpeg's default error handling.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from oanet.contracts import STAGE_DECODE, DeadLetterCode
from stream.worker.errors import FrameRejected

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8"
_PNG_COLOR_TYPES = {0: "gray", 2: "rgb", 3: "palette", 4: "gray_alpha", 6: "rgba"}
_PNG_BIT_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
# Start-of-frame markers (baseline, extended, progressive, lossless; Huffman or arithmetic).
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RSTn: no length field


@dataclass(frozen=True)
class ImageInfo:
    format: str  # "png" | "jpeg"
    width: int
    height: int
    color_model: str  # gray | gray_alpha | rgb | rgba | palette | cmyk | ycck
    bit_depth: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def _undecodable(message: str) -> FrameRejected:
    return FrameRejected(DeadLetterCode.UNDECODABLE, STAGE_DECODE, message)


def _truncated(message: str) -> FrameRejected:
    return FrameRejected(DeadLetterCode.TRUNCATED, STAGE_DECODE, message)


def inspect_image(data: bytes) -> ImageInfo:
    """Format, size and colour model of encoded image bytes; FrameRejected when unusable.

    Raises with code `empty_frame`, `undecodable_image` (not PNG/JPEG, corrupt header) or
    `truncated_image` (the data ends before the image does).
    """
    if not data:
        raise FrameRejected(DeadLetterCode.EMPTY_FRAME, STAGE_DECODE, "frame is empty (0 bytes)")
    if data.startswith(PNG_SIGNATURE):
        return _inspect_png(data)
    if data.startswith(JPEG_SOI):
        return _inspect_jpeg(data)
    head = data[:8].hex(" ")
    raise _undecodable(f"frame is not a PNG or JPEG image ({len(data)} bytes starting {head})")


def _inspect_png(data: bytes) -> ImageInfo:
    pos = len(PNG_SIGNATURE)
    if len(data) < pos + 8 + 13:
        raise _truncated(f"PNG ends inside its header ({len(data)} bytes)")
    length, kind = struct.unpack(">I4s", data[pos : pos + 8])
    if kind != b"IHDR" or length != 13:
        raise _undecodable("PNG does not start with a valid IHDR chunk")
    width, height, depth, color_type = struct.unpack(">IIBB", data[pos + 8 : pos + 18])
    if width == 0 or height == 0:
        raise _undecodable(f"PNG declares an empty image ({width}x{height})")
    if color_type not in _PNG_COLOR_TYPES or depth not in _PNG_BIT_DEPTHS[color_type]:
        raise _undecodable(f"PNG declares an invalid colour type {color_type} with bit depth {depth}")
    # Walk the chunk list (lengths only, no inflating) to find IEND: cheap even for 8 MiB.
    pos += 8 + length + 4
    seen_data = False
    while True:
        if pos + 8 > len(data):
            raise _truncated(f"PNG is truncated: no IEND chunk within its {len(data)} bytes")
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        end = pos + 8 + length + 4
        if end > len(data):
            raise _truncated(
                f"PNG is truncated: chunk {kind.decode('latin-1')!r} needs {end} bytes, the frame has {len(data)}"
            )
        if kind == b"IDAT":
            seen_data = True
        elif kind == b"IEND":
            break
        pos = end
    if not seen_data:
        raise _undecodable("PNG has no image data (IDAT chunk)")
    return ImageInfo("png", width, height, _PNG_COLOR_TYPES[color_type], depth)


def _inspect_jpeg(data: bytes) -> ImageInfo:
    pos = 2
    size: tuple[int, int, int, int] | None = None  # precision, height, width, components
    adobe_transform: int | None = None
    while True:
        # Markers may be preceded by any number of 0xFF fill bytes.
        while pos < len(data) and data[pos] == 0xFF and pos + 1 < len(data) and data[pos + 1] == 0xFF:
            pos += 1
        if pos + 2 > len(data):
            raise _truncated(f"JPEG ends before its image data ({len(data)} bytes)")
        if data[pos] != 0xFF:
            raise _undecodable(f"JPEG marker expected at byte {pos}")
        marker = data[pos + 1]
        pos += 2
        if marker in _JPEG_STANDALONE:
            continue
        if marker == 0xD9:
            raise _undecodable("JPEG ends (EOI) before any image data")
        if pos + 2 > len(data):
            raise _truncated(f"JPEG ends inside a marker segment ({len(data)} bytes)")
        (length,) = struct.unpack(">H", data[pos : pos + 2])
        if length < 2:
            raise _undecodable(f"JPEG marker segment 0x{marker:02X} has an invalid length {length}")
        if pos + length > len(data):
            raise _truncated(f"JPEG ends inside marker segment 0x{marker:02X} ({len(data)} bytes)")
        segment = data[pos + 2 : pos + length]
        if marker in _JPEG_SOF:
            if len(segment) < 6:
                raise _undecodable("JPEG frame header is too short")
            precision, height, width, components = struct.unpack(">BHHB", segment[:6])
            size = (precision, height, width, components)
        elif marker == 0xEE and segment.startswith(b"Adobe") and len(segment) >= 12:
            adobe_transform = segment[11]
        elif marker == 0xDA:  # start of scan: entropy-coded data follows
            if size is None:
                raise _undecodable("JPEG has image data but no frame header (SOF)")
            # 0xFF inside entropy-coded data is always stuffed (FF 00) or a restart marker,
            # so an FF D9 after the scan starts is the end of the image: without it, the data
            # was cut off.
            if data.find(b"\xff\xd9", pos + length) < 0:
                raise _truncated(f"JPEG is truncated: no end-of-image marker within its {len(data)} bytes")
            break
        pos += length
    precision, height, width, components = size
    if width == 0 or height == 0:
        raise _undecodable(f"JPEG declares an empty image ({width}x{height})")
    if components == 1:
        model = "gray"
    elif components == 3:
        model = "rgb"
    elif components == 4:
        model = "ycck" if adobe_transform == 2 else "cmyk"
    else:
        raise _undecodable(f"JPEG declares {components} colour components")
    return ImageInfo("jpeg", width, height, model, precision)
