"""Copy dead letters back to the frames topic, for frames whose cause has been fixed.

    oanet dlq replay --code inference_rejected [--code ...] [--dry-run]

Reads the whole dead-letter topic from the beginning up to its current end (no consumer group:
nothing is committed, and running it twice copies twice), keeps the records whose
`oanet.error.code` header is one of --code, and produces each with its original key, value and
headers, minus the `oanet.*` headers the worker added. Settings (brokers, security, topic names)
come from the environment like every OANet process (`OANET_*`). docs/operations.md says which
codes are worth replaying.
"""

from __future__ import annotations

from collections import Counter

from oanet.contracts import HEADER_ERROR_CODE
from oanet.errors import OanetError
from oanet.settings import Settings

ADDED_PREFIX = "oanet."  # headers of the worker's dead-letter envelope (oanet.error.*, oanet.source.*)


def replay(settings: Settings, codes: set[str], dry_run: bool = False, timeout_s: float = 30.0) -> Counter:
    """Copy matching dead letters; returns how many records per code were seen ("copied" counts copies)."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    from stream.kafka_clients import consumer_config, producer_config

    topics = settings.topics
    consumer = KafkaConsumer(**consumer_config(settings, None, consumer_timeout_ms=int(timeout_s * 1000)))
    producer = None if dry_run else KafkaProducer(**producer_config(settings, enable_idempotence=True))
    counts: Counter = Counter()
    try:
        partitions = [TopicPartition(topics.dead_letter, p)
                      for p in sorted(consumer.partitions_for_topic(topics.dead_letter) or ())]
        if not partitions:
            raise OanetError(f"topic {topics.dead_letter} does not exist")
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        end = consumer.end_offsets(partitions)
        pending = {tp for tp in partitions if end[tp] > consumer.position(tp)}
        futures = []
        for record in (consumer if pending else ()):
            tp = TopicPartition(record.topic, record.partition)
            headers = list(record.headers or [])
            code = next((v.decode("utf-8", "replace") for k, v in headers if k == HEADER_ERROR_CODE), "")
            counts[code or "(no code)"] += 1
            if code in codes:
                kept = [(k, v) for k, v in headers if not k.startswith(ADDED_PREFIX)]
                if producer is not None:
                    futures.append(producer.send(topics.frames, record.value, key=record.key, headers=kept))
                counts["copied"] += 1
            if record.offset + 1 >= end[tp]:
                pending.discard(tp)
            if not pending:
                break
        for future in futures:
            future.get(timeout=timeout_s)  # raises if the broker refused a record
    finally:
        if producer is not None:
            producer.close()
        consumer.close()
    return counts
