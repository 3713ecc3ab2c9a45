"""The serving helpers in-process: PyTriton-style batching, request validation, configuration
parameters, the repository checks the Triton models run at load, and gate monitoring."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from triton_models.oanet_fusion import core, serving

FEATURES = ["temp", "exposure", "speed"]


def _request(n: int, f: int = 3, e: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n, f)).astype(np.float32)
    missing = np.zeros((n, f), bool)
    return {core.EMBEDDING: rng.normal(size=(n, e)).astype(np.float32),
            core.IMAGE_LOGIT: rng.normal(size=(n, 1)).astype(np.float32),
            core.PARAM_VALUES: values, core.PARAM_MISSING: missing}


def test_run_batched_runs_once_over_valid_requests_and_splits_back():
    calls = []

    def compute(batch):
        calls.append(len(batch["x"]))
        return {"y": batch["x"] * 2, "s": batch["x"].sum(axis=1)}

    requests = [{"x": np.full((2, 3), 1.0)}, serving.RequestRejected("bad"), {"x": np.full((1, 3), 5.0)},
                {"x": np.full((3, 3), 7.0)}]
    out = serving.run_batched(requests, compute)
    assert calls == [6]
    assert isinstance(out[1], serving.RequestRejected) and str(out[1]) == "bad"
    assert [len(r["y"]) for r in (out[0], out[2], out[3])] == [2, 1, 3]
    assert (out[0]["y"] == 2.0).all() and (out[2]["y"] == 10.0).all() and (out[3]["s"] == 21.0).all()


def test_run_batched_skips_compute_when_every_request_is_rejected_and_checks_row_counts():
    rejected = [serving.RequestRejected("a"), serving.RequestRejected("b")]
    assert serving.run_batched(rejected, lambda batch: pytest.fail("compute must not run")) == rejected
    with pytest.raises(RuntimeError, match="has 1 rows for 3 frames"):
        serving.run_batched([{"x": np.zeros((3, 1))}], lambda batch: {"y": np.zeros((1, 1))})
    with pytest.raises(serving.RequestRejected, match="disagree on the batch size"):
        serving.batch_size({"a": np.zeros((2, 1)), "b": np.zeros((3, 1))})


def test_check_fusion_request_accepts_consistent_missing_fields():
    request = _request(3)
    request[core.PARAM_VALUES][1, :] = np.nan
    request[core.PARAM_MISSING][1, :] = True  # all fields missing: a frame whose OCR failed
    serving.check_fusion_request(request, FEATURES, 4)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r[core.PARAM_VALUES].__setitem__((1, 2), np.inf), "frame 1, field 'speed', is infinite"),
        (lambda r: r[core.PARAM_VALUES].__setitem__((0, 0), -np.inf), "field 'temp', is infinite"),
        (lambda r: r[core.PARAM_VALUES].__setitem__((2, 1), np.nan), "is NaN but PARAM_MISSING says present"),
        (lambda r: r[core.PARAM_MISSING].__setitem__((0, 1), True), "holds a number but PARAM_MISSING says missing"),
        (lambda r: r[core.EMBEDDING].__setitem__((0, 0), np.nan), "must be finite"),
    ],
)
def test_check_fusion_request_rejects_malformed_values(change, message):
    request = _request(3)
    change(request)
    with pytest.raises(serving.RequestRejected, match=message):
        serving.check_fusion_request(request, FEATURES, 4)


def test_check_fusion_request_rejects_wrong_widths():
    with pytest.raises(serving.RequestRejected, match=r"must be \[N, 3\]"):
        serving.check_fusion_request(_request(2, f=4), FEATURES, 4)
    with pytest.raises(serving.RequestRejected, match=r"EMBEDDING must be \[N, 5\]"):
        serving.check_fusion_request(_request(2), FEATURES, 5)


def test_fusion_outputs_name_every_predict_key_with_frames_first():
    prediction = {"defect_probability": np.zeros(4), "branch_probabilities": np.zeros((4, 3)),
                  "gate_weights": np.zeros((4, 3)), "kl_scores": np.zeros((4, 2)), "present_fraction": np.ones(4)}
    out = serving.fusion_outputs(prediction)
    assert {k: v.shape for k, v in out.items()} == {core.DEFECT_PROBABILITY: (4, 1), core.BRANCH_PROBABILITIES: (4, 3),
                                                    core.GATE_WEIGHTS: (4, 3), core.KL_SCORES: (4, 2)}
    assert all(v.dtype == np.float32 for v in out.values())


def test_cpu_threads_shares_the_cores_among_cpu_instances():
    def config(count, threads="0", kind="KIND_CPU"):
        return {"instance_group": [{"kind": kind, "count": count}],
                "parameters": {serving.CPU_THREADS: {"string_value": threads}}}

    assert serving.cpu_threads(config(1), cpu_count=8) == 8
    assert serving.cpu_threads(config(3), cpu_count=8) == 2
    assert serving.cpu_threads(config(16), cpu_count=8) == 1
    assert serving.cpu_threads(config(4, threads="3"), cpu_count=8) == 3
    assert serving.cpu_threads(config(2, kind="KIND_GPU"), cpu_count=8) == 8
    assert serving.cpu_threads({}, cpu_count=2) == 1
    with pytest.raises(ValueError, match="cpu_threads must be an integer"):
        serving.cpu_threads(config(1, threads="many"))


def test_torch_device_follows_the_instance_kind():
    assert serving.torch_device("GPU", "1") == "cuda:1"
    assert serving.torch_device("CPU", "0") == "cpu"


def test_info_parameters_round_trip_and_refuse_garbage():
    cfg = {"feature_names": FEATURES, "image_size": 32, "embedding_dim": 16, "threshold": 0.1 + 0.2}
    params = serving.info_parameters(3, cfg)
    assert set(params) == set(serving.INFO_KEYS)
    info = serving.parse_info_parameters(params)
    assert info == {"oanet_version": 3, "feature_names": FEATURES, "image_size": 32, "embedding_dim": 16,
                    "threshold": 0.1 + 0.2, serving.PROFILE_KEY: None}
    # The line profile, when the run has one, rides along as JSON (what the worker reads).
    profile = {"name": "line-x", "fields": [{"name": "temp", "kind": "number"}]}
    with_profile = serving.info_parameters(3, cfg, profile)
    assert json.loads(serving.parse_info_parameters(with_profile)[serving.PROFILE_KEY]) == profile
    assert serving.info_mismatches(params, 3, cfg) == []
    assert "threshold" in serving.info_mismatches({**params, "threshold": "0.5"}, 3, cfg)[0]
    with pytest.raises(ValueError, match="lack image_size"):
        serving.parse_info_parameters({k: v for k, v in params.items() if k != "image_size"})
    with pytest.raises(ValueError, match="unreadable"):
        serving.parse_info_parameters({**params, "feature_names": "{\"a\": 1}"})


def test_deactivated_compares_kl_with_each_modality_off_threshold():
    gate = {"enabled": True, "image": {"off": 2.0}, "params": {"off": 5.0}}
    kl = np.array([[1.0, 1.0], [3.0, 1.0], [3.0, 6.0]])
    assert serving.deactivated(kl, gate).tolist() == [[False, False], [True, False], [True, True]]
    assert not serving.deactivated(kl, {**gate, "enabled": False}).any()


# --------------------------------------------------------------------------- repository checks


def test_exported_repository_passes_the_load_checks_of_every_model(served_repo: Path):
    for model in (core.ENCODER_MODEL, core.FUSION_MODEL):
        assert serving.repository_problems(served_repo, model, 1) == []
    assert serving.served_versions(served_repo) == {m: 1 for m in serving.MODELS}


def test_repository_checks_name_missing_and_tampered_files(repo_copy: Path):
    (repo_copy / "oanet_fusion/1/trees/gbdt_fold0.txt").unlink()
    with open(repo_copy / "oanet_image_encoder/1/model.pt", "ab") as handle:
        handle.write(b"\0")
    fusion = serving.repository_problems(repo_copy, core.FUSION_MODEL, 1)
    assert "missing file: oanet_fusion/1/trees/gbdt_fold0.txt" in fusion
    assert any(p.startswith("sha256 mismatch: oanet_image_encoder/1/model.pt") for p in fusion)
    # the CNN runner checks its own files only
    encoder = serving.repository_problems(repo_copy, core.ENCODER_MODEL, 1)
    assert len(encoder) == 1 and encoder[0].startswith("sha256 mismatch: oanet_image_encoder/1/model.pt")


def test_repository_checks_refuse_unknown_and_mismatched_versions(repo_copy: Path):
    shutil.copytree(repo_copy / "oanet_image_encoder/1", repo_copy / "oanet_image_encoder/2")
    assert serving.repository_problems(repo_copy, core.ENCODER_MODEL, 2) == [
        f"manifest not found: {repo_copy / 'oanet_fusion/2/manifest.json'}"]
    problems = serving.repository_problems(repo_copy, core.FUSION_MODEL, 1)
    assert len(problems) == 1 and "must serve one version" in problems[0]
    assert "latest versions are oanet_image_encoder 2:" in problems[0]
    shutil.rmtree(repo_copy / "oanet_image_encoder/2")

    manifest_path = repo_copy / "oanet_fusion/1/manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "format_version": 99, "version": 4}))
    problems = serving.repository_problems(repo_copy, core.FUSION_MODEL, 1)
    assert f"manifest format_version 99 is not supported (this model code reads {core.FORMAT_VERSION})" in problems
    assert "manifest describes version 4 but sits in version folder 1" in problems
    manifest_path.write_text("{not json")
    assert serving.repository_problems(repo_copy, core.FUSION_MODEL, 1)[0].startswith("manifest ")
