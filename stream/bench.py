"""`oanet bench e2e`: the stream worker's stages alone and together, latency, memory.

One run, on the embedded stack (Tansu broker + tritonserver serving REPO, free ports, a state
folder of its own), with the frames of a dataset folder:

1. **Each stage alone**, one after the other with nothing else running, for `seconds` each:
   consume (one consumer fetching frames from the frames topic), decode (the worker's OCR pool
   processes decoding, fitting to the profile and cutting the object ROI), the OCR pool (the
   worker's stage: decode + OCR + ROI, `ocr_processes` processes), inference (the product's
   Triton client, `window` frames in flight, one frame per request, as the worker sends them),
   produce (verdict messages, acks=all, idempotent, `window` in flight).
2. **End to end**: one `oanet worker` process (`ocr_processes`, `window`) with a standing
   backlog (a producer keeps `backlog` frames ahead of the verdicts) for `duration` seconds
   after a warm-up: verdicts/s, the ratio to the slowest stage alone (target >= 0.8), and the
   worker's resident memory plus its OCR processes', sampled every second (target flat +-5%
   around the median of the first tenth).
3. **Latency** from the producer's send to the verdict's arrival at a reader: one frame alone
   (each after the previous verdict: the median), then frames paced at half the end-to-end
   rate (p50, p99; target p99 <= 3x the median alone).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import statistics
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from oanet.dataset import Dataset, load_dataset
from oanet.errors import OanetError
from oanet.settings import Settings, load_settings

TARGET_RATIO = 0.8
TARGET_LATENCY_RATIO = 3.0
TARGET_MEMORY_PCT = 5.0


class BenchError(OanetError):
    exit_code = 2


@dataclass(frozen=True)
class Stage:
    name: str
    frames: int
    seconds: float
    how: str
    cpu_s: float | None = None  # CPU time of the stage's processes while measured (pool stages)

    @property
    def rate(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_ms_per_frame(self) -> float | None:
        return None if self.cpu_s is None or not self.frames else self.cpu_s / self.frames * 1000


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes and of everything they started, so far."""
    import psutil

    seen: set[int] = set()
    total = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            family = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        for process in family:
            if process.pid in seen:
                continue
            seen.add(process.pid)
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
    return total


@dataclass(frozen=True)
class Frames:
    """Dataset frames in memory, cycled by every phase."""

    dataset: Dataset
    payloads: list[bytes]

    def __len__(self) -> int:
        return len(self.payloads)

    def payload(self, index: int) -> bytes:
        return self.payloads[index % len(self.payloads)]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


# --------------------------------------------------------------------------- a reader of answers


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


# --------------------------------------------------------------------------- stages alone


def _pool_stage(name: str, how: str, executor: concurrent.futures.Executor, call: Callable, frames: Frames,
                infos: list, in_flight: int, seconds: float, keep: list | None = None) -> Stage:
    """Run `call(payload, info)` in the pool, `in_flight` at a time, for `seconds` (after a warm-up)."""
    warmup_s = min(3.0, seconds / 3)
    start = time.monotonic()
    measure_from, until = start + warmup_s, start + warmup_s + seconds
    from stream.worker.ocr_stage import executor_pids

    pending: deque = deque()
    index = done = 0
    cpu_from: float | None = None
    while True:
        while len(pending) < in_flight:
            i = index % len(frames)
            pending.append(executor.submit(call, frames.payload(i), infos[i]))
            index += 1
        result = pending.popleft().result()
        now = time.monotonic()
        if now >= measure_from:
            if cpu_from is None:
                cpu_from, measure_from = cpu_seconds(executor_pids(executor)), now
                continue
            done += 1
            if keep is not None and len(keep) < 256:
                keep.append(result)
        if now >= until:
            break
    cpu_s = cpu_seconds(executor_pids(executor)) - (cpu_from or 0.0)
    seconds = time.monotonic() - measure_from
    for future in pending:
        future.cancel()
    concurrent.futures.wait(list(pending))
    return Stage(name, done, seconds, how, cpu_s)


