"""Choose the model-server client from settings (`worker.inference`)."""

from __future__ import annotations

from collections.abc import Callable

from oanet.settings import Settings
from stream.worker.errors import WorkerError
from stream.worker.inference import Inference


def inference_factory(settings: Settings) -> Callable[[], Inference]:
    """A callable that creates the client (on the worker's asyncio loop)."""
    if settings.worker.inference == "local":
        from stream.worker.local_model import InProcessInference

        return lambda: InProcessInference(settings.stack.model_repository, settings.worker.model_version)
    try:
        from stream import triton_client  # the serving issue's client
    except ImportError:
        raise WorkerError(
            "worker.inference 'triton' needs the Triton client (stream/triton_client.py), which this installation "
            "does not have yet; run the exported model in the worker with --inference local --repo DIR"
        ) from None
    return triton_client.worker_inference(settings)  # type: ignore[attr-defined]  # wired in phase 2
