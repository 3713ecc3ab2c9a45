"""Topics on the real broker: creation, idempotence, 8 MiB frames through a consumer group."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer

from oanet.contracts import HEADER_FRAME_ID, MIB
from stream.kafka_clients import consumer_config, producer_config
from stream.topics import create_topics, describe_topics

pytestmark = pytest.mark.slow
KCAT_CONFIG = Path(__file__).parents[2] / "deploy" / "embedded" / "kcat.conf"


def test_create_topics_is_idempotent(unique_topics):
    s = unique_topics
    first = create_topics(s.kafka, s.topics)
    assert [line.split(":")[0] for line in first] == [s.topics.frames, s.topics.verdicts, s.topics.dead_letter]
    assert all(": created" in line for line in first)
    second = create_topics(s.kafka, s.topics)
    assert all(": exists" in line for line in second)
    partitions = describe_topics(s.kafka)
    assert partitions[s.topics.frames] == 3
    assert partitions[s.topics.verdicts] == 2
    assert partitions[s.topics.dead_letter] == 1


def test_topics_cli_and_kcat_listing(unique_topics, run_oanet, kcat):
    s = unique_topics
    env = {
        "OANET_KAFKA__BOOTSTRAP_SERVERS": s.kafka.bootstrap_servers,
        "OANET_TOPICS__FRAMES": s.topics.frames,
        "OANET_TOPICS__VERDICTS": s.topics.verdicts,
        "OANET_TOPICS__DEAD_LETTER": s.topics.dead_letter,
    }
    result = run_oanet("topics", "create", env=env)
    assert result.returncode == 0, result.stderr
    # Debian's librdkafka 2.0.2 needs the shipped config to talk to Tansu 0.6.0 (see the file).
    listing = subprocess.run([kcat, "-b", s.kafka.bootstrap_servers, "-L"], capture_output=True, text=True,
                             timeout=30, check=True, env={**os.environ, "KCAT_CONFIG": str(KCAT_CONFIG)}).stdout
    for name in (s.topics.frames, s.topics.verdicts, s.topics.dead_letter):
        assert f'topic "{name}"' in listing


def test_unreachable_broker_gives_one_line_error(run_oanet):
    from deploy.embedded.stack import free_port

    result = run_oanet("topics", "create", "--bootstrap-servers", f"127.0.0.1:{free_port()}", timeout=120)
    assert result.returncode == 1
    assert result.stderr.startswith("oanet topics: error: no Kafka broker answers at 127.0.0.1:")
    assert "Traceback" not in result.stderr


def test_eight_mib_frame_round_trips_through_a_consumer_group(unique_topics):
    s = unique_topics
    create_topics(s.kafka, s.topics)
    payload = os.urandom(8 * MIB)
    producer = KafkaProducer(**producer_config(s))
    try:
        producer.send(s.topics.frames, payload, key=b"line-a",
                      headers=[(HEADER_FRAME_ID, b"big-1")]).get(timeout=60)
    finally:
        producer.close()
    consumer = KafkaConsumer(s.topics.frames, **consumer_config(s, group_id=f"{s.topics.frames}-group"))
    try:
        deadline = time.monotonic() + 90
        received = []
        while not received and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=1000).values():
                received += records
        assert received, "no frame arrived within 90 s"
        record = received[0]
        assert record.value == payload
        assert record.key == b"line-a"
        assert dict(record.headers)[HEADER_FRAME_ID] == b"big-1"
        consumer.commit()
    finally:
        consumer.close()


def test_frame_over_the_limit_is_refused_by_the_producer(unique_topics):
    from kafka.errors import MessageSizeTooLargeError

    s = unique_topics
    producer = KafkaProducer(**producer_config(s))
    try:
        with pytest.raises(MessageSizeTooLargeError):
            producer.send(s.topics.frames, os.urandom(s.topics.max_message_bytes + 1)).get(timeout=30)
    finally:
        producer.close()

