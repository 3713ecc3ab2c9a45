"""Fixtures of the training tests: one small synthetic dataset per session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from oanet.profile import load_profile
from oanet.profile import DEFAULT_PROFILE_PATH
from training.data import Frames
from training.synth.generate import generate

SMALL_N = 24


@pytest.fixture(scope="session")
def line_profile():
    return load_profile(DEFAULT_PROFILE_PATH)


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory: pytest.TempPathFactory, line_profile) -> Path:
    """24 frames of the default line, seed 5, made once (about a second)."""
    root = tmp_path_factory.mktemp("synth") / "small"
    generate(root, line_profile, SMALL_N, seed=5, workers=1, progress=False)
    return root


E2E_N = 120


@pytest.fixture(scope="session")
def e2e_dataset(tmp_path_factory: pytest.TempPathFactory, line_profile) -> Path:
    """120 tiny frames (256x192) of the default line for train -> evaluate -> export tests."""
    root = tmp_path_factory.mktemp("synth-e2e") / "d120"
    generate(root, line_profile, E2E_N, seed=11, width=256, height=192, workers=1, progress=False)
    return root


LEARN_N = 160


@pytest.fixture(scope="session")
def learning_dataset(tmp_path_factory: pytest.TempPathFactory, line_profile) -> Path:
    """160 half-size frames (512x384) of BGA packages, half of them defects, for the check that the
    CNN learns (the object ROI is 224 px there)."""
    root = tmp_path_factory.mktemp("synth-learn") / "d160"
    generate(root, line_profile, LEARN_N, seed=21, width=512, height=384, defect_rate=0.5, package="bga",
             workers=1, progress=False)
    return root


@pytest.fixture
def make_frames():
    """A factory of random `Frames` (n frames of size x size ROIs, f number fields, a quarter missing)."""
    def make(n: int, size: int = 32, f: int = 3, seed: int = 0) -> Frames:
        rng = np.random.default_rng(seed)
        labels = np.arange(n) % 2
        missing = rng.random((n, f)) < 0.25
        values = np.where(missing, np.nan, rng.normal(size=(n, f))).astype(np.float32)
        return Frames([f"f{i}" for i in range(n)], labels, ["object" if y else "none" for y in labels],
                      rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), values, missing)
    return make
