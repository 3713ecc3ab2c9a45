"""No configured secret reaches a log line, at any level and from any library."""

from __future__ import annotations

import json
import logging
import uuid

import pytest

from oanet import logsecrets
from oanet.settings import load_settings
from stream.worker.logs import JsonFormatter

SASL = {"OANET_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT", "OANET_KAFKA__SASL_MECHANISM": "PLAIN",
        "OANET_KAFKA__SASL_USERNAME": "oanet", "OANET_KAFKA__REQUEST_TIMEOUT_MS": "2000"}


def secret() -> str:
    return f"s3cr3t-{uuid.uuid4().hex}"


def test_topics_create_at_debug_logs_no_sasl_password(settings, run_oanet):
    """kafka-python logs its admin configuration at DEBUG, the SASL password included."""
    password, ssl_password = secret(), secret()
    result = run_oanet("-v", "topics", "create", timeout=120, env={
        **SASL, "OANET_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "OANET_KAFKA__SASL_PASSWORD": password, "OANET_KAFKA__SSL_PASSWORD": ssl_password})
    output = result.stdout + result.stderr
    assert "Starting KafkaAdminClient with configuration" in output  # DEBUG was on, the config was logged
    assert password not in output and ssl_password not in output
    assert logsecrets.MASK in output


@pytest.fixture
def captured(monkeypatch):
    """Records as a JSON-lines handler with the secret filter writes them."""
    lines: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record):
            lines.append(self.format(record))

    handler = Capture()
    handler.setFormatter(JsonFormatter())
    logsecrets.protect(handler)
    logger = logging.getLogger(f"test.secrets.{uuid.uuid4().hex[:6]}")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, lines
    logger.removeHandler(handler)


def test_every_part_of_a_record_is_redacted(captured, monkeypatch):
    logger, lines = captured
    password, key = secret(), secret()
    monkeypatch.setenv("OANET_KAFKA__SASL_PASSWORD", password)
    monkeypatch.setenv("OANET_MODEL__SIGNING_KEY", key)
    logsecrets.watch(load_settings())
    logger.debug("config %s", {"sasl_plain_password": password})
    logger.info("plain %s", password, extra={"detail": f"key={key}"})
    try:
        raise RuntimeError(f"bad key {key}")
    except RuntimeError:
        logger.exception("failed")
    text = "\n".join(lines)
    assert password not in text and key not in text
    records = [json.loads(line) for line in lines]
    assert records[0]["msg"] == f"config {{'sasl_plain_password': '{logsecrets.MASK}'}}"
    assert records[1]["detail"] == f"key={logsecrets.MASK}"
    assert "RuntimeError: bad key" in records[2]["exc"] and logsecrets.MASK in records[2]["exc"]


def test_a_record_without_secrets_is_left_as_it_is(captured):
    logger, lines = captured
    logger.info("frame %s", "x1", extra={"partition": 3})
    assert json.loads(lines[0])["msg"] == "frame x1" and json.loads(lines[0])["partition"] == 3
