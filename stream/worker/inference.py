"""The inference seam: what the worker needs from a model server, and its two failure kinds.

The worker talks to any object with this interface; two implement it:

* the Triton client (`stream/triton_client.py`, the serving issue): the `oanet` ensemble
  over gRPC;
* `stream.worker.local_model.InProcessInference`: the same exported model version run in
  this process (TorchScript CNN + the repository's copy of the fusion core), for benchmarks
  that measure the inference stage alone and for running the worker without Triton.

Failure kinds decide what happens to a frame:

* `TritonUnavailable`: the server cannot answer now (down, not ready, overloaded, timeout).
  Never the frame's fault: the worker pauses consumption, probes readiness with backoff,
  and retries the frame when the server is back. Nothing is dead-lettered or committed.
* `InferenceRejected`: the server refused this frame's inputs (INVALID_ARG). Retrying cannot
  help: the frame goes to the dead-letter topic with code `inference_rejected`.

Kept in this module, apart from stream/errors.py, so the serving issue can add its own
classes there; when it lands, the Triton client raises these (or subclasses of them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from oanet.profile import LineProfile
from stream.worker.errors import WorkerError

# Keys of the dict `infer` returns (per frame: [N], [N, 3], [N, 3], [N, 2]); the same names as
# the fusion core's `predict` outputs.
OUTPUT_KEYS = ("defect_probability", "branch_probabilities", "gate_weights", "kl_scores")


class TritonUnavailable(WorkerError):
    """The model server cannot answer now; retry later, the frame is not at fault."""


class InferenceRejected(WorkerError):
    """The model server refused this frame's inputs; dead-letter the frame."""


@dataclass(frozen=True)
class ModelInfo:
    """What the worker must know about the served model to prepare inputs and verdicts."""

    name: str
    version: str
    image_size: int  # S of the uint8 [N, S, S, 3] BGR object ROI
    feature_names: tuple[str, ...]  # numeric profile fields, in tensor order
    threshold: float  # operating threshold of defect_probability
    profile: LineProfile  # the line profile the model was trained on (object ROI, fields)


@runtime_checkable
class Inference(Protocol):
    """A model server as the worker sees it. Methods are called from one asyncio loop."""

    @property
    def info(self) -> ModelInfo: ...

    async def infer(self, rois: np.ndarray, values: np.ndarray, missing: np.ndarray) -> dict[str, np.ndarray]:
        """rois uint8 [N, S, S, 3] BGR; values float32 [N, F] NaN where missing; missing bool [N, F].

        Returns OUTPUT_KEYS. Raises TritonUnavailable or InferenceRejected.
        """
        ...

    async def is_ready(self) -> bool: ...

    async def wait_ready(self, timeout_s: float) -> bool: ...

    async def close(self) -> None: ...


def check_inputs(info: ModelInfo, rois: np.ndarray, values: np.ndarray, missing: np.ndarray) -> None:
    """InferenceRejected unless the arrays have the dtypes and shapes the model takes."""
    n, s, f = len(rois), info.image_size, len(info.feature_names)
    problems = []
    if rois.dtype != np.uint8 or rois.shape != (n, s, s, 3):
        problems.append(f"rois must be uint8 [{n}, {s}, {s}, 3], got {rois.dtype} {list(rois.shape)}")
    if values.dtype != np.float32 or values.shape != (n, f):
        problems.append(f"values must be float32 [{n}, {f}], got {values.dtype} {list(values.shape)}")
    if missing.dtype != np.bool_ or missing.shape != (n, f):
        problems.append(f"missing must be bool [{n}, {f}], got {missing.dtype} {list(missing.shape)}")
    if problems:
        raise InferenceRejected("; ".join(problems))
