"""The exported repository in a real tritonserver: parity with the training model, bad requests,
bad repositories, metrics and the KServe v2 endpoints."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from deploy.embedded.errors import StackError
from deploy.embedded.stack import EmbeddedStack
from stream.errors import InferenceRejected
from stream.triton_client import TritonClient
from triton_models.oanet_fusion import core, serving

pytestmark = pytest.mark.slow

PROBABILITIES = ("defect_probability", "branch_probabilities", "gate_weights", "present_fraction")


@pytest.fixture(scope="module")
def run_model(served_run: Path):
    from training.evaluate import load_run

    return load_run(served_run)


@pytest.fixture(scope="module")
def test_frames(run_model, served_dataset: Path):
    from training.evaluate import load_frames

    return load_frames(run_model, served_dataset, "test", None, progress=False)


def expected_outputs(run_model, rois: np.ndarray, values: np.ndarray, missing: np.ndarray) -> dict[str, np.ndarray]:
    """What the in-process training model computes (`oanet evaluate`'s code path)."""
    from training.cnn import extract

    embedding, logit = extract(run_model.encoder, rois)
    return run_model.fusion.predict(embedding, logit, values, missing)


def served_inputs(frames) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return frames.rois, np.where(frames.missing, np.nan, frames.values).astype(np.float32), frames.missing


async def client_infer(settings, *arrays):
    async with TritonClient(settings) as client:
        return await client.infer(*arrays)


def raw_infer(stack: EmbeddedStack, tensors: list[tuple[str, np.ndarray, str]], model: str = core.ENSEMBLE_MODEL):
    """One request through tritonclient's own gRPC client, without the product client's checks."""
    client = grpcclient.InferenceServerClient(f"{stack.settings.host}:{stack.settings.triton_grpc_port}")
    try:
        inputs = []
        for name, array, dtype in tensors:
            tensor = grpcclient.InferInput(name, list(array.shape), dtype)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        return client.infer(model, inputs)
    finally:
        client.close()


def ensemble_tensors(rois, values, missing) -> list[tuple[str, np.ndarray, str]]:
    return [(core.ROI_INPUT, rois, "UINT8"), (core.PARAM_VALUES, values, "FP32"), (core.PARAM_MISSING, missing, "BOOL")]


def assert_invalid(tensors, stack, match: str, model: str = core.ENSEMBLE_MODEL) -> None:
    with pytest.raises(InferenceServerException) as caught:
        raw_infer(stack, tensors, model)
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT", caught.value
    assert match in caught.value.message()


# --------------------------------------------------------------------------- parity


def test_ensemble_equals_the_training_model_on_fixed_frames(oanet_stack, oanet_triton, run_model, test_frames):
    from training.data import corrupt

    # clean frames, then the same frames with OCR fields dropped and GridMasked images: the gate at work
    for frames in (test_frames, corrupt(test_frames, ocr_missing=0.5, grid_mask_p=0.5, seed=7)):
        rois, values, missing = served_inputs(frames)
        expected = expected_outputs(run_model, rois, values, missing)
        # one request per frame through the stream client (batched by Triton), and one request of all frames
        via_client = asyncio.run(client_infer(oanet_triton, rois, values, missing))
        raw = raw_infer(oanet_stack, ensemble_tensors(rois, values, missing))
        via_raw = {key: raw.as_numpy(tensor) for key, tensor in serving.PREDICT_OUTPUTS.items()}
        via_raw["defect_probability"] = via_raw["defect_probability"][:, 0]
        for got in (via_client, via_raw):
            for key in ("defect_probability", "branch_probabilities", "gate_weights"):
                np.testing.assert_allclose(got[key], expected[key], rtol=0, atol=1e-4, err_msg=key)
            np.testing.assert_allclose(got["kl_scores"], expected["kl_scores"], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(via_client["present_fraction"], expected["present_fraction"], atol=1e-6)


def test_all_fields_missing_is_served_with_the_params_branch_off(oanet_stack, oanet_triton, run_model, test_frames):
    rois = test_frames.rois[:3]
    values = np.full((3, len(run_model.fusion.feature_names)), np.nan, np.float32)
    missing = np.ones(values.shape, bool)
    got = asyncio.run(client_infer(oanet_triton, rois, values, missing))
    expected = expected_outputs(run_model, rois, values, missing)
    assert (got["gate_weights"][:, 1] == 0).all() and (got["present_fraction"] == 0).all()
    assert (got["kl_scores"][:, 1] == 0).all()
    for key in PROBABILITIES:
        np.testing.assert_allclose(got[key], expected[key], atol=1e-4, err_msg=key)


# --------------------------------------------------------------------------- bad requests


def test_wrong_dtypes_and_shapes_are_rejected_by_triton(oanet_stack, test_frames):
    rois, values, missing = served_inputs(test_frames)
    rois, values, missing = rois[:2], values[:2], missing[:2]
    assert_invalid([(core.ROI_INPUT, rois, "UINT8"), (core.PARAM_VALUES, values.astype(np.float64), "FP64"),
                    (core.PARAM_MISSING, missing, "BOOL")], oanet_stack, "data-type is 'FP64'")
    assert_invalid([(core.ROI_INPUT, rois.astype(np.float32), "FP32"), *ensemble_tensors(rois, values, missing)[1:]],
                   oanet_stack, "data-type is 'FP32'")
    wide = np.concatenate([values, values[:, :1]], axis=1)
    assert_invalid(ensemble_tensors(rois, wide, np.isnan(wide)), oanet_stack, "unexpected shape")
    size = rois.shape[1]
    big = np.zeros((2, size + 8, size + 8, 3), np.uint8)
    assert_invalid(ensemble_tensors(big, values, missing), oanet_stack, "unexpected shape for input 'OBJECT_ROI'")


def test_empty_batch_is_rejected_by_triton_and_answered_locally_by_the_client(oanet_stack, oanet_triton, test_frames):
    rois, values, missing = served_inputs(test_frames)
    assert_invalid(ensemble_tensors(rois[:0], values[:0], missing[:0]), oanet_stack, "")
    got = asyncio.run(client_infer(oanet_triton, rois[:0], values[:0], missing[:0]))
    assert {k: v.shape for k, v in got.items()} == {"defect_probability": (0,), "branch_probabilities": (0, 3),
                                                    "gate_weights": (0, 3), "kl_scores": (0, 2),
                                                    "present_fraction": (0,)}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda v, m: v.__setitem__((1, 0), np.inf), "PARAM_VALUES of frame 1, field 'temp', is infinite"),
        (lambda v, m: v.__setitem__((0, 2), -np.inf), "is infinite"),
        (lambda v, m: v.__setitem__((0, 1), np.nan), "is NaN but PARAM_MISSING says present"),
        (lambda v, m: m.__setitem__((1, 1), True), "holds a number but PARAM_MISSING says missing"),
    ],
)
def test_non_finite_or_inconsistent_parameters_are_rejected_by_the_fusion_model(oanet_stack, test_frames, change,
                                                                                message):
    rois, values, missing = served_inputs(test_frames)
    rois, values, missing = rois[:2], np.nan_to_num(values[:2], nan=1.0), np.zeros((2, values.shape[1]), bool)
    change(values, missing)
    assert_invalid(ensemble_tensors(rois, values, missing), oanet_stack, message)


