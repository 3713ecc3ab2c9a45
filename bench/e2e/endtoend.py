"""The end-to-end run (one `oanet worker` with a standing backlog: verdicts/s, memory, CPU) and the
produce-to-verdict latencies (one frame alone, frames paced at a rate)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import BenchError
from bench.e2e.stages import cpu_seconds_by_process
from bench.e2e.traffic import Answers, Camera, Frames
from oanet.settings import Settings


@dataclass
class EndToEnd:
    verdicts: int = 0
    seconds: float = 0.0
    rss: list[tuple[float, int]] = field(default_factory=list)  # (seconds since start, bytes)
    backlog: list[int] = field(default_factory=list)  # frames waiting, sampled before each top-up
    # CPU time while measured, by process: the worker, its OCR processes, Triton and the broker
    cpu_by_process: dict[str, float] = field(default_factory=dict)

    @property
    def cpu_s(self) -> float:
        return sum(self.cpu_by_process.values())

    @property
    def cpu_ms_per_frame(self) -> float:
        return self.cpu_s / self.verdicts * 1000 if self.verdicts else float("nan")

    def cpu_ms_per_frame_by_process(self) -> dict[str, float]:
        return {name: seconds / self.verdicts * 1000 if self.verdicts else float("nan")
                for name, seconds in self.cpu_by_process.items()}

    @property
    def rate(self) -> float:
        return self.verdicts / self.seconds if self.seconds > 0 else 0.0

    def memory(self) -> tuple[float, float, float, float, float]:
        """(baseline MiB, min, max, last, largest deviation from the baseline in %)."""
        values = [b / 2**20 for _, b in self.rss]
        if not values:
            return (float("nan"),) * 5
        baseline = statistics.median(values[: max(1, len(values) // 10)])
        deviation = max(abs(v - baseline) for v in values) / baseline * 100
        return baseline, min(values), max(values), values[-1], deviation

    def second_half_growth(self) -> float:
        """Growth in % from the median of the second half's first tenth to its last tenth: a leak
        keeps growing, a cache that warms up flattens."""
        values = [b for _, b in self.rss[len(self.rss) // 2 :]]
        if len(values) < 2:
            return float("nan")
        tenth = max(1, len(values) // 10)
        start, end = statistics.median(values[:tenth]), statistics.median(values[-tenth:])
        return (end - start) / start * 100

    def write_samples(self, path: Path) -> None:
        """CSV: seconds into the measurement, RSS in bytes, frames waiting before the top-up."""
        with open(path, "w", encoding="utf-8") as out:
            out.write("seconds,rss_bytes,backlog\n")
            for (t, rss), waiting in zip(self.rss, self.backlog, strict=True):
                out.write(f"{t:.1f},{rss},{waiting}\n")


class Backlog:
    """Keeps `depth` frames standing ahead of the verdicts: the worker never waits for work.

    Frame ids are `<prefix>-<n>`; verdicts the reader had before it started are not its own.
    """

    def __init__(self, camera: Camera, answers: Answers, depth: int, prefix: str = "e2e"):
        self.camera, self.answers, self.depth, self.prefix = camera, answers, depth, prefix
        self.produced = 0
        self._before = answers.count()

    def waiting(self) -> int:
        return self.produced - (self.answers.count() - self._before)

    def top_up(self) -> int:
        """Send frames until `depth` stand; returns how many stand now."""
        standing = self.waiting()
        while standing < self.depth:
            self.camera.send(f"{self.prefix}-{self.produced}")
            self.produced += 1
            standing += 1
        self.camera.flush()
        return standing

    def frame_ids(self) -> set[str]:
        return {f"{self.prefix}-{n}" for n in range(self.produced)}


def end_to_end(settings: Settings, frames: Frames, worker, answers: Answers, backlog: int, warmup_s: float,
               duration_s: float, progress: Callable[[str], None], services: Mapping[str, int],
               prefix: str = "e2e", camera: Camera | None = None) -> tuple[EndToEnd, Camera]:
    """Verdicts/s over `duration_s` after `warmup_s`, with the worker's RSS and the backlog sampled
    every second; returns the figures and the camera (the latency runs reuse it; a later run may
    pass it back, with another frame id `prefix`)."""
    camera = camera or Camera(settings, frames)
    result = EndToEnd()
    standing = Backlog(camera, answers, backlog, prefix)
    standing.top_up()
    start = time.monotonic()
    measure_from = start + warmup_s
    until = measure_from + duration_s
    counted_from = None
    cpu_from: dict[str, float] = {}
    next_report = start + 30
    while True:
        if not worker.alive():
            raise BenchError(f"the worker exited: {worker.last_error() or worker.log_tail(3)}")
        left = standing.waiting()  # what a second of work left standing: never 0 while it stands
        waiting = standing.top_up()
        now = time.monotonic()
        if now >= measure_from:
            if counted_from is None:
                counted_from, measure_from = answers.count(), now
                cpu_from = cpu_seconds_by_process(worker.pid, services)
                until = measure_from + duration_s
            result.rss.append((now - measure_from, worker.family_rss()))
            result.backlog.append(left)
        if now >= next_report:
            progress(f"e2e: {answers.count()} verdicts, backlog {waiting}, worker RSS "
                     f"{worker.family_rss() / 2**20:.0f} MiB, {now - start:.0f} s")
            next_report = now + 30
        if now >= until:
            break
        time.sleep(max(0.0, 1.0 - (time.monotonic() - now)))
    result.verdicts = answers.count() - (counted_from or 0)
    result.seconds = time.monotonic() - measure_from
    cpu_to = cpu_seconds_by_process(worker.pid, services)
    result.cpu_by_process = {name: cpu_to[name] - cpu_from.get(name, 0.0) for name in cpu_to}
    answers.wait_for(standing.frame_ids(), timeout_s=600)  # drain before the latency runs
    return result, camera


def latency_alone(camera: Camera, answers: Answers, count: int) -> list[float]:
    latencies = []
    for n in range(count):
        frame_id = f"alone-{n}"
        camera.send(frame_id)
        camera.flush()
        arrived = answers.wait_for({frame_id}, timeout_s=120)[frame_id]
        latencies.append((arrived - camera.sent[frame_id]) * 1000)
    return latencies


def latency_at(camera: Camera, answers: Answers, rate: float, seconds: float) -> list[float]:
    count = max(5, int(rate * seconds))
    ids = [f"paced-{n}" for n in range(count)]
    started = time.monotonic()
    for n, frame_id in enumerate(ids):
        delay = started + n / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        camera.send(frame_id)
        camera.flush()
    arrived = answers.wait_for(set(ids), timeout_s=600)
    return [(arrived[f] - camera.sent[f]) * 1000 for f in ids]
