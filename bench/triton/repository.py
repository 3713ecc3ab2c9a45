"""The repository `oanet bench triton` serves: checked, its unbatched copy (re-hashed), and frames
the model can take."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from bench.common import BenchError
from training.export import verify_export
from triton_models.oanet_fusion import core, integrity, serving


def latest_version(repo: Path) -> int:
    problems = verify_export(repo)
    if problems:
        raise BenchError(f"{repo} cannot be served: {'; '.join(problems)}")
    version = serving.served_versions(repo)[core.FUSION_MODEL]
    assert version is not None  # verify_export found a version
    return version


def read_config(path: Path):
    try:
        return text_format.Parse(path.read_text(encoding="utf-8"), mc.ModelConfig())
    except (OSError, text_format.ParseError) as exc:
        raise BenchError(f"cannot read {path}: {exc}") from None


def check_servable(repo: Path) -> None:
    encoder = read_config(repo / core.ENCODER_MODEL / "config.pbtxt")
    if encoder.backend != "python":
        raise BenchError(f"{core.ENCODER_MODEL} is exported for backend {encoder.backend!r}; the embedded Triton has "
                         "only the Python backend: export with --cnn-backend python")


def unbatched_copy(repo: Path, version: int, target: Path) -> Path:
    """The latest version of `repo` in `target`, with dynamic batching off in every config.

    The manifest hashes the config.pbtxt files, so the copy's manifest gets the new configs'
    hashes (and a new signature when Triton's environment has the signing key): the benchmark
    derives this repository from a verified one on purpose, nothing else changes in it."""
    for model in serving.MODELS:
        shutil.copytree(repo / model / str(version), target / model / str(version))
        config = read_config(repo / model / "config.pbtxt")
        config.ClearField("dynamic_batching")
        (target / model / "config.pbtxt").write_text(
            text_format.MessageToString(config, use_short_repeated_primitives=True), encoding="utf-8")
    rehash_configs(target, version)
    return target


def rehash_configs(repo: Path, version: int) -> None:
    """Record the config.pbtxt files of `repo` in version `version`'s manifest (re-signed with the
    environment's key, if any)."""
    path, problem = integrity.find_manifest(repo, str(version))
    if path is None:
        raise BenchError(f"cannot derive a benchmark repository: {problem}")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest[integrity.CONFIGS_KEY] = {rel: integrity.sha256_file(repo / rel) for rel in manifest[integrity.CONFIGS_KEY]}
    raw = (json.dumps(manifest, indent=2) + "\n").encode("utf-8")
    path.write_bytes(raw)
    key = integrity.environment_key()
    if key:
        path.with_name(integrity.SIGNATURE_FILE).write_text(integrity.signature(raw, key) + "\n", encoding="utf-8")


def bench_frames(version_dir: Path, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames the model can take: random object ROIs, parameters drawn around the training
    means with about 10% of the fields missing."""
    fusion = core.FusionCore.load(version_dir)
    rng = np.random.default_rng(seed)
    size, n_features = int(fusion.config["image_size"]), len(fusion.feature_names)
    rois = rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)
    values = (fusion.w["feat_mean"] + fusion.w["feat_std"] * rng.normal(size=(count, n_features))).astype(np.float32)
    missing = rng.random((count, n_features)) < 0.1
    values[missing] = np.nan
    return rois, values, missing
