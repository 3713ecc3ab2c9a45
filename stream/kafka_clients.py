"""kafka-python client configurations derived from settings, in one place.

Size limits follow `TopicSettings.max_message_bytes` so a frame of `max_frame_bytes` plus its
headers passes producer, broker and consumer alike.
"""

from __future__ import annotations

import socket
from typing import Any

from oanet.settings import Settings


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    config = {
        **settings.kafka.client_kwargs(),
        "acks": "all",
        "max_request_size": settings.topics.max_message_bytes,
        "retries": 5,
        "linger_ms": 5,
    }
    config.update(overrides)
    return config


def consumer_config(settings: Settings, group_id: str | None, **overrides: Any) -> dict[str, Any]:
    config = {
        **settings.kafka.client_kwargs(),
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_partition_fetch_bytes": settings.topics.max_message_bytes,
        "fetch_max_bytes": 2 * settings.topics.max_message_bytes,
        "session_timeout_ms": settings.kafka.session_timeout_ms,
        "heartbeat_interval_ms": settings.kafka.heartbeat_interval_ms,
    }
    config.update(overrides)
    return config


def any_reachable(bootstrap_servers: list[str], timeout_s: float = 3.0) -> bool:
    """Whether a TCP connection to any bootstrap server opens.

    kafka-python waits its whole bootstrap timeout (30 s) on a closed port before failing;
    this answers in milliseconds, so commands can say at once that no broker is there.
    """
    for server in bootstrap_servers:
        host, _, port = server.strip().rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
            return True
        except (OSError, ValueError):
            continue
    return False
