"""The stream worker's Triton client against a real tritonserver: readiness, the served model's
facts, inference, and the mapping of failures to TritonUnavailable / InferenceRejected."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from deploy.embedded.stack import free_port
from oanet.errors import ConfigError, OanetError
from oanet.preprocess import param_arrays
from oanet.settings import TritonSettings, load_settings
from stream.errors import InferenceRejected, StreamError, TritonUnavailable
from stream.served_model import ServedModel
from stream.triton_client import TritonClient
from triton_models.oanet_fusion import core


def run(settings: TritonSettings, action):
    """`action(client)` in a fresh event loop with a fresh client (closed afterwards)."""

    async def main():
        async with TritonClient(settings) as client:
            return await action(client)

    return asyncio.run(main())


def frames(model: ServedModel, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rois = rng.integers(0, 256, (n, model.image_size, model.image_size, 3), dtype=np.uint8)
    values, missing = param_arrays(
        [{name: (None if rng.random() < 0.2 else float(rng.normal(50, 5))) for name in model.feature_names}
         for _ in range(n)], model.feature_names)
    return rois, values, missing


@pytest.fixture(scope="module")
def served_model(oanet_triton: TritonSettings) -> ServedModel:
    async def ready_then_info(client: TritonClient):
        await client.wait_ready(60)
        return await client.model_info()

    return run(oanet_triton, ready_then_info)


@pytest.mark.slow
def test_model_info_describes_the_served_version(served_model: ServedModel, oanet_triton, served_run: Path):
    fusion = json.loads((served_run / "model/fusion/fusion.json").read_text())
    assert served_model.name == core.ENSEMBLE_MODEL and served_model.version == 1
    assert served_model.feature_names == tuple(fusion["feature_names"])
    assert served_model.threshold == fusion["threshold"]
    assert (served_model.image_size, served_model.embedding_dim) == (fusion["image_size"], fusion["embedding_dim"])
    assert served_model.max_batch_size == 64 and served_model.branches == core.BRANCHES

    async def states(client: TritonClient):
        return await client.is_ready(), await client.readiness()

    ready, readiness = run(oanet_triton, states)
    assert ready and readiness == {m: "ready" for m in (core.ENSEMBLE_MODEL, core.ENCODER_MODEL, core.FUSION_MODEL)}


@pytest.mark.slow
def test_infer_answers_every_frame_with_the_predict_keys(served_model: ServedModel, oanet_triton):
    rois, values, missing = frames(served_model, 12)
    out = run(oanet_triton, lambda client: client.infer(rois, values, missing))
    assert {k: v.shape for k, v in out.items()} == {"defect_probability": (12,), "branch_probabilities": (12, 3),
                                                    "gate_weights": (12, 3), "kl_scores": (12, 2),
                                                    "present_fraction": (12,)}
    assert all(v.dtype == np.float32 for v in out.values())
    np.testing.assert_allclose(out["gate_weights"].sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(out["present_fraction"], (~missing).mean(axis=1), atol=1e-6)
    # frame i's answer does not depend on the other frames sent with it
    one = run(oanet_triton, lambda client: client.infer(rois[5:6], values[5:6], missing[5:6]))
    np.testing.assert_allclose(one["defect_probability"], out["defect_probability"][5:6], atol=1e-5)


@pytest.mark.slow
def test_a_frame_gets_bit_identical_answers_in_whatever_batch_triton_runs_it(served_model, oanet_triton, oanet_stack):
    """A replayed frame's verdict must not depend on the frames Triton's dynamic batcher put
    beside it (the worker's verdicts are deterministic for a model version)."""
    from bench.triton.measure import executions

    rois, values, missing = frames(served_model, 32, seed=3)
    metrics = f"http://127.0.0.1:{oanet_stack.settings.triton_metrics_port}/metrics"

    async def alone_then_in_crowds(client: TritonClient):
        alone = await client.infer(rois[:1], values[:1], missing[:1])
        before = executions(metrics, core.ENCODER_MODEL)
        crowds = []
        for shift in (0, 5, 17, 31):  # frame 0 at other positions, among other frames
            order = np.roll(np.arange(len(rois)), shift)
            crowds.append((int(np.argmax(order == 0)), await client.infer(rois[order], values[order], missing[order])))
        after = executions(metrics, core.ENCODER_MODEL)
        return alone, crowds, (after[0] - before[0]) / max(1.0, after[1] - before[1])

    alone, crowds, mean_batch = run(oanet_triton, alone_then_in_crowds)
    assert mean_batch > 1.5, "Triton did not batch the concurrent requests: nothing was compared"
    for row, out in crowds:
        for key in ("defect_probability", "branch_probabilities", "gate_weights", "kl_scores"):
            assert np.array_equal(out[key][row], alone[key][0]), key


@pytest.mark.slow
def test_a_frame_the_server_rejects_raises_inference_rejected_with_its_index(served_model, oanet_triton):
    rois, values, missing = frames(served_model, 4)
    values[2, missing[2].argmin()] = np.inf
    with pytest.raises(InferenceRejected) as caught:
        run(oanet_triton, lambda client: client.infer(rois, values, missing))
    assert caught.value.frame_index == 2
    message = str(caught.value)
    assert "\n" not in message and message.startswith("Triton rejected frame 2: ") and "is infinite" in message


@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda r, v, m: (r[:, :-1], v, m), r"rois must be uint8 \[N, (\d+), \1, 3\]"),
        (lambda r, v, m: (r.astype(np.float32), v, m), "rois must be uint8"),
        (lambda r, v, m: (r, v[:, :-1], m), "values must be float"),
        (lambda r, v, m: (r, v, m.astype(np.int8)), "missing must be bool"),
        (lambda r, v, m: (r, v[:-1], m[:-1]), r"values must be float \[3, "),
    ],
)
def test_malformed_arrays_are_rejected_before_sending(served_model, oanet_triton, change, match):
    arrays = change(*frames(served_model, 3))
    with pytest.raises(InferenceRejected, match=match) as caught:
        run(oanet_triton, lambda client: client.infer(*arrays))
    assert caught.value.frame_index is None