def test_a_rejected_request_leaves_the_others_of_its_batch_served(oanet_triton, run_model, test_frames):
    rois, values, missing = served_inputs(test_frames)
    n = min(8, len(rois))
    bad = values[:1].copy()
    bad[0, 0] = np.inf

    async def concurrently():
        async with TritonClient(oanet_triton) as client:
            calls = [client.infer(rois[i : i + 1], values[i : i + 1], missing[i : i + 1]) for i in range(n)]
            calls.insert(n // 2, client.infer(rois[:1], bad, missing[:1]))
            return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(concurrently())
    rejected = results.pop(n // 2)
    assert isinstance(rejected, InferenceRejected) and "is infinite" in str(rejected)
    expected = expected_outputs(run_model, rois[:n], values[:n], missing[:n])
    got = np.concatenate([r["defect_probability"] for r in results])
    np.testing.assert_allclose(got, expected["defect_probability"], atol=1e-4)


def test_fusion_model_rejects_a_non_finite_embedding(oanet_stack, run_model):
    f, e = len(run_model.fusion.feature_names), run_model.fusion.embedding_dim
    embedding = np.zeros((1, e), np.float32)
    embedding[0, 0] = np.nan
    tensors = [(core.EMBEDDING, embedding, "FP32"), (core.IMAGE_LOGIT, np.zeros((1, 1), np.float32), "FP32"),
               (core.PARAM_VALUES, np.zeros((1, f), np.float32), "FP32"),
               (core.PARAM_MISSING, np.zeros((1, f), bool), "BOOL")]
    assert_invalid(tensors, oanet_stack, "EMBEDDING and IMAGE_LOGIT must be finite", model=core.FUSION_MODEL)


# --------------------------------------------------------------------------- endpoints and metrics


def test_kserve_v2_http_endpoints_show_the_ensemble_ready(oanet_stack):
    base = oanet_stack.triton_http_url
    for model in serving.MODELS:
        with urllib.request.urlopen(f"{base}/v2/models/{model}/ready", timeout=10) as response:
            assert response.status == 200
    with urllib.request.urlopen(f"{base}/v2/models/{core.ENSEMBLE_MODEL}", timeout=10) as response:
        metadata = json.loads(response.read())
    assert metadata["versions"] == ["1"]
    assert [t["name"] for t in metadata["inputs"]] == [core.ROI_INPUT, core.PARAM_VALUES, core.PARAM_MISSING]


def scrape(stack: EmbeddedStack) -> dict[tuple[str, frozenset], float]:
    url = f"http://{stack.settings.host}:{stack.settings.triton_metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def metric(samples, name: str, **labels: str) -> float:
    """The sum of a counter's samples with these labels (the parser names counters `<name>_total`)."""
    wanted, names = set(labels.items()), {name, f"{name}_total"}
    return sum(v for (n, lbl), v in samples.items() if n in names and wanted <= lbl)


def test_metrics_count_inferences_and_gate_deactivations(oanet_stack, oanet_triton, test_frames):
    rois, values, missing = served_inputs(test_frames)
    rois, values, missing = rois[:3], np.nan_to_num(values[:3], nan=0.0), np.zeros((3, values.shape[1]), bool)
    values[2, 0] = 1e6  # a grossly implausible reading: the gate switches the parameter modality off
    before = scrape(oanet_stack)
    out = asyncio.run(client_infer(oanet_triton, rois, values, missing))
    assert out["gate_weights"][2, 1] == 0.0

    def grown(samples) -> dict[str, float]:
        return {model: metric(samples, "nv_inference_count", model=model)
                - metric(before, "nv_inference_count", model=model) for model in serving.MODELS}

    # Triton counts a Python-backend model's inferences after its response has left, so a scrape
    # right after the reply can precede the count: wait (bounded) for it to settle.
    deadline = time.monotonic() + 10.0
    while True:
        after = scrape(oanet_stack)
        if all(v == 3 for v in grown(after).values()) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert grown(after) == {model: 3 for model in serving.MODELS}
    off = [metric(s, serving.GATE_METRIC, model=core.FUSION_MODEL, modality="params") for s in (before, after)]
    assert off[1] - off[0] >= 1


# --------------------------------------------------------------------------- bad repositories


def _refused(stack_settings_factory, repo: Path) -> str:
    stack = EmbeddedStack(stack_settings_factory(model_repository=repo))
    try:
        with pytest.raises(StackError) as caught:
            stack.up()
    finally:
        stack.down()
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_repository_with_a_missing_file_is_refused(repo_copy: Path, stack_settings_factory):
    (repo_copy / "oanet_fusion/1/trees/gbdt_fold0.txt").unlink()
    message = _refused(stack_settings_factory, repo_copy)
    assert "oanet_fusion version 1 refused: missing file: oanet_fusion/1/trees/gbdt_fold0.txt" in message


def test_a_repository_with_a_wrong_hash_is_refused(repo_copy: Path, stack_settings_factory):
    with open(repo_copy / "oanet_image_encoder/1/model.pt", "ab") as handle:
        handle.write(b"\0")
    message = _refused(stack_settings_factory, repo_copy)
    assert "oanet_image_encoder version 1 refused: sha256 mismatch: oanet_image_encoder/1/model.pt" in message


def test_a_repository_with_an_unknown_version_is_refused(repo_copy: Path, stack_settings_factory):
    shutil.copytree(repo_copy / "oanet_image_encoder/1", repo_copy / "oanet_image_encoder/2")
    message = _refused(stack_settings_factory, repo_copy)
    assert "oanet_image_encoder version 2 refused: manifest not found" in message
