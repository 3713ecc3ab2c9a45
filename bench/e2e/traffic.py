"""The benchmark's traffic: dataset frames in memory, a camera that produces them with their send
times, and a reader that records when each verdict or dead letter arrives."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from bench.common import BenchError
from oanet.dataset import Dataset
from oanet.settings import Settings


@dataclass(frozen=True)
class Frames:
    """Dataset frames in memory, cycled by every phase."""

    dataset: Dataset
    payloads: list[bytes]

    def __len__(self) -> int:
        return len(self.payloads)

    def payload(self, index: int) -> bytes:
        return self.payloads[index % len(self.payloads)]


class Answers:
    """Arrival time (time.time()) of every verdict and dead letter, by frame id, read as they come."""

    def __init__(self, settings: Settings):
        self._settings = settings
        self._lock = threading.Lock()
        self._arrived: dict[str, float] = {}
        self._changed = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="bench-answers", daemon=True)
        self.errors: list[BaseException] = []

    def __enter__(self) -> Answers:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _read(self) -> None:
        from oanet.contracts import HEADER_FRAME_ID
        from stream.verdicts import read_topics

        topics = self._settings.topics
        try:
            for records in read_topics(self._settings, [topics.verdicts, topics.dead_letter], follow=True,
                                       poll_ms=20):
                now = time.time()
                if records:
                    with self._changed:
                        for r in records:
                            frame_id = (dict(r.headers or ()).get(HEADER_FRAME_ID) or b"").decode()
                            if frame_id:
                                self._arrived.setdefault(frame_id, now)
                        self._changed.notify_all()
                if self._stop.is_set():
                    return
        except BaseException as exc:  # noqa: BLE001 - re-raised by the waiting side
            self.errors.append(exc)

    def count(self) -> int:
        with self._lock:
            return len(self._arrived)

    def arrivals(self) -> dict[str, float]:
        with self._lock:
            return dict(self._arrived)

    def wait_for(self, frame_ids: set[str], timeout_s: float) -> dict[str, float]:
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not frame_ids <= self._arrived.keys():
                if self.errors:
                    raise self.errors[0]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    missing = len(frame_ids - self._arrived.keys())
                    raise BenchError(f"{missing} frame(s) got no verdict within {timeout_s:.0f} s")
                self._changed.wait(min(remaining, 1.0))
            return {fid: self._arrived[fid] for fid in frame_ids}


class Camera:
    """Produces frames (cycling the dataset's) with the headers a camera sends; records send times."""

    def __init__(self, settings: Settings, frames: Frames):
        from kafka import KafkaProducer

        from stream.kafka_clients import producer_config

        self._settings = settings
        self._frames = frames
        self._producer = KafkaProducer(**producer_config(settings))
        self.sent: dict[str, float] = {}
        self._count = 0

    def send(self, frame_id: str) -> None:
        from stream.replay import frame_headers

        line = self._frames.dataset.profile.name
        headers = frame_headers(frame_id, line, line)
        payload = self._frames.payload(self._count)
        self._count += 1
        self.sent[frame_id] = time.time()
        self._producer.send(self._settings.topics.frames, payload, key=line.encode(), headers=headers)

    def flush(self) -> None:
        self._producer.flush()

    def close(self) -> None:
        self._producer.close()
