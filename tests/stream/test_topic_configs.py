"""The topic configs `oanet topics create` sets: size limit and retention from the settings."""

from __future__ import annotations

import pytest

from oanet.errors import ConfigError
from oanet.settings import load_settings
from stream.topics import topic_configs


def test_frames_and_dead_letters_get_their_retention(monkeypatch):
    monkeypatch.setenv("OANET_TOPICS__FRAMES_RETENTION_MS", "3600000")
    topics = load_settings().topics
    configs = topic_configs(topics)
    assert configs[topics.frames] == {"max.message.bytes": str(topics.max_message_bytes), "retention.ms": "3600000"}
    assert configs[topics.dead_letter]["retention.ms"] == str(14 * 24 * 3600 * 1000)
    assert configs[topics.verdicts] == {"max.message.bytes": str(topics.max_message_bytes)}  # the broker's default


def test_retention_is_checked(monkeypatch):
    monkeypatch.setenv("OANET_TOPICS__FRAMES_RETENTION_MS", "-5")
    with pytest.raises(ConfigError, match="frames_retention_ms"):
        load_settings()
