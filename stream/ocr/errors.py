"""Exceptions of the OCR stage. Each is one actionable line for the user or the dead-letter topic."""

from oanet.contracts import DeadLetterCode
from stream.errors import StreamError


class OcrError(StreamError):
    """The OCR stage cannot read a frame or cannot start."""


class ImageDecodeError(OcrError):
    """The frame bytes are empty or not a decodable PNG/JPEG image."""

    code = DeadLetterCode.UNDECODABLE


class FrameMismatchError(OcrError):
    """The frame cannot be mapped onto the line profile (its shape differs too much)."""

    code = DeadLetterCode.PROFILE_MISMATCH


class OcrModelError(OcrError):
    """The OCR model files are missing or incomplete (set-up has not run)."""

    exit_code = 2
    code = "ocr_models_missing"  # a start-up failure (the worker exits), never a dead letter


class StudentError(OcrError):
    """A distilled line recogniser (`oanet ocr distill`) is missing, damaged or made for another line."""

    exit_code = 2
    code = "ocr_recognizer_invalid"  # a start-up failure (the worker exits), never a dead letter


class StudentUnavailable(OcrError):
    """The Triton-served student did not answer a call (`stream.ocr.student_server`): the lines
    it was sent are read by PaddleOCR instead; never a frame's fault."""