def _inference_stage(settings: Settings, prepared: list, window: int, seconds: float) -> Stage:
    from stream.triton_client import TritonClient
    from triton_models.oanet_fusion.core import param_arrays

    async def main() -> Stage:
        async with TritonClient(settings.triton) as client:
            await client.wait_ready()
            model = await client.model_info()
            inputs = []
            for p in prepared:
                values, missing = param_arrays([p.record.params], model.feature_names)
                inputs.append((p.roi[None], values, missing))
            loop = asyncio.get_running_loop()
            warmup_s = min(3.0, seconds / 3)
            measure_from = loop.time() + warmup_s
            until = measure_from + seconds
            counted = [0]

            async def task(offset: int) -> None:
                i = offset
                while loop.time() < until:
                    await client.infer(*inputs[i % len(inputs)])
                    i += window
                    if loop.time() >= measure_from:
                        counted[0] += 1

            await asyncio.gather(*(task(k) for k in range(window)))
            return Stage("inference", counted[0], loop.time() - measure_from,
                         f"Triton via the stream client, {window} frames in flight, one frame per request")

    return asyncio.run(main())


def _produce_stage(settings: Settings, message: bytes, window: int, seconds: float) -> Stage:
    """Verdict messages to a topic of their own (the verdicts topic is the end-to-end run's)."""
    from kafka import KafkaProducer

    from stream.kafka_clients import producer_config
    from stream.topics import create_topics

    topic = settings.topics.verdicts + ".produce"
    create_topics(settings.kafka, settings.topics.model_copy(update={"verdicts": topic}))
    producer = KafkaProducer(**producer_config(settings, enable_idempotence=True))
    try:
        pending: deque = deque()
        start = time.monotonic()
        measure_from = start + min(3.0, seconds / 3)
        until = measure_from + seconds
        done = 0
        while True:
            while len(pending) < window:
                pending.append(producer.send(topic, message, key=uuid.uuid4().hex.encode()))
            pending.popleft().get(timeout=60)
            now = time.monotonic()
            if now >= measure_from:
                done += 1
            if now >= until:
                break
        producer.flush()
        return Stage("produce", done, time.monotonic() - measure_from,
                     f"verdict messages ({len(message)} bytes), acks=all, idempotent, {window} in flight")
    finally:
        producer.close()


