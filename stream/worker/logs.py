"""Structured logs: one JSON object per line on stderr, with the frame id where there is one.

Fields beyond time, level, logger and message come from `extra=` (frame_id, partition,
offset, code, ...), so log pipelines can select by them without parsing text.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys

from oanet import logsecrets

LOGGER = "stream.worker"
_STANDARD = logsecrets.STANDARD_ATTRIBUTES  # anything else on a record came from `extra=`


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        data.update({k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:  # already formatted (and redacted: oanet.logsecrets)
            data["exc"] = record.exc_text
        return json.dumps(data, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Human-readable lines with the same `extra` fields as key=value pairs."""

    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(f"{k}={v}" for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_"))
        line = f"{self.formatTime(record)} {record.levelname} {record.getMessage()}" + (f" [{extra}]" if extra else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        elif record.exc_text:
            line += "\n" + record.exc_text
        return line


def configure(log_format: str = "auto", level: int = logging.INFO, stream=None) -> logging.Logger:
    """Route the worker's loggers to `stream` (stderr) in `log_format`; idempotent.

    "auto" is text for a person at a terminal and JSON for a log pipeline (anything else).
    Handlers already on the root logger (the command line's, for libraries such as
    kafka-python) get the same formatter, so every line on stderr has one format.
    """
    stream = stream or sys.stderr
    as_json = log_format == "json" or (log_format == "auto" and not _is_terminal(stream))
    formatter = JsonFormatter() if as_json else TextFormatter()
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)
    logger = logging.getLogger(LOGGER)
    for handler in list(logger.handlers):
        if getattr(handler, "_oanet", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(stream)
    handler._oanet = True  # type: ignore[attr-defined]
    handler.setFormatter(formatter)
    logsecrets.protect(handler)
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return logger


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
