"""Session fixtures of the serving tests (tests/triton_models, tests/stream): a tiny trained run,
its exported model repository, and a real tritonserver serving it on free ports.

Loaded as a plugin by tests/conftest.py, so one server serves every test directory.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.embedded.stack import EmbeddedStack
from oanet.profile import LineProfile
from oanet.settings import TritonSettings

SERVED_FRAMES = 96


def make_student(profile: LineProfile, out: Path, threshold: float = 0.9) -> Path:
    """An untrained OCR student of `profile`, written as `oanet ocr distill` writes one."""
    from stream.ocr.distill import build_network, export
    from stream.ocr.student import StudentMeta, profile_charset, profile_sha256

    charset = profile_charset(profile)
    meta = StudentMeta(profile=profile.name, profile_sha256=profile_sha256(profile), charset=charset, height=32,
                       width=64, threshold=threshold, stats={"steps": 0, "training": {"capped_by_wall_time": False}})
    export(build_network(len(charset) + 1, 32), out, meta)
    return out


@pytest.fixture(scope="session")
def served_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """96 small frames (256x192) of the default line."""
    from oanet.profile import DEFAULT_PROFILE_PATH, load_profile
    from training.synth.generate import generate

    root = tmp_path_factory.mktemp("served-data") / "d96"
    generate(root, load_profile(DEFAULT_PROFILE_PATH), SERVED_FRAMES, seed=23, width=256, height=192, workers=1,
             progress=False)
    return root


@pytest.fixture(scope="session")
def served_run(served_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from oanet.cli import main
    from tests.training.test_end_to_end import TINY  # the training tests' tiny configuration: 32 px, 1 epoch

    run = tmp_path_factory.mktemp("served-run") / "run"
    assert main(["train", "--data", str(served_dataset), "--out", str(run), *TINY]) == 0
    return run


@pytest.fixture(scope="session")
def served_repo(served_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Version 1 of a repository exported for the pip Triton (Python-backend CNN runner, CPU)."""
    from training.export import export_run

    repo = tmp_path_factory.mktemp("served-repo") / "repo"
    export_run(served_run, repo)
    return repo


@pytest.fixture(scope="session")
def oanet_stack(served_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    """The embedded stack with tritonserver serving `served_repo`."""
    from tests.conftest import fresh_stack_settings, running_stack

    with running_stack(fresh_stack_settings(tmp_path_factory, model_repository=served_repo)) as stack:
        yield stack


@pytest.fixture(scope="session")
def oanet_triton(oanet_stack: EmbeddedStack) -> TritonSettings:
    """Client settings for `oanet_stack` (short backoff: tests never wait on purpose)."""
    s = oanet_stack.settings
    return TritonSettings(url=f"{s.host}:{s.triton_grpc_port}", request_timeout_s=60, retry_attempts=2,
                          retry_backoff_s=0.01, retry_backoff_max_s=0.05)


@pytest.fixture
def repo_copy(served_repo: Path, tmp_path: Path) -> Path:
    """A private copy of `served_repo` that a test may break."""
    target = tmp_path / "repo"
    shutil.copytree(served_repo, target)
    return target
