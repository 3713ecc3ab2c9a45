"""The model server behind a readiness gate: outages pause the worker, faults are isolated.

`InferenceGate.infer` is what the per-frame pipeline calls. It decides what a failure of the
model server means for a frame (stream.worker.inference lists the failure kinds): an outage
costs the frame nothing (the gate closes and the worker pauses), a model fault is retried alone
and dead-lettered only when the frame fails alone every time, a rejection is checked against
the served contract first, and a server back with another model stops the worker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import numpy as np
from tenacity import AsyncRetrying, retry_if_not_exception_type, wait_exponential

from oanet.contracts import STAGE_INFERENCE, DeadLetterCode
from stream.worker.errors import FrameRejected, WorkerError
from stream.worker.exclusive import Exclusive
from stream.worker.inference import Inference, InferenceFailed, InferenceRejected, ServedModel, TritonUnavailable
from stream.worker.metrics import WorkerMetrics

log = logging.getLogger("stream.worker")


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
                 on_change: Callable[[bool], None], on_model_changed: Callable[[ModelChanged], None],
                 fault_attempts: int = 3):
        self.backend = backend
        self.model: ServedModel | None = None
        self._initial_s = initial_s
        self._max_s = max_s
        self._metrics = metrics
        self._on_change = on_change
        self._on_model_changed = on_model_changed
        self._fault_attempts = fault_attempts
        self._open = asyncio.Event()
        self._prober: asyncio.Task | None = None
        self._solo = Exclusive()

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
        """The model's outputs for these frames (one, from the worker).

        An outage (TritonUnavailable) parks the call until the server is back and costs it
        nothing. A model fault (InferenceFailed: the frame, or a frame Triton batched with it,
        made the model raise) is retried alone, with no other request of this worker in flight,
        after a backoff; FrameRejected(inference_failed) when it fails alone every time. An
        INVALID_ARG answer is first checked against the served contract: a server that now takes
        other inputs is a model change (the worker stops), not a bad frame.
        """
        faults = 0
        while True:
            await self._open.wait()
            try:
                async with self._solo.exclusive() if faults else self._solo.shared():
                    return await self.backend.infer(rois, values, missing)
            except InferenceFailed as exc:
                faults += 1
                self._metrics.inference_faults.inc()
                if faults - 1 >= self._fault_attempts:  # the first failure may be a batch neighbour's
                    raise FrameRejected(DeadLetterCode.INFERENCE_FAILED, STAGE_INFERENCE,
                                        f"the model failed on this frame alone {faults - 1} time(s): {exc}") from None
                delay = min(self._max_s, self._initial_s * 2 ** (faults - 1))
                log.warning("the model failed on a frame: retrying it alone", extra={
                    "attempt": faults, "retry_in_s": round(delay, 3), "reason": str(exc)})
                await asyncio.sleep(delay)
            except InferenceRejected:
                await self._check_contract()
                raise
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

    async def _check_contract(self) -> None:
        """After an INVALID_ARG: ModelChanged (the worker stops, nothing dead-lettered) when the
        server now serves a model with other facts (a rollout that changed the inputs)."""
        try:
            await self._check_ready(ready_checked=True)
        except ModelChanged as exc:
            self._set(False)
            self._on_model_changed(exc)
            await asyncio.Event().wait()  # parked: the worker stops without this frame's output
        except TritonUnavailable:
            pass  # cannot tell now; the rejection stands on its own

    async def _check_ready(self, ready_checked: bool = False) -> None:
        if not ready_checked and not await self.backend.is_ready():
            raise TritonUnavailable("not ready")
        served = await self.backend.model_info(refresh=True)
        if self.model is not None and facts(served) != facts(self.model):
            raise ModelChanged(f"the model server came back with {served.name} version {served.version} "
                               f"(threshold {served.threshold:g}, {served.image_size} px, features "
                               f"{list(served.feature_names)}), but this worker was started for version "
                               f"{self.model.version}: restart the worker to use the new version")


def facts(model: ServedModel) -> tuple:
    """What a verdict depends on besides the frame: same facts, same verdicts."""
    return model.version, model.image_size, model.feature_names, model.threshold
