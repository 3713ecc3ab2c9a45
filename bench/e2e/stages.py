"""Each stage of the stream worker measured alone, one after the other with nothing else running:
consume, decode, the OCR pool, inference through the product's Triton client, produce. With an
OCR student in the served version, the OCR pool reads with it, as the worker does, and once more
without it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import os
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import psutil
from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import TopicPartition

from bench.e2e.traffic import Camera, Frames
from oanet.preprocess import param_arrays
from oanet.settings import Settings
from stream.kafka_clients import consumer_config, producer_config
from stream.topics import create_topics
from stream.triton_client import TritonClient
from stream.worker import ocr_stage
from stream.worker.frames import Frame, SourceRef
from stream.worker.messages import ModelOutputs, Verdict
from stream.worker.ocr_stage import executor_pids
from stream.worker.repository import ocr_settings_for, student_server_for

STAGES = ("consume", "decode", "ocr pool", "inference", "produce")
# With an OCR student in the served version: the OCR pool once more, PaddleOCR reading every line.
OCR_POOL_PADDLE = "ocr pool, PaddleOCR only"


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


WORKER = "worker"
OCR_PROCESSES = "OCR processes"


def _own_cpu(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
    except psutil.Error:
        return 0.0
    return times.user + times.system


def _family(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def cpu_seconds_by_process(worker_pid: int, services: Mapping[str, int]) -> dict[str, float]:
    """CPU time so far, user + system, of the worker's own process (WORKER), of the processes
    it started (OCR_PROCESSES) and of each service with everything it started (by name). Where
    the end-to-end CPU per frame goes: the OCR pool, Triton, the worker's loop or the broker.
    A process that ended before the call is not counted."""
    family = _family(worker_pid)
    seconds = {WORKER: sum(_own_cpu(p) for p in family[:1]), OCR_PROCESSES: sum(_own_cpu(p) for p in family[1:])}
    for name, pid in services.items():
        seconds[name] = sum(_own_cpu(p) for p in _family(pid))
    return seconds


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes and of everything they started, so far."""
    processes = {p.pid: p for pid in pids for p in _family(pid)}
    return sum(_own_cpu(p) for p in processes.values())


def pool_stage(name: str, how: str, executor: concurrent.futures.Executor, call: Callable, frames: Frames,
                infos: list, in_flight: int, seconds: float, keep: list | None = None) -> Stage:
    """Run `call(payload, info)` in the pool, `in_flight` at a time, for `seconds` (after a warm-up)."""
    warmup_s = min(3.0, seconds / 3)
    start = time.monotonic()
    measure_from, until = start + warmup_s, start + warmup_s + seconds
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


