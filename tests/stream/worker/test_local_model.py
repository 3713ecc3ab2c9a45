"""InProcessInference: the exported repository version, loaded and run as Triton would."""

from __future__ import annotations

import asyncio
import shutil

import numpy as np
import pytest

from stream.worker.errors import WorkerError
from stream.worker.inference import Inference, InferenceRejected, ServedModel
from stream.worker.local_model import InProcessInference
from stream.worker.repository import read_exported


@pytest.fixture(scope="module")
def local(model_repo):
    return InProcessInference(model_repo)


def test_model_info_comes_from_the_export_manifest(local, model_repo, line_t_profile):
    info = asyncio.run(local.model_info())
    assert isinstance(local, Inference) and isinstance(info, ServedModel)
    assert (info.name, info.version, info.image_size, info.max_batch_size) == ("oanet", 1, 32, 64)
    assert info.feature_names == tuple(f.name for f in line_t_profile.fields if f.kind == "number")
    assert 0.0 <= info.threshold <= 1.0
    exported = read_exported(model_repo)
    assert exported.model == info and exported.profile == line_t_profile


def test_outputs_equal_the_training_run_on_the_same_inputs(local, model_repo, line_t_dataset):
    from training.evaluate import load_frames, load_run, predict

    run = load_run(model_repo.parent / "run")
    frames = load_frames(run, line_t_dataset.root, "test", "truth", progress=False)
    expected = predict(run.encoder, run.fusion, frames)
    got = local.predict(frames.rois, np.where(frames.missing, np.nan, frames.values).astype(np.float32),
                        frames.missing)
    for key in ("defect_probability", "branch_probabilities", "gate_weights", "kl_scores"):
        assert np.allclose(got[key], expected[key], atol=1e-5), key
    # one frame at a time (as the worker calls it) gives the numbers of the batch
    one = local.predict(frames.rois[:1], np.where(frames.missing, np.nan, frames.values).astype(np.float32)[:1],
                        frames.missing[:1])
    assert np.allclose(one["defect_probability"], got["defect_probability"][:1], atol=1e-6)


def test_async_interface_and_rejection_of_wrong_inputs(local):
    f = len(asyncio.run(local.model_info()).feature_names)
    rois = np.zeros((2, 32, 32, 3), np.uint8)
    values = np.full((2, f), np.nan, np.float32)
    missing = np.ones((2, f), bool)

    async def go():
        await local.wait_ready(1.0)
        assert await local.is_ready()
        out = await local.infer(rois, values, missing)
        assert out["defect_probability"].shape == (2,) and out["gate_weights"].shape == (2, 3)
        with pytest.raises(InferenceRejected, match="rois must be uint8"):
            await local.infer(np.zeros((2, 16, 16, 3), np.uint8), values, missing)
        with pytest.raises(InferenceRejected, match="values must be float"):
            await local.infer(rois, values[:, :-1], missing)

    asyncio.run(go())


def test_a_repository_that_does_not_verify_is_refused(model_repo, tmp_path):
    with pytest.raises(WorkerError, match="holds no exported model"):
        read_exported(tmp_path / "empty")
    with pytest.raises(WorkerError, match="has no version 7"):
        read_exported(model_repo, 7)
    copy = tmp_path / "repo"
    shutil.copytree(model_repo, copy)
    weights = copy / "oanet_fusion" / "1" / "fusion_weights.npz"
    weights.write_bytes(weights.read_bytes() + b"tampered")
    with pytest.raises(WorkerError, match="does not verify: sha256 mismatch"):
        InProcessInference(copy)


def test_loading_the_exported_core_leaves_no_bytecode_in_the_version_folder(tmp_path, monkeypatch):
    """A __pycache__ there is a file the manifest does not list: Triton would refuse the version."""
    import sys

    from stream.worker.local_model import _load_core
    from triton_models.oanet_fusion import core

    monkeypatch.setattr(sys, "dont_write_bytecode", False)  # whatever PYTHONDONTWRITEBYTECODE says
    shutil.copy(core.__file__, tmp_path / "core.py")
    _load_core(tmp_path / "core.py")
    assert [p.name for p in tmp_path.iterdir()] == ["core.py"]
    assert sys.dont_write_bytecode is False
