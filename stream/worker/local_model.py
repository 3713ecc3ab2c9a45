"""`InProcessInference`: one exported model version run in this process.

It loads exactly what Triton serves from a model repository written by `oanet export`: the
TorchScript CNN `oanet_image_encoder/<v>/model.pt` (torch.jit.load) and the fusion model
`oanet_fusion/<v>/` through that folder's own copy of `core.py`, after checking every file
against the version's sha256 manifest. Not a mock: the numbers are the served ones.

Calls run one at a time on a dedicated thread (the CNN uses torch's intra-op threads), one
request per frame, so a frame's result never depends on what it was batched with.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

import numpy as np

from stream.served_model import checked_arrays
from stream.worker.errors import WorkerError
from stream.worker.inference import OUTPUT_KEYS, InferenceRejected, ServedModel
from stream.worker.repository import read_exported
from triton_models.oanet_fusion import core as source_core


def _load_core(path: Path) -> ModuleType:
    """The repository's own core.py (what Triton's fusion model imports), as its own module."""
    name = f"oanet_exported_core_{abs(hash(str(path.resolve())))}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise WorkerError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    # No __pycache__ in the version folder: Triton refuses a version with a file its manifest
    # does not list (triton_models/oanet_fusion/integrity.py).
    before, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = before
    return module


class InProcessInference:
    """The Inference protocol on an exported repository version, in this process."""

    def __init__(self, repo: str | Path, version: int | None = None, *, torch_threads: int | None = None,
                 signing_key: str | None = None):
        import torch

        self.repo = Path(repo)
        self._model = read_exported(self.repo, version, signing_key).model
        v = str(self._model.version)
        if torch_threads:
            torch.set_num_threads(torch_threads)
        encoder_path = self.repo / source_core.ENCODER_MODEL / v / "model.pt"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch 2.14 flags torch.jit as deprecated; Triton loads it
                self._encoder = torch.jit.load(str(encoder_path), map_location="cpu").eval()
        except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a bad file
            raise WorkerError(f"cannot load {encoder_path}: {exc}") from None
        fusion_dir = self.repo / source_core.FUSION_MODEL / v
        self._core = _load_core(fusion_dir / "core.py")
        try:
            self._fusion = self._core.FusionCore.load(fusion_dir)
        except self._core.CoreError as exc:
            raise WorkerError(f"{fusion_dir}: {exc}") from None
        self._torch = torch
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="oanet-local-model")

    async def model_info(self, refresh: bool = False) -> ServedModel:
        return self._model

    def predict(self, rois: np.ndarray, values: np.ndarray, missing: np.ndarray) -> dict[str, np.ndarray]:
        """Synchronous inference (what `infer` runs on its thread)."""
        rois, values, missing = checked_arrays(self._model, rois, values, missing)
        torch = self._torch
        with torch.inference_mode():
            embedding, logit = self._encoder(torch.from_numpy(np.ascontiguousarray(rois)))
        try:
            out = self._fusion.predict(embedding.float().numpy(), logit.float().numpy()[:, 0], values, missing)
        except self._core.CoreError as exc:
            raise InferenceRejected(str(exc)) from None
        return {k: out[k] for k in OUTPUT_KEYS}

    async def infer(self, rois: np.ndarray, values: np.ndarray, missing: np.ndarray) -> dict[str, np.ndarray]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.predict, rois, values, missing)

    async def is_ready(self) -> bool:
        return True

    async def wait_ready(self, timeout_s: float | None = None) -> None:
        return None

    async def close(self) -> None:
        self._executor.shutdown(wait=True)
