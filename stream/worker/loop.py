"""The stream worker's consume loop: Kafka in, pause/resume, commits, start and stop.

`StreamWorker` composes the collaborators, each in its own module:

* `offsets.Offsets`: frames in flight around the `Checkpoint`, commits, rebalances;
* `pipeline.FramePipeline`: what one frame goes through (OCR, inference, verdict or dead
  letter, acknowledgement);
* `gate.InferenceGate`: the model server (outages pause, faults are isolated);
* `ocr_pool.OcrPool`: the OCR processes (deadline, restarts, suspects retried alone);
* `runner.AsyncRunner`: the asyncio loop the per-frame coroutines run on.

Threads and who owns what:

* the main thread owns the KafkaConsumer (not thread-safe): poll, pause/resume and commits run
  there; kafka-python 3 runs the rebalance callbacks on the consumer's IO thread;
* an asyncio loop on its own thread runs one coroutine per frame; each has a done-callback
  (`_frame_done`): whatever it raises stops the worker, so no frame stays in flight unnoticed;
* the KafkaProducer's I/O thread acknowledges sends; acknowledgements hop back to the loop.

At-least-once: a frame's offset is tracked by the `Checkpoint` when it is consumed and marked
done only when its verdict or dead letter is acknowledged by the broker (acks=all, idempotent
producer). The main thread commits the committable prefix of each partition every
`commit_interval_s`, on revocation and at shutdown. A frame that has not been acknowledged is
never covered by a commit, whatever happens to the process.

Backpressure: at most `window` frames are in flight; when the window is full, or the model
server is unavailable, or the worker is stopping, every assigned partition is paused (the
consumer keeps polling, so group membership and rebalance callbacks keep working).

About 400 lines on purpose: the consume loop and its lifecycle only; the per-frame pipeline,
offsets, gate, OCR pool and runner are the collaborators listed above.
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

from kafka import AsyncConsumerRebalanceListener, KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError
from kafka.structs import TopicPartition

from oanet.profile import LineProfile
from oanet.settings import Settings
from stream.kafka_clients import any_reachable, consumer_config, producer_config
from stream.worker import ocr_stage
from stream.worker.errors import FrameRejected, WorkerError
from stream.worker.frames import FramePolicy, admit
from stream.worker.gate import InferenceGate
from stream.worker.inference import Inference, ServedModel
from stream.worker.metrics import MetricsServer, WorkerMetrics
from stream.worker.ocr_pool import OcrPool
from stream.worker.offsets import Job, Offsets, names
from stream.worker.pipeline import FramePipeline, ProduceFailed
from stream.worker.repository import ocr_settings_for, served_profile, student_server_for
from stream.worker.runner import AsyncRunner

log = logging.getLogger("stream.worker")

# The main thread iterates at least every poll timeout; longer than this without a turn
# (plus the revocation deadline) means it is stuck: /live answers 503.
LIVENESS_SLACK_S = 60.0


class _Rebalance(AsyncConsumerRebalanceListener):
    """Rebalance callbacks. kafka-python 3 runs them on its IO thread, where a blocking
    consumer call (commit) would deadlock; the commit is awaited on that loop instead."""

    def __init__(self, worker: StreamWorker):
        self._worker = worker

    async def on_partitions_revoked(self, revoked):
        final = self._worker._revoke(set(revoked))
        if final:
            assert self._worker._consumer is not None
            await self._worker.offsets.commit_on_io_thread(self._worker._consumer, final, "revocation")

    async def on_partitions_lost(self, lost):
        self._worker._revoke(set(lost), lost=True)

    async def on_partitions_assigned(self, assigned):
        self._worker.offsets.assign(set(assigned), self._worker.group_id)


class StreamWorker:
    """A consumer-group member of the frames topic that writes verdicts and dead letters.

    `inference` creates the model-server client; it is called on the worker's asyncio loop.
    `run()` blocks until `stop()` (or a signal, see `install_signal_handlers`), drains and
    returns; a fatal error (broker refuses an output) raises WorkerError after cleanup.
    """

    def __init__(self, settings: Settings, inference: Callable[[], Inference], *,
                 profile: LineProfile | None = None, group_id: str | None = None,
                 metrics: WorkerMetrics | None = None,
                 ocr_stage_fn: Callable[[bytes, Any], ocr_stage.Prepared] = ocr_stage.read_frame):
        self.settings = settings
        self.worker_settings = settings.worker
        self.group_id = group_id or self.worker_settings.group_id
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self.metrics = metrics or WorkerMetrics()
        self._inference_factory = inference
        self._profile_override = profile
        self._stop = threading.Event()
        self.offsets = Offsets(self.metrics)
        self._fatal: BaseException | None = None
        self._inference_down = threading.Event()
        self._stopping = False
        self._started = threading.Event()
        self._last_turn = time.monotonic()
        self._counts = {"frames": 0, "verdicts": 0, "dead_letters": 0}
        self._runner: AsyncRunner | None = None
        self._gate: InferenceGate | None = None
        self._ocr: OcrPool | None = None
        self._ocr_stage_fn = ocr_stage_fn
        self._pipeline: FramePipeline | None = None
        self._send_executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._producer: KafkaProducer | None = None
        self._consumer: KafkaConsumer | None = None
        self._server: MetricsServer | None = None
        self.profile: LineProfile | None = None
        self.policy: FramePolicy | None = None
        self.model: ServedModel | None = None
        self.metrics.oldest_in_flight.set_function(self.offsets.oldest_age_s)

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
        return self.offsets.in_flight()

    @property
    def assignment(self) -> set[TopicPartition]:
        """Partitions this worker owns now (empty until the group join completes)."""
        return set(self.offsets.assigned)

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
                                                                    "deadline_s": self.worker_settings.drain_timeout_s})
            self.stop()

        signal.signal(signal.SIGTERM, graceful)
        signal.signal(signal.SIGINT, graceful)

    def live(self) -> bool:
        return time.monotonic() - self._last_turn < LIVENESS_SLACK_S + self.worker_settings.revoke_timeout_s

    def ready(self) -> bool:
        """Consuming, the model server answering, and no frame in flight past its deadline."""
        return (self._started.is_set() and not self._inference_down.is_set() and not self._stop.is_set()
                and self.offsets.oldest_age_s() <= self.worker_settings.frame_deadline_s)

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
        backend = self._runner.run(self._create_backend(), timeout=self.worker_settings.startup_timeout_s)
        self._gate = InferenceGate(backend, self.worker_settings.retry_initial_s,
                                   self.worker_settings.retry_max_s, self.metrics, self._inference_state,
                                   self._fail, self.worker_settings.inference_fault_attempts)
        where = s.triton.url if self.worker_settings.inference == "triton" else str(s.stack.model_repository)
        self.model = self._runner.run(self._gate.start(self.worker_settings.startup_timeout_s, where))
        self.profile = self._profile_override or self._served_profile()
        numeric = tuple(f.name for f in self.profile.fields if f.kind == "number")
        if numeric != tuple(self.model.feature_names):
            raise WorkerError(f"line profile {self.profile.name!r} has number fields {list(numeric)}, but model "
                              f"{self.model.name} version {self.model.version} takes {list(self.model.feature_names)}")
        self.policy = FramePolicy(
            max_bytes=s.topics.max_frame_bytes,
            max_pixels=self.worker_settings.max_pixels,
            color_models=frozenset(self.worker_settings.color_models),
            profiles=frozenset({self.profile.name}),
            default_profile=self.profile.name,
            required_headers=frozenset(self.worker_settings.required_headers),
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
        self._pipeline = FramePipeline(s, self.metrics, self.worker_id, self.model, self._gate, self._ocr,
                                       self._producer, self._send_executor, self.offsets, self._counts, self._fail)
        self._consumer.subscribe([s.topics.frames], listener=_Rebalance(self))
        if self.worker_settings.metrics_port:
            self._server = MetricsServer(self.metrics, self.worker_settings.metrics_host,
                                         self.worker_settings.metrics_port, self.live, self.ready)
        self.metrics.model.info({"name": self.model.name, "version": str(self.model.version),
                                 "profile": self.profile.name, "threshold": str(self.model.threshold)})
        self._started.set()
        student = self._ocr.config.ocr.recognizer if self._ocr is not None else None
        server = self._ocr.config.student_server if self._ocr is not None else None
        if server is not None:  # the network on Triton; its files here, or none (its calibration from there)
            student = f"{server.model} version {server.version} at {server.url}" + (f" ({student})" if student else "")
        log.info("worker started", extra={
            "worker": self.worker_id, "group": self.group_id, "frames_topic": s.topics.frames,
            "model": f"{self.model.name}/{self.model.version}", "profile": self.profile.name,
            "inference": self.worker_settings.inference, "ocr_processes": self.worker_settings.ocr_processes,
            "ocr_student": str(student) if student is not None else "none (PaddleOCR reads every line)",
            "ocr_student_inference": self.worker_settings.student_inference,
            "window": self.worker_settings.window,
            "metrics_port": self.metrics_port})

    def _served_profile(self) -> LineProfile:
        """The line profile the served version publishes (stream.worker.repository)."""
        assert self.model is not None
        return served_profile(self.model)

    async def _create_backend(self) -> Inference:
        return self._inference_factory()

    def _start_ocr(self) -> None:
        assert self.model is not None and self.profile is not None
        ocr = ocr_settings_for(self.settings, self.model)
        config = ocr_stage.StageConfig(self.profile, ocr, self.model.image_size,
                                       student_server_for(self.settings, ocr, self.model, self.profile))
        self._ocr = OcrPool(config, self.worker_settings.ocr_processes, self.worker_settings.ocr_timeout_s,
                            self.worker_settings.startup_timeout_s,
                            on_restart=lambda why: self.metrics.ocr_restarts.inc(), stage=self._ocr_stage_fn)
        self._ocr.start()

    def _inference_state(self, available: bool) -> None:
        if available:
            self._inference_down.clear()
        else:
            self._inference_down.set()

    # ---------------------------------------------------------------- consume

    def _consume(self) -> None:
        assert self._consumer is not None
        next_commit = time.monotonic() + self.worker_settings.commit_interval_s
        next_status = time.monotonic() + self.worker_settings.status_interval_s
        while not self._stop.is_set() and self._fatal is None:
            self._last_turn = time.monotonic()
            room = self._apply_pause()
            batches = self._consumer.poll(timeout_ms=self.worker_settings.poll_timeout_ms, max_records=max(1, room))
            for records in batches.values():
                for record in records:
                    self._admit(record)
            now = time.monotonic()
            if now >= next_commit:
                self.offsets.commit(self._consumer, self.offsets.to_commit(), "interval")
                self.offsets.update_lag(self._consumer)
                next_commit = now + self.worker_settings.commit_interval_s
            if now >= next_status:
                self._status()
                next_status = now + self.worker_settings.status_interval_s

    def _apply_pause(self) -> int:
        """Pause every assigned partition while the window is full, the model server is
        unavailable or the worker stops; resume otherwise. Returns the room in the window."""
        assert self._consumer is not None
        room = self.worker_settings.window - self.offsets.in_flight()
        assigned = self._consumer.assignment()
        hold = room <= 0 or self._inference_down.is_set() or self._stopping
        want = set(assigned) if hold else set()
        paused = set(self._consumer.paused())
        if want - paused:
            self._consumer.pause(*(want - paused))
        if (paused - want) & assigned:
            self._consumer.resume(*((paused - want) & assigned))
        self.metrics.paused.set(len(want))
        self.metrics.in_flight.set(self.worker_settings.window - room)
        return room

    def _admit(self, record) -> None:
        assert self._pipeline is not None and self.policy is not None
        job = self.offsets.track(record)
        if job is None:
            return
        self.metrics.frames.inc()
        self._counts["frames"] += 1
        try:
            job.frame = admit(job.source, record.key, record.value, record.headers, self.policy)
        except FrameRejected as exc:
            self._submit(job, self._pipeline.dead_letter(job, exc.code, exc.stage, exc.message))
            return
        for name in job.frame.ignored_headers:
            self.metrics.ignored_headers.labels(name).inc()
            log.warning("ignored a malformed header (not required by worker.required_headers)",
                        extra=job.log_fields(header=name))
        self._submit(job, self._pipeline.process(job))

    def _submit(self, job: Job, work: Coroutine[Any, Any, None]) -> None:
        """Run a frame's coroutine; whatever it raises stops the worker (nothing past it is committed)."""
        assert self._runner is not None
        self._runner.submit(work).add_done_callback(functools.partial(self._frame_done, job))

    def _frame_done(self, job: Job, future: concurrent.futures.Future) -> None:
        # The per-frame coroutine acknowledges an output or dead-letters on every path it
        # foresees; an exception reaching here is a failure of the worker itself: leaving the
        # frame in flight would freeze its partition's commits, so the worker stops instead.
        if future.cancelled():
            return  # the loop is being stopped: the frame stays uncommitted
        exc = future.exception()
        if exc is not None and not isinstance(exc, ProduceFailed):
            log.error("a frame's processing failed", exc_info=exc, extra=job.log_fields())
            exc = WorkerError(f"frame {job.frame_id} (partition {job.source.partition}, offset "
                              f"{job.source.offset}) could not be verdicted nor dead-lettered: "
                              f"{type(exc).__name__}: {exc}")
        if exc is not None:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        if self._fatal is None:
            self._fatal = exc
            log.error("stopping: %s", exc)
        self._stop.set()

    # ---------------------------------------------------------------- commits and rebalances

    def _revoke(self, revoked: set[TopicPartition], lost: bool = False) -> dict[TopicPartition, int]:
        """Revoked partitions: their in-flight frames get `revoke_timeout_s` (none while the
        worker stops or after a fatal error), then their acknowledged positions are returned."""
        wait_s = 0.0 if self._stopping else self.worker_settings.revoke_timeout_s
        return self.offsets.revoke(revoked, lost=lost, wait_s=wait_s, keep_waiting=lambda: self._fatal is None)

    def _status(self) -> None:
        log.info("status", extra={**self._counts, "in_flight": self.offsets.in_flight(),
                                  "assigned": names(self.offsets.assigned),
                                  "inference_available": not self._inference_down.is_set()})

    # ---------------------------------------------------------------- stop

    def _drain(self) -> None:
        """Stop fetching, let in-flight frames finish until the deadline, commit what is acknowledged."""
        if self._consumer is None:
            return
        self._stopping = True
        self._apply_pause()
        deadline = time.monotonic() + self.worker_settings.drain_timeout_s
        log.info("draining", extra={"in_flight": self.offsets.in_flight(),
                                    "deadline_s": self.worker_settings.drain_timeout_s})
        while self.offsets.in_flight() and time.monotonic() < deadline and self._fatal is None:
            self._last_turn = time.monotonic()
            time.sleep(0.02)
        abandoned = self.offsets.in_flight()
        final = self.offsets.to_commit()
        committed = self.offsets.commit(self._consumer, final, "shutdown")
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
            self._ocr.close()
        if self._send_executor is not None:
            self._send_executor.shutdown(wait=False, cancel_futures=True)
        if self._producer is not None:
            self._producer.close(timeout=5 if self._fatal is None else 0)
        if self._consumer is not None:
            self._consumer.close(autocommit=False)
        if self._server is not None:
            self._server.close()
        log.info("worker stopped", extra={"worker": self.worker_id, **self._counts})
