"""Exceptions of the stream worker.

`FrameRejected` is the one a frame's problem raises: it carries the dead-letter code and stage
(oanet.contracts) and a one-line message, and becomes a dead letter with the frame's original
bytes and headers. `WorkerError` is for the worker itself (cannot start, cannot produce).
"""

from __future__ import annotations

from stream.errors import StreamError


class WorkerError(StreamError):
    """The worker cannot start or cannot go on (broker, model, configuration)."""


class FrameRejected(WorkerError):
    """One frame cannot be verdicted; it goes to the dead-letter topic with `code`."""

    def __init__(self, code: str, stage: str, message: str):
        super().__init__(message)
        self.code = code
        self.stage = stage
        self.message = message

    def __reduce__(self):  # crosses the OCR process boundary
        return (type(self), (self.code, self.stage, self.message))
