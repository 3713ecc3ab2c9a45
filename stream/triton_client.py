"""Async gRPC client of the served OANet model: the `oanet` ensemble on Triton.

The stream worker's contract:

    async with TritonClient(settings.triton) as client:
        await client.wait_ready()              # the ensemble and both composing models are ready
        model = await client.model_info()      # ServedModel: version, image size, feature order, threshold
        out = await client.infer(rois, values, missing)

`infer` takes what `oanet.preprocess.crop_object_roi` and `param_arrays` make: `rois` uint8
[N, S, S, 3] BGR, `values` float32 [N, F] with NaN where missing, `missing` bool [N, F], the F
columns in `model.feature_names` order. It returns the keys of `FusionCore.predict`:
`defect_probability` [N], `branch_probabilities` [N, 3] and `gate_weights` [N, 3] (image,
params, fused), `kl_scores` [N, 2] (image, params), and `present_fraction` [N], computed here.

Every frame is a Triton request of its own, sent concurrently within a bounded window
(`max_in_flight`). The worker receives frames one by one from Kafka; Triton's dynamic batcher
merges the requests in flight, from every task and every worker process, into batches, which
a client-side batch could only do within one process and at the cost of waiting. A frame the
server rejects fails its own request only; an `infer` call of several frames then raises for the
first rejected one (`frame_index`) and returns nothing, so the worker passes one frame per call.

Failures are `stream.errors` exceptions with a one-line message:
* `TritonUnavailable`: server down or not ready, model not served, deadline passed (per
  attempt, `request_timeout_s`), or an answer from another version than
  `model_info` described (the server was restarted with a new export: read it again). Requests
  answered UNAVAILABLE are retried with exponential backoff first. The worker pauses and
  retries; never dead-letters.
* `InferenceFailed`: the model raised while computing the request (INTERNAL): the frame, or a
  frame batched with it, is poison. The worker retries it alone and dead-letters a frame that
  fails alone every time.
* `InferenceRejected`: the frame's inputs are malformed (INVALID_ARG from Triton, or a shape or
  dtype the served model cannot take, checked here before sending). Dead-letter the frame.
  Parameter values (NaN, infinity, mask consistency) are checked in one place, the server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import numpy as np
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.grpc import aio as grpc_aio
from tritonclient.utils import InferenceServerException

from oanet.settings import TritonSettings
from stream.errors import InferenceFailed, InferenceRejected, StreamError, TritonUnavailable
from stream.served_model import ServedModel, checked_arrays
from triton_models.oanet_fusion import core, serving

T = TypeVar("T")
COMPOSING_MODELS = (core.ENCODER_MODEL, core.FUSION_MODEL)
# gRPC statuses of a model that raised while computing a request (Python backend: an exception
# in `execute`, or a stub that died on it): InferenceFailed, not an outage.
FAULT_STATUSES = frozenset({"INTERNAL", "UNKNOWN"})


def _first_line(text: str) -> str:
    first = next((line.strip() for line in str(text).splitlines() if line.strip()), "")
    return first or "no message"


def _status(exc: InferenceServerException) -> str:
    return str(exc.status() or "").rsplit(".", 1)[-1]  # "StatusCode.UNAVAILABLE" -> "UNAVAILABLE"


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, InferenceServerException) and _status(exc) == "UNAVAILABLE"


class TritonClient:
    """Async client of the `oanet` ensemble; see the module docstring for the contract."""

    def __init__(self, settings: TritonSettings):
        if not settings.url:
            raise StreamError("triton.url is empty: set OANET_TRITON__URL or load the settings with load_settings()")
        self.settings = settings
        self._grpc: grpc_aio.InferenceServerClient | None = None
        self._window = asyncio.Semaphore(settings.max_in_flight)
        self._model: ServedModel | None = None
        self._outputs = [InferRequestedOutput(name) for name in serving.PREDICT_OUTPUTS.values()]

    # ---- lifecycle ------------------------------------------------------------------------
    def _client(self) -> grpc_aio.InferenceServerClient:
        # Created on first use: a grpc.aio channel belongs to the event loop it was made in.
        if self._grpc is None:
            self._grpc = grpc_aio.InferenceServerClient(**self.settings.grpc_client_kwargs())
        return self._grpc

    async def close(self) -> None:
        if self._grpc is not None:
            client, self._grpc = self._grpc, None
            await client.close()

    async def __aenter__(self) -> TritonClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ---- calls with retries and error mapping ----------------------------------------------
    async def _call(self, what: str, call: Callable[[], Awaitable[T]], frame_index: int | None = None) -> T:
        s = self.settings
        retrying = AsyncRetrying(
            retry=retry_if_exception(_retryable),
            wait=wait_exponential_jitter(initial=s.retry_backoff_s, max=s.retry_backoff_max_s),
            stop=stop_after_attempt(s.retry_attempts + 1),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    async with self._window:
                        return await call()
        except InferenceServerException as exc:
            raise self._mapped(exc, what, frame_index) from None
        raise AssertionError("unreachable: tenacity returns or raises")  # pragma: no cover

    def _mapped(self, exc: InferenceServerException, what: str, frame_index: int | None) -> StreamError:
        status, message, url = _status(exc), _first_line(exc.message()), self.settings.url
        if status == "INVALID_ARGUMENT":
            where = f"frame {frame_index}" if frame_index is not None else what
            return InferenceRejected(f"Triton rejected {where}: {message}", frame_index)
        if status in FAULT_STATUSES:
            # The model raised for this request (or for a request batched with it): the server
            # itself is up, so pausing would wait forever on a frame that always fails.
            return InferenceFailed(f"{what}: the model on Triton at {url} failed ({status}): {message}", frame_index)
        self._model = None  # the server may come back with another version: read it again
        if status == "DEADLINE_EXCEEDED":
            return TritonUnavailable(f"{what}: no answer from Triton at {url} within "
                                     f"{self.settings.request_timeout_s:g} s (deadline exceeded)")
        if status == "UNAVAILABLE":
            return TritonUnavailable(f"{what}: Triton at {url} is unavailable after "
                                     f"{self.settings.retry_attempts + 1} attempt(s): {message}")
        return TritonUnavailable(f"{what}: Triton at {url} failed ({status or 'no status'}): {message}")

    # ---- readiness and model facts ---------------------------------------------------------
    async def readiness(self) -> dict[str, str]:
        """'ready', 'not ready' or 'unreachable: why' for the ensemble and its composing models."""
        client, timeout = self._client(), self.settings.request_timeout_s
        states = {}
        for model in (self.settings.model_name, *COMPOSING_MODELS):
            try:
                ready = await client.is_model_ready(model, client_timeout=timeout)
                states[model] = "ready" if ready else "not ready"
            except InferenceServerException as exc:
                states[model] = f"unreachable: {_first_line(exc.message())}"
        return states

    async def is_ready(self) -> bool:
        return all(state == "ready" for state in (await self.readiness()).values())

    async def wait_ready(self, timeout_s: float | None = None) -> None:
        """Return once all three models are ready; TritonUnavailable after `timeout_s`
        (default `ready_timeout_s`), naming what is not ready."""
        loop = asyncio.get_running_loop()
        limit = self.settings.ready_timeout_s if timeout_s is None else timeout_s
        deadline = loop.time() + limit
        delay = self.settings.retry_backoff_s
        while True:
            states = await self.readiness()
            if all(state == "ready" for state in states.values()):
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                waiting = ", ".join(f"{m} {s}" for m, s in states.items() if s != "ready")
                raise TritonUnavailable(f"Triton at {self.settings.url} is not ready after {limit:g} s: {waiting}")
            await asyncio.sleep(min(delay, remaining))
            delay = min(2 * delay, self.settings.retry_backoff_max_s)

    async def model_info(self, refresh: bool = False) -> ServedModel:
        """The served version's facts, from oanet_fusion's config parameters (which that model
        checks against its artifacts at load) and the ensemble's config."""
        if self._model is not None and not refresh:
            return self._model
        client, timeout = self._client(), self.settings.request_timeout_s
        fusion = await self._call(f"reading the config of {core.FUSION_MODEL}",
                                  lambda: client.get_model_config(core.FUSION_MODEL, as_json=True,
                                                                  client_timeout=timeout))
        ensemble = await self._call(f"reading the config of {self.settings.model_name}",
                                    lambda: client.get_model_config(self.settings.model_name, as_json=True,
                                                                    client_timeout=timeout))
        try:
            info = serving.parse_info_parameters(serving.parameters(fusion["config"]))
            inputs = {t["name"]: [int(d) for d in t["dims"]] for t in ensemble["config"]["input"]}
            max_batch = int(ensemble["config"].get("max_batch_size", 0))
        except (KeyError, TypeError, ValueError) as exc:
            raise TritonUnavailable(f"Triton at {self.settings.url} serves a model without the facts this client "
                                    f"reads ({exc}); re-export it with `oanet export`") from None
        size, n_features = info["image_size"], len(info["feature_names"])
        expected = {core.ROI_INPUT: [size, size, 3], core.PARAM_VALUES: [n_features],
                    core.PARAM_MISSING: [n_features]}
        if any(inputs.get(name) != dims for name, dims in expected.items()):
            raise TritonUnavailable(f"{self.settings.model_name} on {self.settings.url} takes inputs {inputs}, but "
                                    f"{core.FUSION_MODEL} describes {expected}: the repository is inconsistent")
        self._model = ServedModel(
            name=self.settings.model_name,
            version=info["oanet_version"],
            image_size=size,
            feature_names=tuple(info["feature_names"]),
            threshold=info["threshold"],
            embedding_dim=info["embedding_dim"],
            max_batch_size=max_batch,
            profile=info[serving.PROFILE_KEY],
        )
        return self._model

    # ---- inference ---------------------------------------------------------------------------
    async def infer(self, rois: np.ndarray, values: np.ndarray, missing: np.ndarray) -> dict[str, np.ndarray]:
        """The fused verdict of N frames (module docstring); N requests, batched by Triton."""
        model = await self.model_info()
        rois, values, missing = checked_arrays(model, rois, values, missing)
        n = len(rois)
        results = await asyncio.gather(*(self._infer_frame(model, i, rois[i : i + 1], values[i : i + 1],
                                                           missing[i : i + 1]) for i in range(n)),
                                       return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        # The worker pauses before it retries, and retries before it dead-letters.
        for kind in (TritonUnavailable, InferenceFailed, InferenceRejected, BaseException):
            first = next((e for e in errors if isinstance(e, kind)), None)
            if first is not None:
                raise first
        out = {key: np.concatenate([r[key] for r in results], axis=0) if n else np.zeros((0, *shape), np.float32)
               for key, shape in (("defect_probability", ()), ("branch_probabilities", (len(core.BRANCHES),)),
                                  ("gate_weights", (len(core.BRANCHES),)), ("kl_scores", (len(core.MODALITIES),)))}
        out["present_fraction"] = core.present_fraction(missing | np.isnan(values)).astype(np.float32)
        return out

    async def _infer_frame(self, model: ServedModel, index: int, roi: np.ndarray, values: np.ndarray,
                           missing: np.ndarray) -> dict[str, np.ndarray]:
        inputs = []
        for name, array, dtype in ((core.ROI_INPUT, roi, "UINT8"), (core.PARAM_VALUES, values, "FP32"),
                                   (core.PARAM_MISSING, missing, "BOOL")):
            tensor = InferInput(name, list(array.shape), dtype)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        client, s = self._client(), self.settings
        result = await self._call(f"inference of frame {index}",
                                  lambda: client.infer(s.model_name, inputs, outputs=self._outputs,
                                                       client_timeout=s.request_timeout_s),
                                  frame_index=index)
        answered = result.get_response().model_version
        if answered != str(model.version):
            # Restarted with another version between two calls: the facts the caller prepared
            # this frame with (ROI size, feature order, threshold) may no longer hold.
            self._model = None
            raise TritonUnavailable(f"inference of frame {index}: Triton at {s.url} answered with version {answered} "
                                    f"of {s.model_name}, not version {model.version} (read model_info again)")
        out = {key: result.as_numpy(tensor) for key, tensor in serving.PREDICT_OUTPUTS.items()}
        out["defect_probability"] = out["defect_probability"].reshape(-1)
        return out
