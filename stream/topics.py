"""Create and inspect the product's topics (frames, verdicts, dead letters)."""

from __future__ import annotations

from oanet.settings import KafkaSettings, TopicSettings
from stream.errors import StreamError
from stream.kafka_clients import any_reachable


def _admin(kafka: KafkaSettings):
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    kwargs = kafka.client_kwargs()
    if not any_reachable(kwargs["bootstrap_servers"]):
        raise StreamError(
            f"no Kafka broker answers at {kafka.bootstrap_servers} (is the stack up? `oanet stack status`)"
        )
    try:
        return KafkaAdminClient(**kwargs)
    except KafkaError as exc:
        raise StreamError(f"cannot connect to Kafka at {kafka.bootstrap_servers}: {exc}") from None


def topic_configs(topics: TopicSettings) -> dict[str, dict[str, str]]:
    """The topic configs `create_topics` sets, per topic: the size limit on all three, retention
    where the settings give one (frames, dead letters)."""
    configs = {name: {"max.message.bytes": str(topics.max_message_bytes)} for name in topics.partitions}
    for name, retention in topics.retention_ms.items():
        configs[name]["retention.ms"] = str(retention)
    return configs


def create_topics(kafka: KafkaSettings, topics: TopicSettings) -> list[str]:
    """Create missing topics; leave existing ones alone. Returns one line per topic."""
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    admin = _admin(kafka)
    try:
        existing = describe(admin)
        outcomes = []
        for name, partitions in topics.partitions.items():
            if name in existing:
                note = "" if existing[name] == partitions else f" (has {existing[name]}, settings say {partitions})"
                outcomes.append(f"{name}: exists, {existing[name]} partition(s){note}")
                continue
            configs = topic_configs(topics)[name]
            new = NewTopic(name, partitions, topics.replication_factor, topic_configs=configs)
            try:
                admin.create_topics([new])
                outcomes.append(f"{name}: created, {partitions} partition(s), "
                                + ", ".join(f"{k}={v}" for k, v in configs.items()))
            except TopicAlreadyExistsError:
                outcomes.append(f"{name}: exists (created concurrently)")
            except KafkaError as exc:
                raise StreamError(f"cannot create topic {name}: {exc}") from None
        return outcomes
    finally:
        admin.close()


def describe(admin) -> dict[str, int]:
    return {t["name"]: len(t["partitions"]) for t in admin.describe_topics() if not t.get("is_internal")}


def describe_topics(kafka: KafkaSettings) -> dict[str, int]:
    admin = _admin(kafka)
    try:
        return describe(admin)
    finally:
        admin.close()