@pytest.mark.slow
def test_an_unknown_model_is_unavailable_not_rejected(served_model, oanet_triton):
    settings = oanet_triton.model_copy(update={"model_name": "no_such_model"})

    async def probe(client: TritonClient):
        with pytest.raises(TritonUnavailable, match="not ready after 0.2 s: no_such_model not ready"):
            await client.wait_ready(0.2)
        return await client.infer(*frames(served_model, 1))

    with pytest.raises(TritonUnavailable, match=r"config of no_such_model: .*failed \(NOT_FOUND\)"):
        run(settings, probe)


@pytest.mark.slow
def test_a_passed_deadline_is_unavailable(served_model, oanet_triton):
    # A full batch through the CNN and two Python-backend models takes milliseconds; gRPC's
    # timers are coarse enough that a cheap call (a config read) can beat a microsecond deadline.
    settings = oanet_triton.model_copy(update={"request_timeout_s": 1e-4})
    with pytest.raises(TritonUnavailable, match="deadline exceeded"):
        run(settings, lambda client: client.infer(*frames(served_model, served_model.max_batch_size)))


def test_a_server_that_is_down_is_unavailable_after_the_retries():
    settings = TritonSettings(url=f"127.0.0.1:{free_port()}", retry_attempts=2, retry_backoff_s=0.01,
                              retry_backoff_max_s=0.02, request_timeout_s=5)

    async def probe(client: TritonClient):
        assert not await client.is_ready()
        assert all(state.startswith("unreachable: ") for state in (await client.readiness()).values())
        with pytest.raises(TritonUnavailable, match="is not ready after 0.1 s"):
            await client.wait_ready(0.1)
        await client.infer(np.zeros((1, 8, 8, 3), np.uint8), np.zeros((1, 2), np.float32), np.zeros((1, 2), bool))

    with pytest.raises(TritonUnavailable) as caught:
        run(settings, probe)
    assert "is unavailable after 3 attempt(s)" in str(caught.value) and "\n" not in str(caught.value)


def test_errors_form_the_stream_hierarchy():
    for error in (TritonUnavailable, InferenceRejected):
        assert issubclass(error, StreamError) and issubclass(error, OanetError)
    assert not issubclass(InferenceRejected, TritonUnavailable)
    with pytest.raises(StreamError, match="triton.url is empty"):
        TritonClient(TritonSettings())


def test_client_settings_are_validated(monkeypatch):
    with pytest.raises(ValidationError, match="retry_backoff_max_s must not be smaller"):
        TritonSettings(retry_backoff_s=1.0, retry_backoff_max_s=0.5)
    with pytest.raises(ValidationError):
        TritonSettings(max_in_flight=0)
    monkeypatch.setenv("OANET_TRITON__RETRY_ATTEMPTS", "-1")
    with pytest.raises(ConfigError, match="triton.retry_attempts"):
        load_settings()
    monkeypatch.setenv("OANET_TRITON__RETRY_ATTEMPTS", "7")
    monkeypatch.setenv("OANET_TRITON__MAX_IN_FLIGHT", "16")
    settings = load_settings().triton
    assert (settings.retry_attempts, settings.max_in_flight, settings.request_timeout_s) == (7, 16, 10.0)
