"""The worker's offsets controller: frames in flight, what may be committed, commits, rebalances.

It wraps the pure `Checkpoint` with what the worker's threads share: the frames in flight (the
`Job`s, each holding its partition's `Ticket`), the assigned partitions and one lock. The main
thread tracks consumed frames and commits; the asyncio loop acknowledges them; the consumer's
IO thread revokes partitions and commits on revocation.

A frame that has not been acknowledged is never covered by a commit: `to_commit` returns the
acknowledged prefix of each partition only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaConsumer
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from stream.worker.checkpoint import Checkpoint, CheckpointError, Ticket
from stream.worker.frames import Frame, SourceRef, frame_id_of, normalize_headers
from stream.worker.metrics import WorkerMetrics

log = logging.getLogger("stream.worker")


@dataclass(eq=False)
class Job:
    """One consumed frame on its way to an acknowledged verdict or dead letter."""

    ticket: Ticket
    source: SourceRef
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int | None
    received: float = field(default_factory=time.monotonic)
    frame: Frame | None = None

    @property
    def frame_id(self) -> str:
        return self.frame.frame_id if self.frame is not None else frame_id_of(self.headers, self.source)

    def log_fields(self, **more: Any) -> dict[str, Any]:
        return {"frame_id": self.frame_id, "topic": self.source.topic, "partition": self.source.partition,
                "offset": self.source.offset, **more}


def names(tps) -> list[str]:
    return sorted(f"{tp.topic}[{tp.partition}]" for tp in tps)


def _named(offsets: dict[TopicPartition, int]) -> dict[str, int]:
    return {f"{tp.topic}[{tp.partition}]": o for tp, o in offsets.items()}


class Offsets:
    """Frames in flight and the committable offsets of the assigned partitions (thread-safe)."""

    def __init__(self, metrics: WorkerMetrics):
        self._metrics = metrics
        self._lock = threading.Lock()
        self._checkpoint = Checkpoint()
        self._jobs: set[Job] = set()
        self.assigned: set[TopicPartition] = set()

    # ---- frames (main thread: track; asyncio loop: acknowledge) --------------------------------
    def track(self, record) -> Job | None:
        """A consumed record as a Job in flight; None when its partition is no longer ours."""
        tp = TopicPartition(record.topic, record.partition)
        if tp not in self.assigned:
            return None  # fetched before a rebalance took the partition away: its new owner reads it
        source = SourceRef(record.topic, record.partition, record.offset)
        with self._lock:
            try:
                ticket = self._checkpoint.track(tp, record.offset)
            except CheckpointError:
                # The partition was rewound under us (assignment lost without a callback):
                # start its progress afresh; earlier in-flight frames become duplicates.
                log.warning("partition rewound; restarting its progress", extra={"partition": str(tp),
                                                                                  "offset": record.offset})
                self._checkpoint.revoke({tp})
                ticket = self._checkpoint.track(tp, record.offset)
        job = Job(ticket, source, record.key, record.value, normalize_headers(record.headers), record.timestamp)
        with self._lock:
            self._jobs.add(job)
        return job

    def acknowledged(self, job: Job) -> None:
        """The frame's verdict or dead letter is acknowledged by the broker."""
        with self._lock:
            self._checkpoint.complete(job.ticket)
            self._jobs.discard(job)

    def in_flight(self, tps: set[TopicPartition] | None = None) -> int:
        with self._lock:
            return len(self._jobs) if tps is None else self._checkpoint.in_flight(tps)

    def oldest_age_s(self) -> float:
        """Age of the oldest frame in flight (0 when none)."""
        with self._lock:
            oldest = min((job.received for job in self._jobs), default=None)
        return 0.0 if oldest is None else time.monotonic() - oldest

    # ---- commits (main thread) -----------------------------------------------------------------
    def to_commit(self) -> dict[TopicPartition, int]:
        with self._lock:
            return self._checkpoint.to_commit(set(self.assigned))

    def commit(self, consumer: KafkaConsumer, offsets: dict[TopicPartition, int], reason: str) -> bool:
        if not offsets:
            return True
        try:
            consumer.commit({tp: OffsetAndMetadata(offset, "", -1) for tp, offset in offsets.items()})
        except KafkaError as exc:
            # Not fatal: the frames stay uncommitted and are verdicted again by whoever owns
            # the partition next (at-least-once), with identical verdicts.
            self._metrics.commits.labels("failed").inc()
            log.warning("commit failed", extra={"reason": reason, "error": str(exc),
                                                "offsets": {str(tp): o for tp, o in offsets.items()}})
            return False
        with self._lock:
            self._checkpoint.committed(offsets)
        self._metrics.commits.labels("ok").inc()
        log.debug("committed", extra={"reason": reason, "offsets": _named(offsets)})
        return True

    def update_lag(self, consumer: KafkaConsumer) -> None:
        for tp in list(self.assigned):
            end = consumer.highwater(tp)
            with self._lock:
                position = self._checkpoint.position(tp)
            if end is not None and position is not None:
                self._metrics.lag.labels(tp.topic, str(tp.partition)).set(max(0, end - position))

    # ---- rebalances (the consumer's IO thread) -------------------------------------------------
    def revoke(self, revoked: set[TopicPartition], *, lost: bool, wait_s: float,
               keep_waiting: Callable[[], bool]) -> dict[TopicPartition, int]:
        """Close revoked partitions; returns their acknowledged positions to commit.

        Their in-flight frames get `wait_s` to finish first, while `keep_waiting()` holds (this
        blocks the consumer's IO thread, heartbeats included: keep it well under the session
        timeout). Frames still in flight afterwards are verdicted anyway; their partition's
        next owner consumes them again (identical duplicates). Lost partitions (evicted member)
        cannot be committed: their state is dropped.
        """
        if not revoked:
            return {}
        if not lost and wait_s > 0:
            deadline = time.monotonic() + wait_s
            while self.in_flight(revoked) and time.monotonic() < deadline and keep_waiting():
                time.sleep(0.02)
        with self._lock:
            abandoned = self._checkpoint.in_flight(revoked)
            final = self._checkpoint.revoke(revoked)
        for tp in revoked:
            try:
                self._metrics.lag.remove(tp.topic, str(tp.partition))
            except KeyError:
                pass
        self.assigned = self.assigned - revoked  # a new set: the main thread may be iterating the old one
        log.info("partitions lost" if lost else "partitions revoked",
                 extra={"partitions": names(revoked), "abandoned_in_flight": abandoned, "to_commit": _named(final)})
        return {} if lost else final

    async def commit_on_io_thread(self, consumer: KafkaConsumer, offsets: dict[TopicPartition, int],
                                  reason: str) -> None:
        try:
            await consumer.commit_async({tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()})
        except Exception as exc:  # noqa: BLE001 - kafka-python fails futures with several types
            self._metrics.commits.labels("failed").inc()
            log.warning("commit failed", extra={"reason": reason, "error": str(exc)})
            return
        self._metrics.commits.labels("ok").inc()
        log.info("committed", extra={"reason": reason, "offsets": _named(offsets)})

    def assign(self, assigned: set[TopicPartition], group: str) -> None:
        self.assigned = set(assigned)
        log.info("partitions assigned", extra={"partitions": names(assigned), "group": group})
