"""`oanet replay`: a camera simulator that plays a dataset's frames into the frames topic.

Each frame is produced as a camera would send it (DESIGN.md "Topics and messages"): value =
the image file's bytes, key = the line id, headers `frame_id`, `line_id`, `captured_at`
(now, ISO-8601 UTC) and `profile`. Frame ids are the manifest ids, with `--id-prefix`
prepended and `@N` appended on the N-th pass of `--loop`, so `oanet verdicts --data` can
map every verdict back to its manifest line.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from oanet.contracts import HEADER_CAPTURED_AT, HEADER_FRAME_ID, HEADER_LINE_ID, HEADER_PROFILE
from oanet.dataset import Dataset, ManifestEntry
from oanet.settings import Settings
from stream.errors import StreamError

LOOP_SEPARATOR = "@"


def replay_frame_id(entry_id: str, prefix: str = "", loop: int = 0) -> str:
    return f"{prefix}{entry_id}" + (f"{LOOP_SEPARATOR}{loop}" if loop else "")


def manifest_id(frame_id: str, prefix: str = "") -> str | None:
    """Inverse of `replay_frame_id`: the manifest id, or None for a frame id of another source."""
    if not frame_id.startswith(prefix):
        return None
    base = frame_id[len(prefix):]
    head, sep, tail = base.rpartition(LOOP_SEPARATOR)
    return head if sep and tail.isdigit() else base


def line_ids(base: str, count: int, partitions: int) -> list[str]:
    """`count` line ids (`<base>-<i>`) whose keys the producer's default partitioner spreads
    evenly over the topic's `partitions` (each its own partition while count <= partitions).

    The frames topic is keyed by line id (DESIGN.md), so all of one line's frames share a
    partition and one worker verdicts them; several lines keep several workers busy.
    """
    from kafka.partitioner.default import murmur2

    if count < 1 or partitions < 1:
        raise StreamError(f"--lines and the partition count must be at least 1, got {count} and {partitions}")
    targets = [(i * partitions) // count if count <= partitions else i % partitions for i in range(count)]
    found: list[str] = []
    index = 0
    for target in targets:
        while True:
            name = f"{base}-{index}"
            index += 1
            if (murmur2(name.encode()) & 0x7FFFFFFF) % partitions == target:
                found.append(name)
                break
    return found


def select_entries(dataset: Dataset, split: str) -> list[ManifestEntry]:
    return list(dataset.entries) if split == "all" else dataset.split(split)


def plan(entries: Sequence[ManifestEntry], limit: int | None, loop: bool, prefix: str = "") -> Iterator[tuple[str, ManifestEntry]]:
    """(frame id, entry) in replay order: the entries once, or round after round with --loop."""
    if not entries:
        return
    produced, round_ = 0, 0
    while limit is None or produced < limit:
        for entry in entries:
            if limit is not None and produced >= limit:
                return
            yield replay_frame_id(entry.id, prefix, round_), entry
            produced += 1
        if not loop:
            return
        round_ += 1


def frame_headers(frame_id: str, line_id: str, profile: str) -> list[tuple[str, bytes]]:
    """The headers a camera sends with a frame (DESIGN.md), captured now."""
    captured = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")
    return [
        (HEADER_FRAME_ID, frame_id.encode()),
        (HEADER_LINE_ID, line_id.encode()),
        (HEADER_CAPTURED_AT, captured.encode()),
        (HEADER_PROFILE, profile.encode()),
    ]


@dataclass(frozen=True)
class ReplayResult:
    frames: int
    bytes: int
    seconds: float


def replay(settings: Settings, dataset: Dataset, entries: Sequence[ManifestEntry], *, rate: float = 0.0,
           limit: int | None = None, loop: bool = False, prefix: str = "", line_id: str | None = None,
           lines: int = 1, progress: bool = True) -> ReplayResult:
    """Produce the frames (paced at `rate` frames/s when > 0) and wait for every acknowledgement.

    With `lines` > 1 the frames take turns among that many line ids (`line_ids`), as several
    lines making the same product would send them."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaError
    from tqdm import tqdm

    from stream.kafka_clients import producer_config

    if rate < 0:
        raise StreamError(f"--rate must be >= 0 frames/s, got {rate}")
    if limit is not None and limit < 1:
        raise StreamError(f"--limit must be at least 1, got {limit}")
    from stream.topics import describe_topics

    topic = settings.topics.frames
    partitions = describe_topics(settings.kafka).get(topic)
    if partitions is None:
        raise StreamError(f"topic {topic} does not exist; create it with `oanet topics create`")
    line = line_id or dataset.profile.name
    names = [line] if lines == 1 else line_ids(line, lines, partitions)
    total = limit if limit is not None else (None if loop else len(entries))
    producer = KafkaProducer(**producer_config(settings))
    futures = []
    sent_bytes = produced = 0
    started = time.monotonic()
    try:
        with tqdm(total=total, desc="replay", unit="frame", disable=not progress) as bar:
            for index, (frame_id, entry) in enumerate(plan(entries, limit, loop, prefix)):
                if rate > 0:
                    delay = started + index / rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                payload = dataset.read_bytes(entry)
                this_line = names[index % len(names)]
                headers = frame_headers(frame_id, this_line, dataset.profile.name)
                futures.append(producer.send(topic, payload, key=this_line.encode(), headers=headers))
                sent_bytes += len(payload)
                produced += 1
                bar.update(1)
                if len(futures) >= 256:  # bound what waits for acknowledgement
                    _check(futures, topic)
        producer.flush()
        _check(futures, topic)
    except KafkaError as exc:
        raise StreamError(f"cannot produce to {topic}: {exc}") from None
    finally:
        producer.close()
    return ReplayResult(produced, sent_bytes, time.monotonic() - started)


def _check(futures: list, topic: str) -> None:
    from kafka.errors import KafkaError

    for future in futures:
        try:
            future.get(timeout=60)
        except KafkaError as exc:
            raise StreamError(f"the broker did not acknowledge a frame on {topic}: {exc}") from None
    futures.clear()
