"""deploy/tools/dlq_replay.py on the real broker: matching dead letters go back to the frames topic
with their original key, value and headers, without the worker's oanet.* envelope."""

from __future__ import annotations

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from deploy.tools.dlq_replay import replay
from stream.kafka_clients import consumer_config, producer_config
from stream.topics import create_topics

pytestmark = pytest.mark.slow


def test_replay_copies_only_the_chosen_codes(unique_topics):
    s = unique_topics
    create_topics(s.kafka, s.topics)
    producer = KafkaProducer(**producer_config(s))
    letters = [
        (b"line-a", b"png-1", [("frame_id", b"f1"), ("oanet.error.code", b"inference_rejected"),
                               ("oanet.source.offset", b"7")]),
        (b"line-a", b"png-2", [("frame_id", b"f2"), ("oanet.error.code", b"undecodable_image")]),
        (None, b"png-3", [("oanet.error.code", b"inference_rejected"), ("captured_at", b"2026-01-01T00:00:00Z")]),
    ]
    for key, value, headers in letters:
        producer.send(s.topics.dead_letter, value, key=key, headers=headers).get(timeout=30)
    producer.close()

    assert replay(s, {"inference_rejected"}, dry_run=True) == {"inference_rejected": 2, "undecodable_image": 1,
                                                                "copied": 2}
    counts = replay(s, {"inference_rejected"})
    assert counts["copied"] == 2

    consumer = KafkaConsumer(**consumer_config(s, None, consumer_timeout_ms=10_000))
    partitions = [TopicPartition(s.topics.frames, p) for p in consumer.partitions_for_topic(s.topics.frames)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    copied = []
    for record in consumer:
        copied.append((record.key, record.value, list(record.headers)))
        if len(copied) == 2:
            break
    copied.sort(key=lambda r: r[1])
    consumer.close()
    assert copied == [(b"line-a", b"png-1", [("frame_id", b"f1")]),
                      (None, b"png-3", [("captured_at", b"2026-01-01T00:00:00Z")])]