def _consume_stage(settings: Settings, frames: Frames, count: int) -> Stage:
    """Fetch `count` frames that were produced beforehand, with one consumer."""
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition

    from stream.kafka_clients import consumer_config
    from stream.topics import create_topics

    scratch = settings.topics.frames + ".consume"
    create_topics(settings.kafka, settings.topics.model_copy(update={"frames": scratch}))
    camera = Camera(settings.model_copy(update={"topics": settings.topics.model_copy(update={"frames": scratch})}),
                    frames)
    try:
        for n in range(count):
            camera.send(f"consume-{n}")
        camera.flush()
    finally:
        camera.close()
    consumer = KafkaConsumer(**consumer_config(settings, None))
    try:
        tps = [TopicPartition(scratch, p) for p in sorted(consumer.partitions_for_topic(scratch) or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        started, got = time.monotonic(), 0
        while got < count and time.monotonic() - started < 300:
            got += sum(len(batch) for batch in consumer.poll(timeout_ms=200).values())
        return Stage("consume", got, time.monotonic() - started, "one consumer fetching frames (frames topic)")
    finally:
        consumer.close(autocommit=False)


# --------------------------------------------------------------------------- end to end


@dataclass
class EndToEnd:
    verdicts: int = 0
    seconds: float = 0.0
    rss: list[tuple[float, int]] = field(default_factory=list)  # (seconds since start, bytes)
    backlog: list[int] = field(default_factory=list)  # frames waiting, sampled before each top-up
    cpu_s: float = 0.0  # CPU time of the worker, its OCR processes, Triton and the broker while measured

    @property
    def cpu_ms_per_frame(self) -> float:
        return self.cpu_s / self.verdicts * 1000 if self.verdicts else float("nan")

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


def _end_to_end(settings: Settings, frames: Frames, worker, answers: Answers, backlog: int, warmup_s: float,
                duration_s: float, progress: Callable[[str], None], service_pids: list[int]) -> tuple[EndToEnd, Camera]:
    camera = Camera(settings, frames)
    result = EndToEnd()
    produced = 0

    def top_up() -> int:
        nonlocal produced
        standing = produced - answers.count()
        while standing < backlog:
            camera.send(f"e2e-{produced}")
            produced += 1
            standing += 1
        camera.flush()
        return standing

    top_up()
    start = time.monotonic()
    measure_from = start + warmup_s
    until = measure_from + duration_s
    counted_from = None
    cpu_from = 0.0
    pids = [worker.pid, *service_pids]
    next_report = start + 30
    while True:
        if not worker.alive():
            raise BenchError(f"the worker exited: {worker.last_error() or worker.log_tail(3)}")
        left = produced - answers.count()  # what a second of work left standing: never 0 while it stands
        standing = top_up()
        now = time.monotonic()
        if now >= measure_from:
            if counted_from is None:
                counted_from, cpu_from, measure_from = answers.count(), cpu_seconds(pids), now
                until = measure_from + duration_s
            result.rss.append((now - measure_from, worker.family_rss()))
            result.backlog.append(left)
        if now >= next_report:
            progress(f"e2e: {answers.count()} verdicts, backlog {standing}, worker RSS "
                     f"{worker.family_rss() / 2**20:.0f} MiB, {now - start:.0f} s")
            next_report = now + 30
        if now >= until:
            break
        time.sleep(max(0.0, 1.0 - (time.monotonic() - now)))
    result.verdicts = answers.count() - (counted_from or 0)
    result.seconds = time.monotonic() - measure_from
    result.cpu_s = cpu_seconds(pids) - cpu_from
    answers.wait_for({f"e2e-{n}" for n in range(produced)}, timeout_s=600)  # drain before the latency runs
    return result, camera


def _latency_alone(camera: Camera, answers: Answers, count: int) -> list[float]:
    latencies = []
    for n in range(count):
        frame_id = f"alone-{n}"
        camera.send(frame_id)
        camera.flush()
        arrived = answers.wait_for({frame_id}, timeout_s=120)[frame_id]
        latencies.append((arrived - camera.sent[frame_id]) * 1000)
    return latencies


def _latency_at(camera: Camera, answers: Answers, rate: float, seconds: float) -> list[float]:
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


# --------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class BenchOptions:
    data: Path
    repo: Path
    seconds: float = 10.0
    duration_s: float = 60.0
    warmup_s: float = 20.0
    ocr_processes: int = 2
    window: int = 32
    backlog: int = 0  # 0: 2 x window
    alone: int = 20
    paced_s: float = 30.0
    frames_in_memory: int = 200
    samples: Path | None = None  # CSV of the memory samples

    def problems(self) -> list[str]:
        checks = [(self.seconds > 0, "--seconds must be positive"), (self.duration_s > 0, "--duration must be positive"),
                  (self.ocr_processes >= 1, "--ocr-processes must be at least 1"), (self.window >= 1, "--window must be at least 1"),
                  (self.alone >= 1, "--alone must be at least 1"), (self.paced_s > 0, "--paced must be positive")]
        return [m for ok, m in checks if not ok]


@contextmanager
def _stack(repo: Path, state: Path) -> Iterator[tuple[Settings, list[int]]]:
    """The embedded stack serving `repo` on free ports: (settings, the services' pids)."""
    from deploy.embedded.stack import EmbeddedStack, free_port_settings

    stack_settings = free_port_settings(state / "stack", repo, startup_timeout_s=300)
    stack = EmbeddedStack(stack_settings)
    stack.up()
    try:
        pids = [status.pid for status in stack.status() if status.pid is not None]
        yield load_settings(stack=stack_settings.model_dump()), pids
    finally:
        stack.down()


def run(options: BenchOptions, progress: Callable[[str], None] = lambda line: None) -> list[str]:
    from stream.topics import create_topics
    from stream.worker import ocr_stage
    from stream.worker.imageinfo import inspect_image
    from stream.worker.processes import WorkerProcess
    from stream.worker.repository import read_exported
    from triton_models.bench import machine_line

    problems = options.problems()
    if problems:
        raise BenchError("; ".join(problems))
    # kafka-python warns when its own I/O loop is busy for 0.1 s: under a benchmark's load it is.
    logging.getLogger("kafka.net.selector").setLevel(logging.ERROR)
    exported = read_exported(options.repo)
    dataset = load_dataset(options.data)
    if dataset.profile.name != exported.profile.name:
        raise BenchError(f"{options.data} is of line {dataset.profile.name!r}, the model of {exported.profile.name!r}")
    entries = dataset.entries[: options.frames_in_memory]
    frames = Frames(dataset, [dataset.read_bytes(e) for e in entries])
    infos = [inspect_image(p) for p in frames.payloads]
    lines = [f"{machine_line('cpu')} (start)",
             f"data: {options.data} ({len(frames)} frames in memory, {np.mean([len(p) for p in frames.payloads]) / 1024:.0f} "
             f"KiB on average, {infos[0].format}, {infos[0].width}x{infos[0].height}); model: {options.repo} version "
             f"{exported.model.version} ({exported.model.image_size} px ROI)"]
    progress(lines[0])
    began = time.monotonic()
    say = progress
    progress = lambda line: say(f"{time.monotonic() - began:5.0f} s  {line}")  # noqa: E731
    window = options.window
    with tempfile.TemporaryDirectory(prefix="oanet-bench-e2e-") as tmp, ExitStack() as cleanup:
        settings, service_pids = cleanup.enter_context(_stack(options.repo, Path(tmp)))
        run_id = uuid.uuid4().hex[:6]
        topics = settings.topics.model_copy(update={"frames": f"bench.{run_id}.frames",
                                                    "verdicts": f"bench.{run_id}.verdicts",
                                                    "dead_letter": f"bench.{run_id}.dlq"})
        settings = settings.model_copy(update={
            "topics": topics,
            "worker": settings.worker.model_copy(update={"ocr_processes": options.ocr_processes, "window": window,
                                                         "metrics_port": 0, "group_id": f"bench-{run_id}"})})
        create_topics(settings.kafka, settings.topics)

        average = sum(len(p) for p in frames.payloads) / len(frames)
        config = ocr_stage.StageConfig(exported.profile, settings.ocr, exported.model.image_size)
        processes = options.ocr_processes
        prepared: list = []

        def in_pool(name: str, how: str, call: Callable, keep: list | None = None) -> Callable[[], Stage]:
            def measure() -> Stage:
                executor = ocr_stage.make_executor(config, processes)
                try:
                    for future in [executor.submit(ocr_stage.warm_up) for _ in range(processes)]:
                        future.result(timeout=300)
                    return _pool_stage(name, how, executor, call, frames, infos, 2 * processes, options.seconds, keep)
                finally:
                    ocr_stage.shutdown_executor(executor)

            return measure

        measurements: dict[str, Callable[[], Stage]] = {
            "consume": lambda: _consume_stage(settings, frames, int(min(50 * options.seconds, 256 * 2**20 // average))),
            "decode": in_pool("decode", f"{processes} pool process(es): decode, fit to the profile, object ROI",
                              ocr_stage.decode_only),
            "ocr pool": in_pool("ocr pool", f"{processes} pool process(es): decode + OCR + ROI (the worker's stage)",
                                ocr_stage.prepare, keep=prepared),
            "inference": lambda: _inference_stage(settings, prepared, window, options.seconds),
            "produce": lambda: _produce_stage(settings, _verdict_bytes(prepared[0], infos[0], exported, settings),
                                              window, options.seconds),
        }
        stages: list[Stage] = []
        for name, measure in measurements.items():
            progress(f"stage alone: {name}")
            stages.append(measure())
        slowest = min(stages, key=lambda st: st.rate)
        lines.append(f"stages alone ({options.seconds:g} s each after a warm-up, one at a time):")
        lines += [f"  {st.name:<9} {st.rate:8.1f} frames/s  ({st.how}; {st.frames} in {st.seconds:.1f} s"
                  + (f"; {st.cpu_ms_per_frame:.0f} ms CPU per frame)" if st.cpu_ms_per_frame is not None else ")")
                  for st in stages]

        answers = cleanup.enter_context(Answers(settings))
        worker = WorkerProcess(settings, Path(tmp) / "worker.log", extra=["--repo", str(options.repo)])
        cleanup.callback(worker.stop)
        deadline = time.monotonic() + 400
        while not worker.assignment():
            if not worker.alive() or time.monotonic() > deadline:
                raise BenchError(f"the worker did not start: {worker.last_error() or worker.log_tail(3)}")
            time.sleep(0.5)
        backlog = options.backlog or 2 * window
        progress(f"end to end: standing backlog of {backlog} frames, {options.warmup_s:g} s warm-up, "
                 f"{options.duration_s:g} s measured")
        e2e, camera = _end_to_end(settings, frames, worker, answers, backlog, options.warmup_s, options.duration_s,
                                  progress, service_pids)
        cleanup.callback(camera.close)
        end_to_end_line = (f"end to end (1 worker, {processes} OCR process(es), window {window}, frames waiting "
                           f"{min(e2e.backlog)}-{max(e2e.backlog)}, {e2e.seconds:.0f} s after {options.warmup_s:g} s "
                           f"warm-up): {e2e.rate:.1f} frames/s")
        base, low, high, last, dev = e2e.memory()
        report = [f"memory (worker + OCR processes RSS, {len(e2e.rss)} samples, 1/s): baseline {base:.0f} MiB (median "
                  f"of the first tenth), min {low:.0f}, max {high:.0f}, last {last:.0f}; largest deviation "
                  f"{dev:.1f}% (target +-{TARGET_MEMORY_PCT:g}%: {'met' if dev <= TARGET_MEMORY_PCT else 'missed'}); "
                  f"second half {e2e.second_half_growth():+.1f}%"]
        if options.samples is not None:
            e2e.write_samples(options.samples)
            report.append(f"memory samples: {options.samples}")

        progress(f"latency: {options.alone} frames alone")
        alone = _latency_alone(camera, answers, options.alone)
        half = e2e.rate / 2
        progress(f"latency: paced at {half:.1f} frames/s for {options.paced_s:g} s")
        paced = _latency_at(camera, answers, half, options.paced_s)
        median_alone = statistics.median(alone)
        p99 = percentile(paced, 99)
        report.append(f"latency produce-to-verdict: one frame alone ({len(alone)} frames) median {median_alone:.0f} ms "
                      f"(p90 {percentile(alone, 90):.0f}); at half the end-to-end rate ({half:.1f} frames/s, "
                      f"{len(paced)} frames) p50 {percentile(paced, 50):.0f} ms, p99 {p99:.0f} ms = "
                      f"{p99 / median_alone:.2f} x the median alone (target <= {TARGET_LATENCY_RATIO:g}: "
                      f"{'met' if p99 <= TARGET_LATENCY_RATIO * median_alone else 'missed'})")
        code = worker.stop()
        if code != 0:
            report.append(f"note: the worker exited with code {code}: {worker.last_error()}")
        # The shared machine's load drifts over a run: the slowest stage is measured alone again
        # after the end-to-end run, and the ratio uses the mean of both measurements.
        progress(f"stage alone again: {slowest.name}")
        again = measurements[slowest.name]()
        reference = (slowest.rate + again.rate) / 2
        ratio = e2e.rate / reference if reference > 0 else float("nan")
        lines.append(f"  slowest: {slowest.name} {slowest.rate:.1f} frames/s before the end-to-end run, "
                     f"{again.rate:.1f} after; mean {reference:.1f}")
        lines.append(f"{end_to_end_line} = {ratio:.2f} x the slowest stage alone (target >= {TARGET_RATIO}: "
                     f"{'met' if ratio >= TARGET_RATIO else 'missed'})")
        if slowest.cpu_ms_per_frame is not None:
            # On a shared machine the scheduler gives a pipeline of many processes a larger share
            # than one stage's few processes; CPU time per frame does not depend on that share.
            lines.append(f"  CPU per frame: end to end {e2e.cpu_ms_per_frame:.0f} ms (worker, OCR processes, Triton, "
                         f"broker), {slowest.name} alone {slowest.cpu_ms_per_frame:.0f} ms: where CPU is the limit "
                         f"and the machine is the pipeline's alone, end to end / slowest = "
                         f"{slowest.cpu_ms_per_frame / e2e.cpu_ms_per_frame:.2f}")
        lines += report
    lines.append(f"{machine_line('cpu')} (end)")
    return lines


def _verdict_bytes(prepared, info, exported, settings: Settings) -> bytes:
    """A real verdict message of the bench's model and frames (the produce stage sends copies)."""
    from stream.worker.frames import Frame, SourceRef
    from stream.worker.messages import ModelOutputs, Verdict

    n = len(exported.model.feature_names)
    outputs = ModelOutputs(0.123456, (0.1, 0.2, 0.3), (0.2, 0.3, 0.5), (1.5, 0.5 * n))
    frame = Frame(source=SourceRef(settings.topics.frames, 0, 123456), key=None, value=b"", headers=(),
                  frame_id="bench-frame-000001", line_id=exported.profile.name, captured_at=None,
                  profile=exported.profile.name, image=info)
    return Verdict.build(frame, prepared.record, outputs, threshold=exported.model.threshold,
                         model_name=exported.model.name, model_version=str(exported.model.version),
                         timings_ms={"queue": 1.0, "decode": 10.0, "ocr": 100.0, "inference": 10.0, "total": 121.0},
                         worker=f"bench:{os.getpid()}").encode()
