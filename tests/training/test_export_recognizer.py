"""`oanet export --recognizer`: the line's OCR student travels in the versioned model repository,
hashed in the manifest like every other file, and the worker's OCR processes read it from the
served version's folder; a student that does not match its manifest is refused in one line.

The student here is an untrained network of the run's profile: what is pinned is where it goes
and who checks it, not what it reads (tests/stream/ocr cover that)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from oanet.cli import main
from oanet.contracts import RECOGNIZER_FOLDER
from oanet.profile import DEFAULT_PROFILE_PATH, LineProfile, load_profile
from oanet.settings import load_settings
from stream.ocr.student import STUDENT_META_FILE, STUDENT_MODEL_FILE, Student
from stream.worker.errors import WorkerError
from stream.worker.repository import exported_recognizer, ocr_settings_for, read_exported
from tests.serving_fixtures import make_student
from training.errors import ExportError
from training.export import export_run, verify_export
from triton_models.oanet_fusion import core, integrity

STUDENT_REL = f"{core.FUSION_MODEL}/1/{RECOGNIZER_FOLDER}"


@pytest.fixture(scope="module")
def run_profile(served_run: Path) -> LineProfile:
    return load_profile(served_run / "model" / "profile.yaml")


@pytest.fixture(scope="module")
def student(run_profile: LineProfile, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_student(run_profile, tmp_path_factory.mktemp("student") / "s")


@pytest.fixture(scope="module")
def student_repo(served_run: Path, student: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("student-repo") / "repo"
    assert main(["export", "--run", str(served_run), "--repo", str(repo), "--recognizer", str(student)]) == 0
    return repo


def _served(repo: Path):
    """What the model server publishes for version 1 of `repo` (as the worker sees it)."""
    return read_exported(repo).model


def _settings(repo: Path, **worker):
    return load_settings(stack={"model_repository": str(repo)}, worker=worker)


def test_the_student_is_exported_into_the_version_and_hashed(student_repo: Path, student: Path, run_profile) -> None:
    manifest = json.loads((student_repo / core.FUSION_MODEL / "1" / integrity.MANIFEST_FILE).read_text())
    for name in (STUDENT_MODEL_FILE, STUDENT_META_FILE):
        exported = student_repo / STUDENT_REL / name
        assert exported.read_bytes() == (student / name).read_bytes()
        assert manifest["files"][f"{STUDENT_REL}/{name}"] == integrity.sha256_file(exported)
    assert manifest["recognizer"]["folder"] == RECOGNIZER_FOLDER and manifest["recognizer"]["threshold"] == 0.9
    assert verify_export(student_repo) == []
    assert read_exported(student_repo).profile == run_profile


def test_the_worker_reads_with_the_student_of_the_served_version(student_repo: Path, run_profile) -> None:
    assert exported_recognizer(student_repo, 1) == student_repo / STUDENT_REL
    ocr = ocr_settings_for(_settings(student_repo), _served(student_repo))
    assert ocr.recognizer == student_repo / STUDENT_REL
    # What each OCR process then loads: the student, for the profile the served version publishes.
    reads = Student(ocr.recognizer, read_exported(student_repo).profile, threads=1).recognize(
        [np.full((20, 80), 255, np.uint8)])
    assert len(reads) == 1
    # worker.student=off, or a folder in ocr.recognizer, and the exported one is not read.
    assert ocr_settings_for(_settings(student_repo, student="off"), _served(student_repo)).recognizer is None
    mine = load_settings(stack={"model_repository": str(student_repo)}, ocr={"recognizer": "/elsewhere"})
    assert ocr_settings_for(mine, _served(student_repo)).recognizer == Path("/elsewhere")
    # A repository here whose version 1 is not the served one (another threshold): its student
    # is not used, and the worker reads with PaddleOCR.
    other = dataclasses.replace(_served(student_repo), threshold=0.123)
    assert ocr_settings_for(_settings(student_repo), other).recognizer is None


def test_a_version_without_a_student_leaves_paddleocr_alone(served_repo: Path, tmp_path: Path) -> None:
    assert exported_recognizer(served_repo, 1) is None
    assert ocr_settings_for(_settings(served_repo), _served(served_repo)).recognizer is None
    # A repository the worker cannot see (a remote Triton's): PaddleOCR only, no error.
    assert ocr_settings_for(_settings(tmp_path / "absent"), _served(served_repo)).recognizer is None


@pytest.mark.parametrize("name", [STUDENT_MODEL_FILE, STUDENT_META_FILE])
def test_a_tampered_student_is_refused_in_one_line(student_repo: Path, tmp_path: Path, name: str) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(student_repo, repo)
    target = repo / STUDENT_REL / name
    if name == STUDENT_META_FILE:  # a lower threshold: more reads accepted, some of them wrong
        meta = json.loads(target.read_text())
        meta["threshold"] = 0.1
        target.write_text(json.dumps(meta))
    else:
        with open(target, "ab") as handle:
            handle.write(b"\0")
    with pytest.raises(WorkerError) as refused:
        ocr_settings_for(_settings(repo), _served(student_repo))
    message = str(refused.value)
    assert "\n" not in message and f"sha256 mismatch: {STUDENT_REL}/{name}" in message
    assert message.startswith(f"the OCR recogniser of {repo} version 1 does not verify")
    assert any(f"{STUDENT_REL}/{name}" in p for p in verify_export(repo))  # `oanet export --verify` says so too
    # Turned off, the worker does not read it (and Triton's own check is Triton's).
    assert ocr_settings_for(_settings(repo, student="off"), _served(student_repo)).recognizer is None


def test_a_student_slipped_into_a_version_or_taken_out_is_refused(served_repo: Path, student_repo: Path,
                                                                   student: Path, tmp_path: Path) -> None:
    slipped = tmp_path / "slipped"
    shutil.copytree(served_repo, slipped)
    shutil.copytree(student, slipped / STUDENT_REL)
    with pytest.raises(WorkerError, match=f"unlisted file: {STUDENT_REL}/{STUDENT_META_FILE}"):
        exported_recognizer(slipped, 1)
    removed = tmp_path / "removed"
    shutil.copytree(student_repo, removed)
    shutil.rmtree(removed / STUDENT_REL)
    with pytest.raises(WorkerError, match="is missing, but the manifest lists a recogniser"):
        exported_recognizer(removed, 1)


def test_export_refuses_a_student_of_another_line(served_run: Path, tmp_path: Path) -> None:
    other = make_student(load_profile(DEFAULT_PROFILE_PATH.parent / "line-b.yaml"), tmp_path / "b")
    with pytest.raises(ExportError, match="was distilled for line profile 'line-b'"):
        export_run(served_run, tmp_path / "repo", recognizer=other)
    with pytest.raises(ExportError, match="recognizer.json is missing"):
        export_run(served_run, tmp_path / "repo", recognizer=tmp_path)
    assert not (tmp_path / "repo" / core.FUSION_MODEL / "1").exists()  # nothing half-written


def _config(repo: Path, model: str):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    return text_format.Parse((repo / model / "config.pbtxt").read_text(), mc.ModelConfig())


def test_the_student_is_also_a_model_of_the_version_for_triton(student_repo: Path, student: Path,
                                                               served_run: Path, tmp_path: Path) -> None:
    from stream.ocr.student import student_digest
    from triton_models.oanet_fusion import serving

    served = student_repo / core.STUDENT_MODEL / "1"
    assert sorted(p.name for p in served.iterdir()) == ["core.py", "integrity.py", "model.py", core.STUDENT_FILE,
                                                        "serving.py"]
    assert (served / core.STUDENT_FILE).read_bytes() == (student / STUDENT_MODEL_FILE).read_bytes()
    manifest = json.loads((student_repo / core.FUSION_MODEL / "1" / integrity.MANIFEST_FILE).read_text())
    assert manifest["models"]["ocr_student"] == core.STUDENT_MODEL
    assert manifest["files"][f"{core.STUDENT_MODEL}/1/{core.STUDENT_FILE}"] == integrity.sha256_file(
        served / core.STUDENT_FILE)
    config = _config(student_repo, core.STUDENT_MODEL)
    assert config.backend == "python" and config.max_batch_size == 64 and config.HasField("dynamic_batching")
    assert [(t.name, list(t.dims)) for t in config.input] == [(core.STUDENT_INPUT, [1, 32, 64])]
    # The make_student network: 64 columns / 4 per step, blank + the profile's charset.
    charset = json.loads((student / STUDENT_META_FILE).read_text())["charset"]
    assert [(t.name, list(t.dims)) for t in config.output] == [(core.STUDENT_OUTPUT, [16, len(charset) + 1])]
    params = {key: value.string_value for key, value in config.parameters.items()}
    assert params[serving.STUDENT_DIGEST_KEY] == student_digest(student)
    assert params[serving.STUDENT_VERSION_KEY] == "1"
    # The NGC container serves the same file with its ONNX Runtime backend, next to libtorch.
    ngc = tmp_path / "ngc"
    export_run(served_run, ngc, cnn_backend="libtorch", recognizer=student)
    config = _config(ngc, core.STUDENT_MODEL)
    assert config.backend == "onnxruntime" and config.default_model_filename == core.STUDENT_FILE
    assert [p.name for p in (ngc / core.STUDENT_MODEL / "1").iterdir()] == [core.STUDENT_FILE]
    assert verify_export(ngc) == []
    # Tampering with the served copy is what `oanet export --verify` (and Triton at load) refuses.
    with open(ngc / core.STUDENT_MODEL / "1" / core.STUDENT_FILE, "ab") as handle:
        handle.write(b"\0")
    assert any(f"sha256 mismatch: {core.STUDENT_MODEL}/1/{core.STUDENT_FILE}" in p for p in verify_export(ngc))


def test_a_version_without_a_student_leaves_the_older_student_where_it_is(student_repo: Path, served_run: Path,
                                                                          tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(student_repo, repo)
    assert export_run(served_run, repo)[0] == 2
    assert not (repo / core.STUDENT_MODEL / "2").exists() and (repo / core.STUDENT_MODEL / "1").is_dir()
    assert verify_export(repo) == [] and verify_export(repo, 1) == []
    assert _config(repo, core.STUDENT_MODEL).parameters["oanet_version"].string_value == "1"
