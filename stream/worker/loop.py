"""The stream worker's I/O shell: Kafka in, OCR pool, model server, Kafka out, commits.

Threads and who owns what:

* the main thread owns the KafkaConsumer (not thread-safe): poll, pause/resume, commit and the
  rebalance callbacks all run there;
* an asyncio loop on its own thread runs one coroutine per frame: OCR in the process pool,
  inference through the `InferenceGate`, produce, acknowledgement;
* the KafkaProducer's I/O thread acknowledges sends; acknowledgements hop back to the loop.

At-least-once: a frame's offset is tracked by the `Checkpoint` when it is consumed and marked
done only when its verdict or dead letter is acknowledged by the broker (acks=all, idempotent
producer). The main thread commits the committable prefix of each partition every
`commit_interval_s`, on revocation and at shutdown. A frame that has not been acknowledged is
never covered by a commit, whatever happens to the process.

Backpressure: at most `window` frames are in flight; when the window is full, or the model
server is unavailable, or the worker is stopping, every assigned partition is paused (the
consumer keeps polling, so group membership and rebalance callbacks keep working).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import functools
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from kafka import AsyncConsumerRebalanceListener, KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition
from tenacity import AsyncRetrying, retry_if_not_exception_type, wait_exponential

from oanet.contracts import STAGE_DECODE, STAGE_INFERENCE, STAGE_OCR, STAGE_PRODUCE, DeadLetterCode
from oanet.profile import LineProfile
from oanet.settings import Settings
from stream.kafka_clients import any_reachable, consumer_config, producer_config
from stream.ocr.errors import OcrError
from stream.worker import ocr_stage
from stream.worker.checkpoint import Checkpoint, CheckpointError, Ticket
from stream.worker.errors import FrameRejected, WorkerError
from stream.worker.frames import Frame, FramePolicy, SourceRef, admit, frame_id_of, normalize_headers
from stream.worker.inference import Inference, InferenceRejected, ServedModel, TritonUnavailable
from stream.worker.repository import served_profile
from stream.worker.messages import DeadLetter, ModelOutputs, Verdict, utc_now
from stream.worker.metrics import MetricsServer, WorkerMetrics
from triton_models.oanet_fusion.core import param_arrays

log = logging.getLogger("stream.worker")

# An OCR process that dies (segfault, OOM) breaks the pool; the frame is retried in a fresh
# pool this many times before it is dead-lettered as the likely cause.
OCR_CRASH_ATTEMPTS = 3
# The main thread iterates at least every poll timeout; longer than this without a turn
# (plus the revocation deadline) means it is stuck: /live answers 503.
LIVENESS_SLACK_S = 60.0


class ProduceFailed(WorkerError):
    """The broker did not acknowledge an output message: the worker stops without committing it."""


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


class AsyncRunner:
    """An asyncio loop on a daemon thread; the synchronous side submits coroutines to it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="oanet-worker-loop", daemon=True)
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float | None = None) -> Any:
        return self.submit(coro).result(timeout)

    def stop(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self.loop.is_running():
            try:
                self.run(cancel_all(), timeout=10)
            except (concurrent.futures.TimeoutError, RuntimeError):
                pass
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
        if not self.loop.is_running():
            self.loop.close()


class ModelChanged(WorkerError):
    """The server came back with another model version than the one this worker prepares
    frames and writes verdicts for."""


class InferenceGate:
    """The model server behind a readiness gate (a circuit breaker).

    While the server answers, calls go straight through. The first `TritonUnavailable` closes
    the gate: waiting calls park, one prober asks `is_ready` with exponential backoff, and the
    gate reopens when the server is ready and still serves the model the worker started with;
    parked calls then retry. A frame is never failed for the server's fault; the worker pauses
    consumption while the gate is closed. A server back with another version keeps the gate
    closed and calls `on_model_changed`: frames prepared and verdicted for the old version must
    not be mixed with the new one's answers (the next worker start reads the new version).
    """

    def __init__(self, backend: Inference, initial_s: float, max_s: float, metrics: WorkerMetrics,
                 on_change: Callable[[bool], None], on_model_changed: Callable[[ModelChanged], None]):
        self.backend = backend
        self.model: ServedModel | None = None
        self._initial_s = initial_s
        self._max_s = max_s
        self._metrics = metrics
        self._on_change = on_change
        self._on_model_changed = on_model_changed
        self._open = asyncio.Event()
        self._prober: asyncio.Task | None = None

    @property
    def available(self) -> bool:
        return self._open.is_set()

    async def start(self, timeout_s: float, where: str) -> ServedModel:
        """Wait for the server, read the served model's facts and open the gate."""
        try:
            await self.backend.wait_ready(timeout_s)
            self.model = await self.backend.model_info()
        except TritonUnavailable as exc:
            raise WorkerError(f"the model server at {where} is not usable: {exc}") from None
        self._set(True)
        return self.model

    def _set(self, available: bool) -> None:
        if available:
            self._open.set()
        else:
            self._open.clear()
        self._metrics.inference_available.set(1 if available else 0)
        self._on_change(available)

    async def infer(self, rois: np.ndarray, values: np.ndarray, missing: np.ndarray) -> dict[str, np.ndarray]:
        while True:
            await self._open.wait()
            try:
                return await self.backend.infer(rois, values, missing)
            except TritonUnavailable as exc:
                self._metrics.inference_retries.inc()
                if self._open.is_set():
                    log.warning("model server unavailable: pausing consumption until it is ready",
                                extra={"reason": str(exc)})
                    self._set(False)
                if self._prober is None or self._prober.done():
                    self._prober = asyncio.create_task(self._probe())

    async def _probe(self) -> None:
        retrying = AsyncRetrying(
            wait=wait_exponential(multiplier=self._initial_s, min=self._initial_s, max=self._max_s),
            retry=retry_if_not_exception_type(ModelChanged),
            before_sleep=lambda state: log.info(
                "model server still unavailable", extra={"attempt": state.attempt_number,
                                                         "retry_in_s": round(state.next_action.sleep, 2)}),
        )
        try:
            await retrying(self._check_ready)
        except ModelChanged as exc:
            self._on_model_changed(exc)
            return
        log.info("model server ready again: resuming consumption")
        self._set(True)

    async def _check_ready(self) -> None:
        if not await self.backend.is_ready():
            raise TritonUnavailable("not ready")
        served = await self.backend.model_info(refresh=True)
        if self.model is not None and _facts(served) != _facts(self.model):
            raise ModelChanged(f"the model server came back with {served.name} version {served.version} "
                               f"(threshold {served.threshold:g}, {served.image_size} px, features "
                               f"{list(served.feature_names)}), but this worker was started for version "
                               f"{self.model.version}: restart the worker to use the new version")


def _facts(model: ServedModel) -> tuple:
    """What a verdict depends on besides the frame: same facts, same verdicts."""
    return model.version, model.image_size, model.feature_names, model.threshold


class _Rebalance(AsyncConsumerRebalanceListener):
    """Rebalance callbacks. kafka-python 3 runs them on its IO thread, where a blocking
    consumer call (commit) would deadlock; the commit is awaited on that loop instead."""

    def __init__(self, worker: StreamWorker):
        self._worker = worker

    async def on_partitions_revoked(self, revoked):
        final = self._worker._revoke(set(revoked))
        if final:
            await self._worker._commit_on_io_thread(final, "revocation")

    async def on_partitions_lost(self, lost):
        self._worker._revoke(set(lost), lost=True)

    async def on_partitions_assigned(self, assigned):
        self._worker._on_assigned(set(assigned))


def _resolve(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class StreamWorker:
    """A consumer-group member of the frames topic that writes verdicts and dead letters.

    `inference` creates the model-server client; it is called on the worker's asyncio loop.
    `run()` blocks until `stop()` (or a signal, see `install_signal_handlers`), drains and
    returns; a fatal error (broker refuses an output) raises WorkerError after cleanup.
    """

    def __init__(self, settings: Settings, inference: Callable[[], Inference], *,
                 profile: LineProfile | None = None, group_id: str | None = None,
                 metrics: WorkerMetrics | None = None):
        self.settings = settings
        self.ws = settings.worker
        self.group_id = group_id or self.ws.group_id
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self.metrics = metrics or WorkerMetrics()
        self._inference_factory = inference
        self._profile_override = profile
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._checkpoint = Checkpoint()
        self._jobs: set[Job] = set()
        self._fatal: BaseException | None = None
        self._inference_down = threading.Event()
        self._assigned: set[TopicPartition] = set()
        self._stopping = False
        self._started = threading.Event()
        self._last_turn = time.monotonic()
        self._counts = {"frames": 0, "verdicts": 0, "dead_letters": 0}
        self._runner: AsyncRunner | None = None
        self._gate: InferenceGate | None = None
        self._ocr: concurrent.futures.Executor | None = None
        self._ocr_generation = 0
        self._ocr_lock: asyncio.Lock | None = None
        self._send_executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._producer: KafkaProducer | None = None
        self._consumer: KafkaConsumer | None = None
        self._server: MetricsServer | None = None
        self.profile: LineProfile | None = None
        self.policy: FramePolicy | None = None
        self.model: ServedModel | None = None

    # ---------------------------------------------------------------- control

    def stop(self) -> None:
        """Ask the worker to stop fetching, finish in-flight frames, commit and close."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """Asked to stop (stop(), a signal) or stopping on its own after a fatal error."""
        return self._stop.is_set()

    @property
    def started(self) -> threading.Event:
        """Set once the worker consumes (clients connected, model ready, OCR warm)."""
        return self._started

    @property
    def in_flight(self) -> int:
        """Frames consumed and not yet acknowledged."""
        return self._in_flight()

    @property
    def assignment(self) -> set[TopicPartition]:
        """Partitions this worker owns now (empty until the group join completes)."""
        return set(self._assigned)

    @property
    def metrics_port(self) -> int | None:
        return self._server.port if self._server is not None else None

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT: drain and exit within worker.drain_timeout_s; a second SIGINT exits at once."""

        def graceful(signum, _frame):
            if signum == signal.SIGINT and self._stop.is_set():
                log.warning("second interrupt: exiting at once without draining or committing")
                logging.shutdown()
                os._exit(130)
            log.info("stopping: draining in-flight frames", extra={"signal": signal.Signals(signum).name,
                                                                    "deadline_s": self.ws.drain_timeout_s})
            self.stop()

        signal.signal(signal.SIGTERM, graceful)
        signal.signal(signal.SIGINT, graceful)

    def live(self) -> bool:
        return time.monotonic() - self._last_turn < LIVENESS_SLACK_S + self.ws.revoke_timeout_s

    def ready(self) -> bool:
        return self._started.is_set() and not self._inference_down.is_set() and not self._stop.is_set()

    # ---------------------------------------------------------------- run

    def run(self) -> None:
        try:
            self._start()
            self._consume()
            self._drain()
        except KafkaError as exc:  # e.g. authorization, an unknown group coordinator for good
            self._fail(WorkerError(f"Kafka error: {type(exc).__name__}: {exc}"))
        finally:
            self._close()
        if self._fatal is not None:
            raise WorkerError(str(self._fatal)) from None

    def _start(self) -> None:
        s = self.settings
        bootstrap = s.kafka.client_kwargs()["bootstrap_servers"]
        if not any_reachable(bootstrap):
            raise WorkerError(f"no Kafka broker answers at {s.kafka.bootstrap_servers} (is the stack up? "
                              "`oanet stack status`)")
        self._runner = AsyncRunner()
        backend = self._runner.run(self._create_backend(), timeout=self.ws.startup_timeout_s)
        self._gate = InferenceGate(backend, self.ws.retry_initial_s, self.ws.retry_max_s, self.metrics,
                                   self._inference_state, self._fail)
        where = s.triton.url if self.ws.inference == "triton" else str(s.stack.model_repository)
        self.model = self._runner.run(self._gate.start(self.ws.startup_timeout_s, where))
        self.profile = self._profile_override or self._served_profile()
        numeric = tuple(f.name for f in self.profile.fields if f.kind == "number")
        if numeric != tuple(self.model.feature_names):
            raise WorkerError(f"line profile {self.profile.name!r} has number fields {list(numeric)}, but model "
                              f"{self.model.name} version {self.model.version} takes {list(self.model.feature_names)}")
        self.policy = FramePolicy(
            max_bytes=s.topics.max_frame_bytes,
            max_pixels=self.ws.max_pixels,
            color_models=frozenset(self.ws.color_models),
            profiles=frozenset({self.profile.name}),
            default_profile=self.profile.name,
            required_headers=frozenset(self.ws.required_headers),
        )
        self._send_executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="oanet-send")
        try:
            self._producer = KafkaProducer(**producer_config(s, enable_idempotence=True))
            self._consumer = KafkaConsumer(**consumer_config(s, self.group_id))
            missing = sorted({s.topics.frames, s.topics.verdicts, s.topics.dead_letter} - self._consumer.topics())
        except KafkaError as exc:
            raise WorkerError(f"cannot connect to Kafka at {s.kafka.bootstrap_servers}: {exc}") from None
        if missing:
            raise WorkerError(f"topic(s) {', '.join(missing)} do not exist; create them with `oanet topics create`")
        self._start_ocr()  # seconds of model loading: after the quick checks, before joining the group
        self._consumer.subscribe([s.topics.frames], listener=_Rebalance(self))
        if self.ws.metrics_port:
            self._server = MetricsServer(self.metrics, self.ws.metrics_host, self.ws.metrics_port, self.live,
                                         self.ready)
        self.metrics.model.info({"name": self.model.name, "version": str(self.model.version),
                                 "profile": self.profile.name, "threshold": str(self.model.threshold)})
        self._started.set()
        log.info("worker started", extra={
            "worker": self.worker_id, "group": self.group_id, "frames_topic": s.topics.frames,
            "model": f"{self.model.name}/{self.model.version}", "profile": self.profile.name,
            "inference": self.ws.inference, "ocr_processes": self.ws.ocr_processes, "window": self.ws.window,
            "metrics_port": self.metrics_port})

    def _served_profile(self) -> LineProfile:
        """The line profile the served version publishes (stream.worker.repository)."""
        assert self.model is not None
        return served_profile(self.model)

    async def _create_backend(self) -> Inference:
        self._ocr_lock = asyncio.Lock()
        return self._inference_factory()

    def _start_ocr(self) -> None:
        assert self.model is not None and self.profile is not None
        config = ocr_stage.StageConfig(self.profile, self.settings.ocr, self.model.image_size)
        self._ocr = ocr_stage.make_executor(config, self.ws.ocr_processes)
        self._ocr_generation += 1
        warmups = [self._ocr.submit(ocr_stage.warm_up) for _ in range(max(1, self.ws.ocr_processes))]
        try:
            for future in warmups:
                future.result(timeout=self.ws.startup_timeout_s)
        except concurrent.futures.TimeoutError:
            raise WorkerError(f"the OCR stage did not start within {self.ws.startup_timeout_s:.0f} s") from None
        except OcrError as exc:
            raise WorkerError(f"the OCR stage cannot start: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - a dead process or an unexpected start-up failure
            raise WorkerError(f"the OCR stage cannot start: {type(exc).__name__}: {exc}") from None

    def _inference_state(self, available: bool) -> None:
        if available:
            self._inference_down.clear()
        else:
            self._inference_down.set()

    # ---------------------------------------------------------------- consume

    def _consume(self) -> None:
        assert self._consumer is not None
        next_commit = time.monotonic() + self.ws.commit_interval_s
        next_status = time.monotonic() + self.ws.status_interval_s
        while not self._stop.is_set() and self._fatal is None:
            self._last_turn = time.monotonic()
            room = self._apply_pause()
            batches = self._consumer.poll(timeout_ms=self.ws.poll_timeout_ms, max_records=max(1, room))
            for records in batches.values():
                for record in records:
                    self._admit(record)
            now = time.monotonic()
            if now >= next_commit:
                self._commit(self._to_commit(), "interval")
                self._update_lag()
                next_commit = now + self.ws.commit_interval_s
            if now >= next_status:
                self._status()
                next_status = now + self.ws.status_interval_s

    def _in_flight(self, tps: set[TopicPartition] | None = None) -> int:
        with self._lock:
            return len(self._jobs) if tps is None else self._checkpoint.in_flight(tps)

    def _apply_pause(self) -> int:
        """Pause every assigned partition while the window is full, the model server is
        unavailable or the worker stops; resume otherwise. Returns the room in the window."""
        assert self._consumer is not None
        room = self.ws.window - self._in_flight()
        assigned = self._consumer.assignment()
        hold = room <= 0 or self._inference_down.is_set() or self._stopping
        want = set(assigned) if hold else set()
        paused = set(self._consumer.paused())
        if want - paused:
            self._consumer.pause(*(want - paused))
        if (paused - want) & assigned:
            self._consumer.resume(*((paused - want) & assigned))
        self.metrics.paused.set(len(want))
        self.metrics.in_flight.set(self.ws.window - room)
        return room

    def _admit(self, record) -> None:
        assert self._runner is not None and self.policy is not None
        tp = TopicPartition(record.topic, record.partition)
        if tp not in self._assigned:
            return  # fetched before a rebalance took the partition away: its new owner reads it
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
        self.metrics.frames.inc()
        self._counts["frames"] += 1
        try:
            job.frame = admit(source, record.key, record.value, record.headers, self.policy)
        except FrameRejected as exc:
            self._runner.submit(self._dead_letter(job, exc.code, exc.stage, exc.message))
            return
        for name in job.frame.ignored_headers:
            self.metrics.ignored_headers.labels(name).inc()
            log.warning("ignored a malformed header (not required by worker.required_headers)",
                        extra=job.log_fields(header=name))
        self._runner.submit(self._process(job))

    # ---------------------------------------------------------------- per frame (asyncio loop)

    async def _process(self, job: Job) -> None:
        assert job.frame is not None and self.model is not None and self._gate is not None
        stage = STAGE_DECODE  # where an unexpected error happened, for its dead letter
        try:
            try:
                prepared = await self._prepare(job)
                stage = STAGE_INFERENCE
                values, missing = param_arrays([prepared.record.params], self.model.feature_names)
                started = time.monotonic()
                outputs = await self._gate.infer(prepared.roi[None], values, missing)
                inference_ms = (time.monotonic() - started) * 1000
                self.metrics.stage_seconds.labels(STAGE_INFERENCE).observe(inference_ms / 1000)
                row = ModelOutputs.row(outputs, 0)
                stage = STAGE_PRODUCE
                total_ms = (time.monotonic() - job.received) * 1000
                known = prepared.decode_ms + prepared.ocr_ms + inference_ms
                verdict = Verdict.build(
                    job.frame, prepared.record, row, threshold=self.model.threshold, model_name=self.model.name,
                    model_version=str(self.model.version), worker=self.worker_id,
                    timings_ms={"queue": max(0.0, total_ms - known), STAGE_DECODE: prepared.decode_ms,
                                STAGE_OCR: prepared.ocr_ms, STAGE_INFERENCE: inference_ms, "total": total_ms},
                )
                encoded = verdict.encode()
            except FrameRejected as exc:
                await self._dead_letter(job, exc.code, exc.stage, exc.message)
                return
            except InferenceRejected as exc:
                await self._dead_letter(job, DeadLetterCode.INFERENCE_REJECTED, STAGE_INFERENCE, str(exc))
                return
            except ProduceFailed:
                raise
            except Exception as exc:  # noqa: BLE001 - a bug met this frame: keep it for a replay after the fix
                log.exception("unexpected error; dead-lettering the frame", extra=job.log_fields())
                await self._dead_letter(job, DeadLetterCode.INTERNAL_ERROR, stage, f"{type(exc).__name__}: {exc}")
                return
            await self._produce(self.settings.topics.verdicts, verdict.key, encoded, verdict.headers, job)
            self._acked(job)
            self.metrics.verdicts.labels(verdict.verdict).inc()
            self.metrics.observe_verdict(len(prepared.record.missing), len(prepared.record.readings),
                                         row.gate_weights)
            self._counts["verdicts"] += 1
            log.debug("verdict", extra=job.log_fields(verdict=verdict.verdict,
                                                      defect_probability=round(row.defect_probability, 4)))
        except ProduceFailed as exc:
            self._fail(exc)

    async def _prepare(self, job: Job) -> ocr_stage.Prepared:
        """The OCR stage in the pool; a crashed pool is replaced and the frame retried."""
        assert job.frame is not None and self._ocr_lock is not None
        loop = asyncio.get_running_loop()
        for attempt in range(1, OCR_CRASH_ATTEMPTS + 1):
            executor, generation = self._ocr, self._ocr_generation
            try:
                prepared = await loop.run_in_executor(executor, ocr_stage.prepare, job.frame.value, job.frame.image)
            except concurrent.futures.process.BrokenProcessPool:
                log.error("an OCR process died; restarting the OCR pool", extra=job.log_fields(attempt=attempt))
                async with self._ocr_lock:
                    if generation == self._ocr_generation:  # first to notice: replace it once
                        await loop.run_in_executor(None, self._restart_ocr, executor)
                continue
            self.metrics.stage_seconds.labels(STAGE_DECODE).observe(prepared.decode_ms / 1000)
            self.metrics.stage_seconds.labels(STAGE_OCR).observe(prepared.ocr_ms / 1000)
            return prepared
        raise FrameRejected(DeadLetterCode.INTERNAL_ERROR, STAGE_OCR,
                            f"an OCR process died on each of {OCR_CRASH_ATTEMPTS} attempts at this frame")

    def _restart_ocr(self, broken: concurrent.futures.Executor) -> None:
        ocr_stage.shutdown_executor(broken)
        self._start_ocr()

    async def _dead_letter(self, job: Job, code: str, stage: str, message: str) -> None:
        letter = DeadLetter(job.source, job.frame_id, job.key, job.value, job.headers, code, stage, message)
        log.warning("dead letter", extra=job.log_fields(code=code, stage=stage, reason=message))
        try:
            await self._produce(self.settings.topics.dead_letter, letter.key, letter.value, letter.headers, job)
        except ProduceFailed as exc:
            self._fail(exc)
            return
        self._acked(job)
        self.metrics.dead_letters.labels(code).inc()
        self._counts["dead_letters"] += 1

    async def _produce(self, topic: str, key: bytes | None, value: bytes | None,
                       headers: list[tuple[str, bytes]], job: Job) -> None:
        """Send and wait for the broker's acknowledgement (acks=all)."""
        assert self._producer is not None
        loop = asyncio.get_running_loop()
        acked: asyncio.Future = loop.create_future()
        started = time.monotonic()
        send = functools.partial(self._producer.send, topic, value=value, key=key, headers=headers)
        try:
            # send() blocks while it fetches topic metadata or the buffer is full: off the loop.
            future = await loop.run_in_executor(self._send_executor, send)
        except KafkaError as exc:
            raise ProduceFailed(f"cannot produce frame {job.frame_id} to {topic}: {exc}") from None
        future.add_callback(lambda md: loop.call_soon_threadsafe(_resolve, acked, md, None))
        future.add_errback(lambda err: loop.call_soon_threadsafe(_resolve, acked, None, err))
        try:
            await acked
        except KafkaError as exc:
            raise ProduceFailed(f"the broker did not acknowledge frame {job.frame_id} on {topic}: {exc}") from None
        self.metrics.stage_seconds.labels(STAGE_PRODUCE).observe(time.monotonic() - started)

    def _acked(self, job: Job) -> None:
        with self._lock:
            self._checkpoint.complete(job.ticket)
            self._jobs.discard(job)
        captured = job.frame.captured_at if job.frame is not None else None
        if captured is None and job.timestamp_ms is not None and job.timestamp_ms > 0:
            captured = dt.datetime.fromtimestamp(job.timestamp_ms / 1000, dt.timezone.utc)
        if captured is not None:
            seconds = (utc_now() - captured).total_seconds()
            if seconds >= 0:
                self.metrics.end_to_end.observe(seconds)

    def _fail(self, exc: BaseException) -> None:
        if self._fatal is None:
            self._fatal = exc
            log.error("stopping: %s", exc)
        self._stop.set()

    # ---------------------------------------------------------------- commits and rebalances

    def _to_commit(self) -> dict[TopicPartition, int]:
        with self._lock:
            return self._checkpoint.to_commit(set(self._assigned))

    def _commit(self, offsets: dict[TopicPartition, int], reason: str) -> bool:
        if not offsets:
            return True
        assert self._consumer is not None
        try:
            self._consumer.commit({tp: OffsetAndMetadata(offset, "", -1) for tp, offset in offsets.items()})
        except KafkaError as exc:
            # Not fatal: the frames stay uncommitted and are verdicted again by whoever owns
            # the partition next (at-least-once), with identical verdicts.
            self.metrics.commits.labels("failed").inc()
            log.warning("commit failed", extra={"reason": reason, "error": str(exc),
                                                "offsets": {str(tp): o for tp, o in offsets.items()}})
            return False
        with self._lock:
            self._checkpoint.committed(offsets)
        self.metrics.commits.labels("ok").inc()
        log.debug("committed", extra={"reason": reason,
                                      "offsets": {f"{tp.topic}[{tp.partition}]": o for tp, o in offsets.items()}})
        return True

    def _revoke(self, revoked: set[TopicPartition], lost: bool = False) -> dict[TopicPartition, int]:
        """Close revoked partitions; returns their acknowledged positions to commit.

        Their in-flight frames get `revoke_timeout_s` to finish first (this blocks the
        consumer's IO thread, heartbeats included: keep it well under the session timeout).
        Frames still in flight afterwards are verdicted anyway; their partition's next owner
        consumes them again (identical duplicates). Lost partitions (evicted member) cannot
        be committed: their state is dropped.
        """
        if not revoked:
            return {}
        if not lost and not self._stopping:
            deadline = time.monotonic() + self.ws.revoke_timeout_s
            while self._in_flight(revoked) and time.monotonic() < deadline and self._fatal is None:
                time.sleep(0.02)
        with self._lock:
            abandoned = self._checkpoint.in_flight(revoked)
            final = self._checkpoint.revoke(revoked)
        for tp in revoked:
            try:
                self.metrics.lag.remove(tp.topic, str(tp.partition))
            except KeyError:
                pass
        self._assigned = self._assigned - revoked  # a new set: the main thread may be iterating the old one
        log.info("partitions lost" if lost else "partitions revoked",
                 extra={"partitions": _names(revoked), "abandoned_in_flight": abandoned,
                        "to_commit": {f"{tp.topic}[{tp.partition}]": o for tp, o in final.items()}})
        return {} if lost else final

    async def _commit_on_io_thread(self, offsets: dict[TopicPartition, int], reason: str) -> None:
        assert self._consumer is not None
        try:
            await self._consumer.commit_async({tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()})
        except Exception as exc:  # noqa: BLE001 - kafka-python fails futures with several types
            self.metrics.commits.labels("failed").inc()
            log.warning("commit failed", extra={"reason": reason, "error": str(exc)})
            return
        self.metrics.commits.labels("ok").inc()
        log.info("committed", extra={"reason": reason,
                                     "offsets": {f"{tp.topic}[{tp.partition}]": o for tp, o in offsets.items()}})

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        self._assigned = set(assigned)
        log.info("partitions assigned", extra={"partitions": _names(assigned), "group": self.group_id})

    def _update_lag(self) -> None:
        assert self._consumer is not None
        for tp in list(self._assigned):
            end = self._consumer.highwater(tp)
            with self._lock:
                position = self._checkpoint.position(tp)
            if end is not None and position is not None:
                self.metrics.lag.labels(tp.topic, str(tp.partition)).set(max(0, end - position))

    def _status(self) -> None:
        log.info("status", extra={**self._counts, "in_flight": self._in_flight(), "assigned": _names(self._assigned),
                                  "inference_available": not self._inference_down.is_set()})

    # ---------------------------------------------------------------- stop

    def _drain(self) -> None:
        """Stop fetching, let in-flight frames finish until the deadline, commit what is acknowledged."""
        if self._consumer is None:
            return
        self._stopping = True
        self._apply_pause()
        deadline = time.monotonic() + self.ws.drain_timeout_s
        log.info("draining", extra={"in_flight": self._in_flight(), "deadline_s": self.ws.drain_timeout_s})
        while self._in_flight() and time.monotonic() < deadline and self._fatal is None:
            self._last_turn = time.monotonic()
            time.sleep(0.02)
        abandoned = self._in_flight()
        final = self._to_commit()
        committed = self._commit(final, "shutdown")
        self._status()
        log.info("drained", extra={"abandoned_in_flight": abandoned, "final_commit_ok": committed,
                                   "committed": {f"{tp.topic}[{tp.partition}]": o for tp, o in final.items()}})

    def _close(self) -> None:
        """Close everything that was opened, whatever state the run ended in."""
        self._stopping = True  # the revocation callback of consumer.close() must not wait
        if self._runner is not None:
            if self._gate is not None:
                try:
                    self._runner.run(self._gate.backend.close(), timeout=10)
                except Exception:  # noqa: BLE001 - closing: log and go on with the rest
                    log.warning("closing the model client failed", exc_info=True)
            self._runner.stop()
        if self._ocr is not None:
            ocr_stage.shutdown_executor(self._ocr)
        if self._send_executor is not None:
            self._send_executor.shutdown(wait=False, cancel_futures=True)
        if self._producer is not None:
            self._producer.close(timeout=5 if self._fatal is None else 0)
        if self._consumer is not None:
            self._consumer.close(autocommit=False)
        if self._server is not None:
            self._server.close()
        log.info("worker stopped", extra={"worker": self.worker_id, **self._counts})


def _names(tps) -> list[str]:
    return sorted(f"{tp.topic}[{tp.partition}]" for tp in tps)
