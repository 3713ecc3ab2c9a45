"""Structured logs: JSON lines with the event's fields, or the same as readable text."""

from __future__ import annotations

import io
import json
import logging

import pytest

from stream.worker import logs


@pytest.fixture(autouse=True)
def restore_logging():
    """configure() is meant for a worker process; undo it for the rest of the session."""
    logger, root = logging.getLogger(logs.LOGGER), logging.getLogger()
    saved = (list(logger.handlers), logger.propagate, logger.level, [(h, h.formatter) for h in root.handlers])
    yield
    logger.handlers[:] = saved[0]
    logger.propagate, logger.level = saved[1], saved[2]
    for handler, formatter in saved[3]:
        handler.setFormatter(formatter)


def test_json_and_text_lines_carry_the_extra_fields():
    for fmt in ("json", "text"):
        out = io.StringIO()
        logger = logs.configure(fmt, stream=out)
        logger.warning("dead letter", extra={"frame_id": "x1", "partition": 2, "code": "truncated_image"})
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("stream.worker.loop").exception("unexpected", extra={"frame_id": "x2"})
        first, rest = out.getvalue().split("\n", 1)
        if fmt == "json":
            event = json.loads(first)
            assert event["msg"] == "dead letter" and event["level"] == "warning"
            assert (event["frame_id"], event["partition"], event["code"]) == ("x1", 2, "truncated_image")
            second = json.loads(rest.splitlines()[0])
            assert second["frame_id"] == "x2" and "ValueError: boom" in second["exc"]
        else:
            assert "dead letter [frame_id=x1 partition=2 code=truncated_image]" in first
            assert "ValueError: boom" in rest
    assert len([h for h in logging.getLogger(logs.LOGGER).handlers if getattr(h, "_oanet", False)]) == 1


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_auto_is_text_on_a_terminal_and_json_for_a_pipeline():
    for stream, as_json in ((_Terminal(), False), (io.StringIO(), True)):
        logs.configure("auto", stream=stream).warning("dead letter", extra={"frame_id": "x1"})
        line = stream.getvalue().splitlines()[0]
        if as_json:
            assert json.loads(line)["frame_id"] == "x1"
        else:
            assert line.endswith("dead letter [frame_id=x1]")
