"""The integrity control of an exported version (triton_models/oanet_fusion/integrity.py): what
Triton checks at load before any sibling import, what `oanet export --verify` and the worker
check. Unit checks on exported repositories, then the real tritonserver refusing tampered ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from oanet.settings import load_settings
from stream.worker.errors import WorkerError
from stream.worker.repository import read_exported
from tests.triton_models.test_triton_serving import _refused
from training.export import export_run, verify_export
from triton_models.oanet_fusion import core, integrity

KEY = "integrity-test-key"


def problems(repo: Path, model: str = core.FUSION_MODEL, key: str | None = None, **kw) -> list[str]:
    return integrity.version_problems(repo / model / "1", key, **kw)


def rewrite_manifest(repo: Path, **changes) -> None:
    """Rewrite the manifest as an attacker with write access would: consistent hashes, new facts."""
    path = repo / core.FUSION_MODEL / "1" / integrity.MANIFEST_FILE
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest, indent=2) + "\n")


@pytest.fixture(scope="module")
def signed_repo(served_run: Path, tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("signed") / "repo"
    export_run(served_run, repo, signing_key=KEY)
    return repo


@pytest.fixture(scope="module")
def libtorch_repo(served_run: Path, tmp_path_factory) -> Path:
    """Exported for the NGC image: the CNN served by the libtorch backend, no runner model.py."""
    repo = tmp_path_factory.mktemp("libtorch") / "repo"
    export_run(served_run, repo, cnn_backend="libtorch")
    return repo


def test_an_exported_version_passes_for_every_model(served_repo):
    for model in (core.ENCODER_MODEL, core.FUSION_MODEL, core.ENSEMBLE_MODEL):
        assert problems(served_repo, model) == [], model
    manifest = json.loads((served_repo / core.FUSION_MODEL / "1" / integrity.MANIFEST_FILE).read_text())
    assert set(manifest["config_sha256"]) == {f"{m}/config.pbtxt" for m in
                                              (core.ENCODER_MODEL, core.FUSION_MODEL, core.ENSEMBLE_MODEL)}
    assert f"{core.FUSION_MODEL}/1/integrity.py" in manifest["files"]


@pytest.mark.parametrize("rel", ["oanet_fusion/1/lightgbm.py", "oanet_image_encoder/1/torch.py",
                                 "oanet_fusion/1/__pycache__/core.cpython-311.pyc", "oanet_fusion/1/__pycache__/integrity.cpython-311.pyc", "oanet/1/notes.txt"])
def test_an_unlisted_file_in_any_version_folder_is_refused(repo_copy, rel):
    (repo_copy / rel).parent.mkdir(parents=True, exist_ok=True)
    (repo_copy / rel).write_text("print('imported')\n")
    assert f"unlisted file: {rel} (not written by `oanet export`: remove it)" in problems(repo_copy)
    assert verify_export(repo_copy)  # `oanet export --verify` says the same


def test_the_encoder_checks_its_own_folder(repo_copy):
    (repo_copy / "oanet_fusion/1/lightgbm.py").write_text("")
    assert problems(repo_copy, core.ENCODER_MODEL, only_model=core.ENCODER_MODEL) == []
    (repo_copy / "oanet_image_encoder/1/torch.py").write_text("")
    assert problems(repo_copy, core.ENCODER_MODEL, only_model=core.ENCODER_MODEL) == [
        "unlisted file: oanet_image_encoder/1/torch.py (not written by `oanet export`: remove it)"]


def test_a_changed_config_is_refused_for_the_served_version_only(repo_copy):
    config = repo_copy / core.FUSION_MODEL / "config.pbtxt"
    config.write_text(config.read_text() + "\n# edited\n")
    found = problems(repo_copy)
    assert len(found) == 1 and found[0].startswith("sha256 mismatch: oanet_fusion/config.pbtxt")
    assert problems(repo_copy, check_configs=False) == []


def test_a_signed_manifest_passes_with_its_key_only(signed_repo):
    assert (signed_repo / core.FUSION_MODEL / "1" / integrity.SIGNATURE_FILE).is_file()
    assert problems(signed_repo, key=KEY) == []
    assert verify_export(signed_repo, signing_key=KEY) == []
    (wrong,) = problems(signed_repo, key="another key")
    assert "does not match its signature" in wrong


def test_a_rewritten_manifest_fails_under_the_key(signed_repo, tmp_path, served_repo):
    repo = tmp_path / "repo"
    shutil.copytree(signed_repo, repo)
    rewrite_manifest(repo, threshold=0.01)
    assert problems(repo) == []  # hashes alone cannot tell: the rewritten manifest is consistent
    (found,) = problems(repo, key=KEY)
    assert "does not match its signature" in found
    with pytest.raises(WorkerError, match="does not match its signature"):
        read_exported(repo, signing_key=KEY)
    # an unsigned repository under a key is refused too
    (unsigned,) = problems(served_repo, key=KEY)
    assert "is not signed" in unsigned


def test_the_fusion_model_verifies_the_libtorch_cnn(libtorch_repo, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(libtorch_repo, repo)
    assert not (repo / core.ENCODER_MODEL / "1" / "model.py").exists()  # nothing of ours runs beside model.pt
    assert problems(repo) == []
    with open(repo / core.ENCODER_MODEL / "1" / "model.pt", "ab") as handle:
        handle.write(b"\0")
    (repo / core.ENCODER_MODEL / "1" / "extra.pt").write_bytes(b"")
    found = problems(repo)
    assert any(p.startswith("sha256 mismatch: oanet_image_encoder/1/model.pt") for p in found)
    assert "unlisted file: oanet_image_encoder/1/extra.pt (not written by `oanet export`: remove it)" in found


def test_the_signing_key_setting_is_the_variable_triton_reads(monkeypatch):
    monkeypatch.setenv(integrity.SIGNING_KEY_ENV, "k1")
    assert load_settings().model.signing_key.get_secret_value() == "k1" == integrity.environment_key()
    assert "k1" not in repr(load_settings())


# --------------------------------------------------------------------------- the real tritonserver


def test_triton_refuses_an_unlisted_module_before_importing_it(repo_copy, stack_settings_factory, tmp_path):
    marker = tmp_path / "imported"
    (repo_copy / "oanet_fusion/1/lightgbm.py").write_text(f"open({str(marker)!r}, 'w').close()\n"
                                                          "raise ImportError('a stray module ran')\n")
    message = _refused(stack_settings_factory, repo_copy)
    assert ("oanet_fusion version 1 refused: unlisted file: oanet_fusion/1/lightgbm.py "
            "(not written by `oanet export`: remove it)") in message
    assert not marker.exists(), "the stray lightgbm.py was imported"


def test_triton_refuses_a_rewritten_manifest_under_the_signing_key(signed_repo, tmp_path, monkeypatch,
                                                                    stack_settings_factory):
    repo = tmp_path / "repo"
    shutil.copytree(signed_repo, repo)
    rewrite_manifest(repo, threshold=0.01)
    monkeypatch.setenv(integrity.SIGNING_KEY_ENV, KEY)  # Triton's environment (a Secret in the cluster)
    message = _refused(stack_settings_factory, repo)
    assert "oanet_fusion version 1 refused: manifest" in message and "does not match its signature" in message
