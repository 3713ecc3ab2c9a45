"""Settings: env, .env, validation, masking, pass-through to the clients."""

from __future__ import annotations

import json

import pytest

from oanet.errors import ConfigError
from oanet.settings import load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in list(__import__("os").environ):
        if name.startswith("OANET_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_defaults_point_clients_at_the_embedded_stack():
    s = load_settings()
    assert s.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert s.triton.url == "127.0.0.1:8001"
    assert s.topics.frames == "aoi.frames"
    assert s.topics.max_message_bytes >= 8 * 1024 * 1024


def test_clients_follow_a_changed_stack_port(monkeypatch):
    monkeypatch.setenv("OANET_STACK__BROKER_PORT", "19092")
    monkeypatch.setenv("OANET_STACK__TRITON_GRPC_PORT", "18001")
    s = load_settings()
    assert s.kafka.bootstrap_servers == "127.0.0.1:19092"
    assert s.triton.url == "127.0.0.1:18001"


def test_env_nested_values_and_flag_overrides(monkeypatch):
    monkeypatch.setenv("OANET_KAFKA__BOOTSTRAP_SERVERS", "kafka-1:9092,kafka-2:9092")
    monkeypatch.setenv("OANET_TOPICS__FRAMES_PARTITIONS", "12")
    s = load_settings(topics={"frames_partitions": 24})
    assert s.kafka.client_kwargs()["bootstrap_servers"] == ["kafka-1:9092", "kafka-2:9092"]
    assert s.topics.frames_partitions == 24


def test_dotenv_file_is_read(tmp_path):
    (tmp_path / ".env").write_text("OANET_TRITON__MODEL_NAME=oanet_v2\nOANET_TOPICS__VERDICTS=plant.verdicts\n")
    s = load_settings()
    assert s.triton.model_name == "oanet_v2"
    assert s.topics.verdicts == "plant.verdicts"


def test_settings_are_frozen():
    s = load_settings()
    with pytest.raises(Exception):
        s.kafka.client_id = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("OANET_STACK__BROKER_PORT", "70000", "stack.broker_port"),
        ("OANET_STACK__BROKER_PORT", "8000", "stack ports must all differ"),
        ("OANET_TOPICS__FRAMES_PARTITIONS", "0", "topics.frames_partitions"),
        ("OANET_KAFKA__SECURITY_PROTOCOL", "SASL_SSL", "needs sasl_mechanism"),
        ("OANET_KAFKA__SECURITY_PROTOCOL", "TLS", "kafka.security_protocol"),
        ("OANET_TOPICS__DEAD_LETTER", "aoi.frames", "different names"),
        ("OANET_OCR__CONFIRMED_TEXT_AUDIT", "1", "ocr.confirmed_text_audit"),
    ],
)
def test_bad_values_are_rejected_with_one_line(monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_key_in_dotenv_is_rejected(tmp_path):
    (tmp_path / ".env").write_text("OANET_KAFKA__BOOTSTRAP_SERVRS=typo:9092\n")
    with pytest.raises(ConfigError, match="bootstrap_servrs"):
        load_settings()


def _sasl_env(monkeypatch):
    monkeypatch.setenv("OANET_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("OANET_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("OANET_KAFKA__SASL_USERNAME", "line-a")
    monkeypatch.setenv("OANET_KAFKA__SASL_PASSWORD", "s3cret-kafka")
    monkeypatch.setenv("OANET_KAFKA__SSL_CAFILE", "/etc/oanet/ca.pem")
    monkeypatch.setenv("OANET_TRITON__SSL", "true")
    monkeypatch.setenv("OANET_TRITON__ROOT_CERTIFICATES", "/etc/oanet/triton-ca.pem")


def test_security_settings_pass_through_to_clients(monkeypatch):
    _sasl_env(monkeypatch)
    s = load_settings()
    kafka = s.kafka.client_kwargs()
    assert kafka["security_protocol"] == "SASL_SSL"
    assert kafka["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kafka["sasl_plain_username"] == "line-a"
    assert kafka["sasl_plain_password"] == "s3cret-kafka"
    assert kafka["ssl_cafile"] == "/etc/oanet/ca.pem"
    triton = s.triton.grpc_client_kwargs()
    assert triton == {"url": "127.0.0.1:8001", "ssl": True, "root_certificates": "/etc/oanet/triton-ca.pem"}


def test_secrets_are_masked_everywhere(monkeypatch):
    _sasl_env(monkeypatch)
    s = load_settings()
    assert "s3cret-kafka" not in repr(s)
    assert "s3cret-kafka" not in json.dumps(s.masked())
    assert s.masked()["kafka"]["sasl_password"] == "**********"


def test_config_command_masks_secrets(monkeypatch, capsys):
    from oanet.cli import main

    _sasl_env(monkeypatch)
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "OANET_KAFKA__SASL_PASSWORD=**********" in out
    assert "s3cret-kafka" not in out
    assert main(["config", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kafka"]["sasl_username"] == "line-a"


def test_config_command_reports_bad_settings_in_one_line(monkeypatch, capsys):
    from oanet.cli import main

    monkeypatch.setenv("OANET_STACK__BROKER_PORT", "not-a-port")
    assert main(["config"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("oanet config: error: invalid settings: stack.broker_port")
    assert len(err.strip().splitlines()) == 1


def test_worker_section_from_env_and_its_checks(monkeypatch):
    monkeypatch.setenv("OANET_WORKER__REQUIRED_HEADERS", '["frame_id", "captured_at"]')
    monkeypatch.setenv("OANET_WORKER__WINDOW", "8")
    s = load_settings()
    assert s.worker.required_headers == ("frame_id", "captured_at") and s.worker.window == 8
    assert s.worker.revoke_timeout_s * 1000 < s.kafka.session_timeout_ms
    with pytest.raises(ConfigError, match="unknown header"):
        load_settings(worker={"required_headers": ["camera"]})
    with pytest.raises(ConfigError, match="retry_initial_s must not exceed retry_max_s"):
        load_settings(worker={"retry_initial_s": 20, "retry_max_s": 10})
    with pytest.raises(ConfigError, match="worker.color_models"):
        load_settings(worker={"color_models": ["hsv"]})
    monkeypatch.setenv("OANET_WORKER__REQUIRED_HEADERS", "frame_id")  # not JSON
    with pytest.raises(ConfigError, match="list values are JSON"):
        load_settings()


def test_settings_env_makes_a_child_load_the_same_settings(monkeypatch):
    from oanet.settings import settings_env

    monkeypatch.setenv("OANET_KAFKA__SASL_PASSWORD", "s3cret")
    original = load_settings(
        kafka={"bootstrap_servers": "k1:9092,k2:9092", "security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN",
               "sasl_username": "line-a"},
        topics={"frames": "f.x", "frames_partitions": 3},
        worker={"required_headers": ("frame_id", "captured_at"), "inference": "local", "window": 7},
        ocr={"fallback": False},
    )
    env = settings_env(original)
    assert "OANET_KAFKA__SASL_PASSWORD" not in env  # inherited from the environment, never copied
    assert env["OANET_WORKER__REQUIRED_HEADERS"] == '["frame_id", "captured_at"]'
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert load_settings() == original


def test_ocr_recognizer_from_env_and_one_settings_model(monkeypatch, tmp_path):
    from oanet.ocr_settings import OcrSettings as Below
    from stream.ocr.settings import OcrSettings as Stage

    assert Below is Stage  # the stage re-exports the section defined below oanet.settings
    assert load_settings().ocr.recognizer is None
    monkeypatch.setenv("OANET_OCR__RECOGNIZER", str(tmp_path))
    assert load_settings().ocr.recognizer == tmp_path
