"""The inference seam: what the worker needs from a model server, and its two failure kinds.

The worker talks to any object with this interface; two implement it:

* `stream.triton_client.TritonClient` (`--inference triton`, the default): the `oanet` ensemble
  served by Triton over gRPC. It satisfies the protocol as it is: the worker uses the serving
  client itself, not an adapter of it;
* `stream.worker.local_model.InProcessInference` (`--inference local`): the same exported
  model version run in this process, for running without Triton and for measuring the
  inference stage alone.

Failure kinds decide what happens to a frame. They are defined once, in `stream.errors`, and
re-exported here for the worker's code:

* `TritonUnavailable`: the server cannot answer now (down, not ready, overloaded, timeout,
  or it now serves another version). Never the frame's fault: the worker pauses consumption,
  probes readiness with backoff, and retries the frame when the server is back. Nothing is
  dead-lettered or committed.
* `InferenceFailed`: the model raised computing this frame's request (INTERNAL), maybe because
  of a frame batched with it. The worker retries it alone (no other request of its own in
  flight) with backoff; a frame that fails alone every time is dead-lettered `inference_failed`.
* `InferenceRejected`: the server refused this frame's inputs (INVALID_ARG). Retrying cannot
  help: the frame goes to the dead-letter topic with code `inference_rejected`.

The served model's facts (`ServedModel`: version, ROI size, feature order, threshold) come
from the server itself (`model_info`), never from the worker's configuration. The line
profile does not travel with them: see `stream.worker.repository`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from stream.errors import InferenceFailed, InferenceRejected, TritonUnavailable
from stream.served_model import ServedModel
from triton_models.oanet_fusion import serving

__all__ = ["OUTPUT_KEYS", "Inference", "InferenceFailed", "InferenceRejected", "ServedModel", "TritonUnavailable"]

# Keys of the dict `infer` returns (per frame: [N], [N, 3], [N, 3], [N, 2]): the fusion core's
# `predict` outputs, as the Triton client maps them back from the served tensors.
OUTPUT_KEYS = tuple(serving.PREDICT_OUTPUTS)


@runtime_checkable
class Inference(Protocol):
    """A model server as the worker sees it. Methods are called from one asyncio loop."""

    async def wait_ready(self, timeout_s: float | None = None) -> None:
        """Return once the model is ready; TritonUnavailable (one line) after `timeout_s`."""
        ...

    async def is_ready(self) -> bool: ...

    async def model_info(self, refresh: bool = False) -> ServedModel:
        """The served version's facts; `refresh` asks the server again instead of a cached copy."""
        ...

    async def infer(self, rois: np.ndarray, values: np.ndarray, missing: np.ndarray) -> dict[str, np.ndarray]:
        """rois uint8 [N, S, S, 3] BGR; values float32 [N, F] NaN where missing; missing bool [N, F].

        Returns OUTPUT_KEYS. Raises TritonUnavailable, InferenceFailed or InferenceRejected.
        """
        ...

    async def close(self) -> None: ...