class StageBench:
    """The stages alone on one set of frames: `measure(name)` runs one of STAGES (again after the
    end-to-end run too). The OCR pool stage keeps its prepared frames for inference and produce,
    so it must run before them."""

    def __init__(self, settings: Settings, frames: Frames, infos: list, exported, seconds: float,
                 ocr_processes: int, window: int):
        self.settings, self.frames, self.infos, self.exported = settings, frames, infos, exported
        self.seconds, self.processes, self.window = seconds, ocr_processes, window
        # The worker's OCR settings: with the student exported with the served version, if any.
        ocr = ocr_settings_for(settings, exported.model)
        self.config = ocr_stage.StageConfig(exported.profile, ocr, exported.model.image_size,
                                            student_server_for(settings, ocr, exported.model, exported.profile))
        self.prepared: list = []

    @property
    def student(self) -> bool:
        return self.config.ocr.recognizer is not None or self.config.student_server is not None

    def measure(self, name: str) -> Stage:
        processes = self.processes
        if name == "consume":
            average = sum(len(p) for p in self.frames.payloads) / len(self.frames)
            return consume_stage(self.settings, self.frames, int(min(50 * self.seconds, 256 * 2**20 // average)))
        if name == "decode":
            return self._in_pool(name, f"{processes} pool process(es): decode, fit to the profile, object ROI",
                                 ocr_stage.decode_only)
        if name == "ocr pool":
            return self._in_pool(name, f"{processes} pool process(es): decode + OCR + ROI (the worker's stage)",
                                 ocr_stage.read_frame, keep=self.prepared)
        if name == OCR_POOL_PADDLE:
            return self._in_pool(name, f"{processes} pool process(es): the same, without the OCR student",
                                 ocr_stage.read_frame, config=self._paddle_only())
        if name == "inference":
            return inference_stage(self.settings, self.prepared, self.window, self.seconds)
        if name == "produce":
            message = verdict_bytes(self.prepared[0], self.infos[0], self.exported, self.settings)
            return produce_stage(self.settings, message, self.window, self.seconds)
        raise ValueError(f"unknown stage {name!r}")

    def _paddle_only(self) -> ocr_stage.StageConfig:
        return dataclasses.replace(self.config, ocr=self.config.ocr.model_copy(update={"recognizer": None}))

    def _in_pool(self, name: str, how: str, call: Callable, keep: list | None = None,
                 config: ocr_stage.StageConfig | None = None) -> Stage:
        executor = ocr_stage.make_executor(config or self.config, self.processes)
        try:
            for future in [executor.submit(ocr_stage.warm_up) for _ in range(self.processes)]:
                future.result(timeout=300)
            return pool_stage(name, how, executor, call, self.frames, self.infos, 2 * self.processes, self.seconds,
                              keep)
        finally:
            ocr_stage.shutdown_executor(executor)


def inference_stage(settings: Settings, prepared: list, window: int, seconds: float) -> Stage:
    return asyncio.run(_inference(settings, prepared, window, seconds))


async def _inference(settings: Settings, prepared: list, window: int, seconds: float) -> Stage:
    async with TritonClient(settings.triton) as client:
        await client.wait_ready()
        model = await client.model_info()
        inputs = [(p.roi[None], *param_arrays([p.record.params], model.feature_names)) for p in prepared]
        loop = asyncio.get_running_loop()
        measure_from = loop.time() + min(3.0, seconds / 3)
        until = measure_from + seconds
        counts = await asyncio.gather(*(_back_to_back(client, inputs, k, window, measure_from, until)
                                        for k in range(window)))
        return Stage("inference", sum(counts), loop.time() - measure_from,
                     f"Triton via the stream client, {window} frames in flight, one frame per request")


async def _back_to_back(client: TritonClient, inputs: list, offset: int, step: int, measure_from: float,
                        until: float) -> int:
    """One in-flight slot: inputs offset, offset + step, ... until `until`; returns how many
    finished after `measure_from`."""
    loop = asyncio.get_running_loop()
    index, counted = offset, 0
    while loop.time() < until:
        await client.infer(*inputs[index % len(inputs)])
        index += step
        if loop.time() >= measure_from:
            counted += 1
    return counted


def produce_stage(settings: Settings, message: bytes, window: int, seconds: float) -> Stage:
    """Verdict messages to a topic of their own (the verdicts topic is the end-to-end run's)."""
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


def consume_stage(settings: Settings, frames: Frames, count: int) -> Stage:
    """Fetch `count` frames that were produced beforehand, with one consumer."""
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


def verdict_bytes(prepared, info, exported, settings: Settings) -> bytes:
    """A real verdict message of the bench's model and frames (the produce stage sends copies)."""
    n = len(exported.model.feature_names)
    outputs = ModelOutputs(0.123456, (0.1, 0.2, 0.3), (0.2, 0.3, 0.5), (1.5, 0.5 * n))
    frame = Frame(source=SourceRef(settings.topics.frames, 0, 123456), key=None, value=b"", headers=(),
                  frame_id="bench-frame-000001", line_id=exported.profile.name, captured_at=None,
                  profile=exported.profile.name, image=info)
    return Verdict.build(frame, prepared.record, outputs, threshold=exported.model.threshold,
                         model_name=exported.model.name, model_version=str(exported.model.version),
                         timings_ms={"queue": 1.0, "decode": 10.0, "ocr": 100.0, "inference": 10.0, "total": 121.0},
                         worker=f"bench:{os.getpid()}").encode()
