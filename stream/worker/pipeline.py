"""The per-frame pipeline: OCR, inference, verdict or dead letter, acknowledgement.

One coroutine per admitted frame runs on the worker's asyncio loop (`process`, or
`dead_letter` for a frame `admit` already refused). Every path ends in an output acknowledged
by the broker (acks=all) and then in `Offsets.acknowledged`, which lets the frame's offset be
committed; or it raises, and the worker stops without committing the frame (the loop's
done-callback on each coroutine sees to it). A frame is dead-lettered for its own faults only:
an outage of the model server parks it (the gate), a crashed or hung OCR pool is restarted
around it (the pool).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError

from oanet.contracts import STAGE_DECODE, STAGE_INFERENCE, STAGE_OCR, STAGE_PRODUCE, DeadLetterCode
from oanet.settings import Settings
from stream.worker import ocr_stage
from stream.worker.errors import FrameRejected, WorkerError
from stream.worker.gate import InferenceGate
from stream.worker.inference import InferenceRejected, ServedModel
from stream.worker.messages import DeadLetter, ModelOutputs, Verdict, utc_now
from stream.worker.metrics import WorkerMetrics
from stream.worker.ocr_pool import OcrPool, OcrPoolFailed
from stream.worker.offsets import Job, Offsets
from oanet.preprocess import param_arrays

log = logging.getLogger("stream.worker")


class ProduceFailed(WorkerError):
    """The broker did not acknowledge an output message: the worker stops without committing it."""


def _resolve(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


@dataclass
class FramePipeline:
    """What a frame goes through, with the worker's clients; `fail` stops the worker."""

    settings: Settings
    metrics: WorkerMetrics
    worker_id: str
    model: ServedModel
    gate: InferenceGate
    ocr: OcrPool
    producer: KafkaProducer
    send_executor: concurrent.futures.Executor
    offsets: Offsets
    counts: dict[str, int]
    fail: Callable[[BaseException], None]

    async def process(self, job: Job) -> None:
        assert job.frame is not None
        model = self.model
        stage = STAGE_DECODE  # where an unexpected error happened, for its dead letter
        try:
            try:
                prepared = await self._prepare(job)
                stage = STAGE_INFERENCE
                values, missing = param_arrays([prepared.record.params], model.feature_names)
                started = time.monotonic()
                outputs = await self.gate.infer(prepared.roi[None], values, missing)
                inference_ms = (time.monotonic() - started) * 1000
                self.metrics.stage_seconds.labels(STAGE_INFERENCE).observe(inference_ms / 1000)
                row = ModelOutputs.row(outputs, 0)
                stage = STAGE_PRODUCE
                total_ms = (time.monotonic() - job.received) * 1000
                known = prepared.decode_ms + prepared.ocr_ms + inference_ms
                verdict = Verdict.build(
                    job.frame, prepared.record, row, threshold=model.threshold, model_name=model.name,
                    model_version=str(model.version), worker=self.worker_id,
                    timings_ms={"queue": max(0.0, total_ms - known), STAGE_DECODE: prepared.decode_ms,
                                STAGE_OCR: prepared.ocr_ms, STAGE_INFERENCE: inference_ms, "total": total_ms},
                )
                encoded = verdict.encode()
            except FrameRejected as exc:
                await self.dead_letter(job, exc.code, exc.stage, exc.message)
                return
            except InferenceRejected as exc:
                await self.dead_letter(job, DeadLetterCode.INFERENCE_REJECTED, STAGE_INFERENCE, str(exc))
                return
            except (ProduceFailed, OcrPoolFailed):
                raise  # the worker's failure, not the frame's: the loop's done-callback stops the worker
            except Exception as exc:  # noqa: BLE001 - a bug met this frame: keep it for a replay after the fix
                log.exception("unexpected error; dead-lettering the frame", extra=job.log_fields())
                await self.dead_letter(job, DeadLetterCode.INTERNAL_ERROR, stage, f"{type(exc).__name__}: {exc}")
                return
            await self._produce(self.settings.topics.verdicts, verdict.key, encoded, verdict.headers, job)
            self._acked(job)
            self.metrics.verdicts.labels(verdict.verdict).inc()
            self.metrics.observe_verdict(len(prepared.record.missing), len(prepared.record.readings),
                                         row.gate_weights, [(r.name, r.engine) for r in prepared.record.readings])
            self.counts["verdicts"] += 1
            log.debug("verdict", extra=job.log_fields(verdict=verdict.verdict,
                                                      defect_probability=round(row.defect_probability, 4)))
        except ProduceFailed as exc:
            self.fail(exc)

    async def _prepare(self, job: Job) -> ocr_stage.Prepared:
        """The OCR stage in the pool (deadline, restarts and suspects: `OcrPool`)."""
        assert job.frame is not None
        prepared = await self.ocr.read_frame(job.frame.value, job.frame.image, job.log_fields())
        self.metrics.stage_seconds.labels(STAGE_DECODE).observe(prepared.decode_ms / 1000)
        self.metrics.stage_seconds.labels(STAGE_OCR).observe(prepared.ocr_ms / 1000)
        return prepared

    async def dead_letter(self, job: Job, code: str, stage: str, message: str) -> None:
        letter = DeadLetter(job.source, job.frame_id, job.key, job.value, job.headers, code, stage, message)
        log.warning("dead letter", extra=job.log_fields(code=code, stage=stage, reason=message))
        key, value, headers = letter.record(self.settings.topics.max_message_bytes)
        try:
            await self._produce(self.settings.topics.dead_letter, key, value, headers, job)
        except ProduceFailed as exc:
            self.fail(exc)
            return
        self._acked(job)
        self.metrics.dead_letters.labels(code).inc()
        self.counts["dead_letters"] += 1

    async def _produce(self, topic: str, key: bytes | None, value: bytes | None,
                       headers: list[tuple[str, bytes]], job: Job) -> None:
        """Send and wait for the broker's acknowledgement (acks=all)."""
        loop = asyncio.get_running_loop()
        acked: asyncio.Future = loop.create_future()
        started = time.monotonic()
        send = functools.partial(self.producer.send, topic, value=value, key=key, headers=headers)
        try:
            # send() blocks while it fetches topic metadata or the buffer is full: off the loop.
            future = await loop.run_in_executor(self.send_executor, send)
        except Exception as exc:  # noqa: BLE001 - KafkaError, and ValueError/TypeError for a record it refuses
            raise ProduceFailed(f"cannot produce frame {job.frame_id} to {topic}: "
                                f"{type(exc).__name__}: {exc}") from None
        future.add_callback(lambda md: loop.call_soon_threadsafe(_resolve, acked, md, None))
        future.add_errback(lambda err: loop.call_soon_threadsafe(_resolve, acked, None, err))
        try:
            await acked
        except KafkaError as exc:
            raise ProduceFailed(f"the broker did not acknowledge frame {job.frame_id} on {topic}: {exc}") from None
        self.metrics.stage_seconds.labels(STAGE_PRODUCE).observe(time.monotonic() - started)

    def _acked(self, job: Job) -> None:
        self.offsets.acknowledged(job)
        captured = job.frame.captured_at if job.frame is not None else None
        if captured is None and job.timestamp_ms is not None and job.timestamp_ms > 0:
            captured = dt.datetime.fromtimestamp(job.timestamp_ms / 1000, dt.timezone.utc)
        if captured is not None:
            seconds = (utc_now() - captured).total_seconds()
            if seconds >= 0:
                self.metrics.end_to_end.observe(seconds)
