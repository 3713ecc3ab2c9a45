"""Factories for stream tests: rendered frames in a profile's layout, real OCR engines, a small
line's dataset and a tiny model exported for it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from oanet.dataset import Dataset, load_dataset
from oanet.profile import LineProfile, load_profile
from tests.conftest import TEST_DATA
from tests.stream.frames import DEFAULT_PROFILE, render_frame, sample_value

# A small line (320x240, three printed numbers): OCR costs tens of ms per frame on CPU, so
# stream tests can push hundreds of frames through the worker.
LINE_T_PROFILE = TEST_DATA / "profiles" / "line-t.yaml"
LINE_T_FRAMES = 120


@pytest.fixture(scope="session")
def line_profile() -> LineProfile:
    return load_profile(DEFAULT_PROFILE)


@pytest.fixture
def make_frame(line_profile: LineProfile) -> Callable[..., tuple[np.ndarray, dict[str, Any]]]:
    """make_frame(seed, profile=None, **render options) -> (BGR frame, printed params)."""

    def factory(seed: int, profile: LineProfile | None = None, **options: Any) -> tuple[np.ndarray, dict[str, Any]]:
        profile = profile or line_profile
        rng = np.random.default_rng(1000 + seed)
        params = {f.name: sample_value(f, rng) for f in profile.fields}
        return render_frame(profile, params, seed=seed, **options), params

    return factory


@pytest.fixture(scope="session")
def ocr_settings(tmp_path_factory: pytest.TempPathFactory):
    from stream.ocr.settings import OcrSettings

    return OcrSettings(cache_dir=tmp_path_factory.mktemp("ocr-cache"))


@pytest.fixture(scope="session")
def template_engine(line_profile: LineProfile, ocr_settings):
    """The real PaddleOCR recognizer, loaded once per test session."""
    from stream.ocr.engine import OcrEngine

    engine = OcrEngine(line_profile, ocr_settings, mode="template")
    engine.warm_up()
    return engine


@pytest.fixture(scope="session")
def full_engine(line_profile: LineProfile, ocr_settings):
    from stream.ocr.engine import OcrEngine

    engine = OcrEngine(line_profile, ocr_settings, mode="full")
    engine.warm_up()
    return engine


@pytest.fixture(scope="session")
def line_t_profile() -> LineProfile:
    return load_profile(LINE_T_PROFILE)


@pytest.fixture(scope="session")
def line_t_dataset(tmp_path_factory, line_t_profile) -> Dataset:
    """120 synthetic frames of the small line (seed 11), made once."""
    from training.synth.generate import generate

    root = tmp_path_factory.mktemp("worker-data") / "line-t"
    generate(root, line_t_profile, LINE_T_FRAMES, seed=11, workers=1, progress=False)
    return load_dataset(root)


@pytest.fixture(scope="session")
def model_repo(line_t_dataset: Dataset, tmp_path_factory) -> Path:
    """A tiny model (32 px, one epoch of nothing) trained on the small line and exported as
    version 1 of a repository."""
    from oanet.cli import main as oanet_main
    from tests.training.test_end_to_end import TINY

    base = tmp_path_factory.mktemp("worker-model")
    run, repo = base / "run", base / "repo"
    assert oanet_main(["train", "--data", str(line_t_dataset.root), "--out", str(run), *TINY]) == 0
    assert oanet_main(["export", "--run", str(run), "--repo", str(repo)]) == 0
    return repo
