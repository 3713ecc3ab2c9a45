"""Admission of one record of the frames topic (pure): headers, policy, size, image header.

`admit` turns a consumed record into a typed `Frame`, or raises `FrameRejected` with the
dead-letter code of the first problem found. Nothing here decodes pixels: that happens in the
OCR stage, after these checks have bounded what a decoder may allocate.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

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
from stream.worker.imageinfo import ImageInfo, inspect_image

MAX_ID_CHARS = 256
Headers = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class SourceRef:
    """Where a frame came from: what its verdict or dead letter points back to."""

    topic: str
    partition: int
    offset: int

    @property
    def fallback_frame_id(self) -> str:
        """The frame id of a frame without a usable `frame_id` header (docs/contracts.md)."""
        return f"{self.topic}-{self.partition}-{self.offset}"


@dataclass(frozen=True)
class FramePolicy:
    """What the worker accepts; built once from settings and the served line profile(s)."""

    max_bytes: int
    max_pixels: int
    color_models: frozenset[str]
    profiles: frozenset[str]  # names of the line profiles this worker serves
    default_profile: str  # used when a frame has no `profile` header
    required_headers: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Frame:
    source: SourceRef
    key: bytes | None
    value: bytes
    headers: Headers
    frame_id: str
    line_id: str | None
    captured_at: dt.datetime | None
    profile: str
    image: ImageInfo
    # Headers that were present but unusable and not required: ignored, reported in logs.
    ignored_headers: tuple[str, ...] = field(default=(), compare=False)


def _clipped(text: str, limit: int = 120) -> str:
    text = text.replace("\n", " ").replace("\r", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _parse_text(name: str, raw: bytes, limit: int = MAX_ID_CHARS) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"header {name!r} is not UTF-8") from None
    if not text.strip():
        raise ValueError(f"header {name!r} is empty")
    if len(text) > limit:
        raise ValueError(f"header {name!r} is longer than {limit} characters")
    if not text.isprintable():
        raise ValueError(f"header {name!r} has control characters: {_clipped(repr(text))}")
    return text


def parse_captured_at(raw: bytes) -> dt.datetime:
    """ISO-8601 time of capture; a time without zone is taken as UTC."""
    text = _parse_text(HEADER_CAPTURED_AT, raw, 64)
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"header {HEADER_CAPTURED_AT!r} is not an ISO-8601 time: {_clipped(repr(text))}") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.timezone.utc)


_PARSERS = {
    HEADER_FRAME_ID: lambda raw: _parse_text(HEADER_FRAME_ID, raw),
    HEADER_LINE_ID: lambda raw: _parse_text(HEADER_LINE_ID, raw),
    HEADER_PROFILE: lambda raw: _parse_text(HEADER_PROFILE, raw),
    HEADER_CAPTURED_AT: parse_captured_at,
}


def normalize_headers(headers: Iterable[tuple[str, bytes | None]] | None) -> Headers:
    """kafka-python's header list as an immutable tuple; a null value becomes b''."""
    return tuple((str(k), bytes(v) if v is not None else b"") for k, v in (headers or ()))


def header_values(headers: Headers, name: str) -> list[bytes]:
    return [v for k, v in headers if k == name]


def frame_id_of(headers: Headers, source: SourceRef) -> str:
    """Best-effort id for logs and keys, whatever else is wrong with the frame."""
    values = header_values(headers, HEADER_FRAME_ID)
    if len(set(values)) == 1:
        try:
            return _parse_text(HEADER_FRAME_ID, values[0])
        except ValueError:
            pass
    return source.fallback_frame_id


def _read_headers(headers: Headers, required: frozenset[str]) -> tuple[dict[str, object], list[str]]:
    """Known headers parsed; (values, names ignored as malformed). Raises for required ones."""
    parsed: dict[str, object] = {}
    ignored: list[str] = []
    for name, parse in _PARSERS.items():
        values = header_values(headers, name)
        if not values:
            if name in required:
                raise FrameRejected(DeadLetterCode.MISSING_HEADER, STAGE_HEADERS,
                                    f"required header {name!r} is missing")
            continue
        try:
            if len(set(values)) > 1:
                raise ValueError(f"header {name!r} appears {len(values)} times with different values")
            parsed[name] = parse(values[0])
        except ValueError as exc:
            if name in required:
                raise FrameRejected(DeadLetterCode.MALFORMED_HEADER, STAGE_HEADERS, str(exc)) from None
            ignored.append(name)
    return parsed, ignored


def check_image(info: ImageInfo, policy: FramePolicy) -> None:
    if info.pixels > policy.max_pixels:
        raise FrameRejected(
            DeadLetterCode.TOO_MANY_PIXELS, STAGE_DECODE,
            f"{info.format.upper()} declares {info.width}x{info.height} = {info.pixels} pixels, over the limit of "
            f"{policy.max_pixels} (worker.max_pixels)",
        )
    if info.color_model not in policy.color_models:
        raise FrameRejected(
            DeadLetterCode.UNUSABLE_COLOR, STAGE_DECODE,
            f"{info.format.upper()} colour model {info.color_model!r} is not accepted "
            f"(worker.color_models: {', '.join(sorted(policy.color_models))})",
        )
    if info.format == "jpeg" and info.bit_depth != 8:
        raise FrameRejected(DeadLetterCode.UNUSABLE_COLOR, STAGE_DECODE,
                            f"{info.bit_depth}-bit JPEG; only 8-bit JPEG frames can be decoded")


def admit(
    source: SourceRef,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]] | None,
    policy: FramePolicy,
) -> Frame:
    """A consumed record -> Frame, or FrameRejected naming the first problem."""
    headers = normalize_headers(headers)
    parsed, ignored = _read_headers(headers, policy.required_headers)
    profile = str(parsed.get(HEADER_PROFILE, policy.default_profile))
    if profile not in policy.profiles:
        raise FrameRejected(DeadLetterCode.UNKNOWN_PROFILE, STAGE_HEADERS,
                            f"profile {profile!r} is not served by this worker (serves: {', '.join(sorted(policy.profiles))})")
    data = bytes(value) if value is not None else b""
    if len(data) > policy.max_bytes:
        raise FrameRejected(DeadLetterCode.FRAME_TOO_LARGE, STAGE_DECODE,
                            f"frame has {len(data)} bytes, over the limit of {policy.max_bytes} (topics.max_frame_bytes)")
    info = inspect_image(data)
    check_image(info, policy)
    line_id = parsed.get(HEADER_LINE_ID)
    if line_id is None and key:
        try:
            line_id = _parse_text("key", key)  # the key is the line id (docs/contracts.md)
        except ValueError:
            line_id = None
    return Frame(
        source=source,
        key=key,
        value=data,
        headers=headers,
        frame_id=str(parsed.get(HEADER_FRAME_ID, source.fallback_frame_id)),
        line_id=line_id,  # type: ignore[arg-type]
        captured_at=parsed.get(HEADER_CAPTURED_AT),  # type: ignore[arg-type]
        profile=profile,
        image=info,
        ignored_headers=tuple(ignored),
    )
