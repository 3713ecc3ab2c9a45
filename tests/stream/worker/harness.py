"""Test harness of the stream worker: produce frames, run a worker on a thread of this process
(`oanet worker` processes: `stream.worker.processes.WorkerProcess`) and read back what workers
wrote. Every wait polls a condition with a deadline; nothing sleeps and hopes.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from kafka import KafkaProducer

from bench.chaos_frames import send_record
from oanet.dataset import Dataset
from oanet.settings import Settings
from stream.kafka_clients import producer_config


def produce(settings: Settings, frames: Sequence[tuple], key: bytes | None = b"line-t") -> None:
    """Produce (value, headers) pairs, or (value, headers, key) triples (a key of their own, None
    included), to the frames topic and wait for every acknowledgement."""
    producer = KafkaProducer(**producer_config(settings))
    try:
        futures = []
        for frame in frames:
            value, headers, frame_key = frame[0], list(frame[1]), frame[2] if len(frame) > 2 else key
            if value is None and frame_key is None:
                futures.append(send_record(producer, settings.topics.frames, 0, None, None, headers))
            else:
                futures.append(producer.send(settings.topics.frames, value, key=frame_key, headers=headers))
        for future in futures:
            future.get(timeout=60)
    finally:
        producer.close()


def replay(settings: Settings, dataset: Dataset, count: int, prefix: str = "", lines: int = 1,
           rate: float = 0.0) -> list[str]:
    """Play `count` frames of the dataset (looping) like a camera, spread over `lines` line ids
    that cover `lines` partitions (each line at `rate` frames/s, 0: at once); returns their ids."""
    from stream.replay import line_ids, plan, replay as do_replay

    names = line_ids("line", lines, lines) if lines > 1 else [None]
    ids = []
    for i, line in enumerate(names):
        share = count // len(names) + (1 if i < count % len(names) else 0)
        line_prefix = f"{prefix}{line}-" if line else prefix
        do_replay(settings, dataset, dataset.entries, limit=share, loop=True, prefix=line_prefix, line_id=line,
                  rate=rate, progress=False)
        ids += [frame_id for frame_id, _ in plan(dataset.entries, share, True, line_prefix)]
    return ids


@dataclass
class Outputs:
    verdicts: list[dict[str, Any]]
    dead_letters: list[Any]  # ConsumerRecords of the dead-letter topic

    def by_frame(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for v in self.verdicts:
            out.setdefault(v["frame_id"], []).append(v)
        return out


def read_outputs(settings: Settings, *, until: Callable[[Outputs], bool] | None = None,
                 timeout_s: float = 180.0) -> Outputs:
    """Every verdict and dead letter so far; with `until`, keep reading until it holds (or fail)."""
    from stream.verdicts import read_topics

    out = Outputs([], [])
    deadline = time.monotonic() + timeout_s
    topics = [settings.topics.verdicts, settings.topics.dead_letter]
    for records in read_topics(settings, topics, follow=until is not None, poll_ms=200):
        for r in records:
            if r.topic == settings.topics.verdicts:
                out.verdicts.append(json.loads(r.value))
            else:
                out.dead_letters.append(r)
        if until is not None and until(out):
            break
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout_s:.0f} s: {len(out.verdicts)} verdicts, "
                        f"{len(out.dead_letters)} dead letters")
    return out


def wait_until(condition: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval_s)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")


def committed_offsets(settings: Settings, group: str) -> dict[int, int]:
    """Committed offset of each frames-topic partition for `group` (absent: none committed)."""
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(**settings.kafka.client_kwargs())
    try:
        offsets = admin.list_group_offsets({group: None}).get(group, {})
    finally:
        admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items()
            if tp.topic == settings.topics.frames and meta.offset >= 0}


@contextlib.contextmanager
def running_worker(settings: Settings, inference: Callable | None = None, *, group: str | None = None,
                   wait_assignment: bool = True, **options: Any) -> Iterator[Any]:
    """A StreamWorker on a thread of this process (`options`: more StreamWorker arguments);
    stopped (drained) on exit."""
    from stream.worker.backends import inference_factory
    from stream.worker.loop import StreamWorker

    worker = StreamWorker(settings, inference or inference_factory(settings), group_id=group, **options)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            worker.run()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            errors.append(exc)

    thread = threading.Thread(target=run, name="test-worker", daemon=True)
    thread.start()
    try:
        wait_until(lambda: worker.started.is_set() or errors, 180, "the worker to start")
        if errors:
            raise errors[0]
        if wait_assignment:
            wait_until(lambda: worker.assignment or errors, 120, "a partition assignment")
        yield worker
    finally:
        worker.stop()
        thread.join(timeout=120)
        assert not thread.is_alive(), "the worker did not stop"
    if errors:
        raise errors[0]
