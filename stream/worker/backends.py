"""Choose the model-server client from settings (`worker.inference`)."""

from __future__ import annotations

from collections.abc import Callable

from oanet.settings import Settings
from stream.worker.inference import Inference


def inference_factory(settings: Settings) -> Callable[[], Inference]:
    """A callable that creates the client; the worker calls it on its asyncio loop (a gRPC aio
    channel belongs to the loop it was made in)."""
    if settings.worker.inference == "local":
        from stream.worker.local_model import InProcessInference

        key = settings.model.signing_key
        return lambda: InProcessInference(settings.stack.model_repository, settings.worker.model_version,
                                          signing_key=key.get_secret_value() if key else None)
    from stream.triton_client import TritonClient

    return lambda: TritonClient(settings.triton)
