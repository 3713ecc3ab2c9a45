"""No configured secret in any log line, whichever library writes it and at whatever level.

kafka-python, for one, logs its whole client configuration at DEBUG, SASL password included.
Secrets are known by value (the SecretStr settings), so a filter on every handler replaces
each occurrence in the message, in `extra=` fields and in exception text before a formatter
sees the record. Installed by the command line (`oanet.cli`) on the root handlers and by the
worker's log set-up on its own handler.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from oanet.settings import Settings

MASK = "**********"  # what pydantic prints for a SecretStr
# Attributes every LogRecord has; anything else on a record came from `extra=`.
STANDARD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class SecretFilter(logging.Filter):
    """Replaces every known secret in a record with MASK; never drops a record."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: tuple[str, ...] = ()

    def add(self, secrets: Iterable[str]) -> None:
        # A secret as it is, and as repr() writes it inside a logged dict or tuple.
        forms = {form for s in secrets if s for form in (s, repr(s)[1:-1])}
        self._secrets = tuple(sorted({*self._secrets, *forms}, key=len, reverse=True))  # longest first

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text

    def _has_secret(self, text: str) -> bool:
        return any(secret in text for secret in self._secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record: logging reports it itself
            return True
        if self._has_secret(message):
            record.msg, record.args = self.redact(message), ()
        for key, value in list(vars(record).items()):
            if key not in STANDARD_ATTRIBUTES and not key.startswith("_") and isinstance(value, str) and self._has_secret(value):
                setattr(record, key, self.redact(value))
        if record.exc_info:
            text = logging.Formatter().formatException(record.exc_info)
            if self._has_secret(text):
                record.exc_text, record.exc_info = self.redact(text), None
        elif record.exc_text and self._has_secret(record.exc_text):
            record.exc_text = self.redact(record.exc_text)
        return True


SECRETS = SecretFilter()


def protect(handler: logging.Handler) -> None:
    """Let no known secret through `handler`."""
    if SECRETS not in handler.filters:
        handler.addFilter(SECRETS)


def watch(settings: Settings) -> None:
    """Redact the secrets of `settings` from every handler of the root logger (and those later
    given to `protect`)."""
    SECRETS.add(settings.secret_values())
    for handler in logging.getLogger().handlers:
        protect(handler)
