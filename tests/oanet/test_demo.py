"""`oanet demo` end to end on its own stack (free ports), as `make demo` runs it."""

import re

import psutil
import pytest

from tests.deploy.embedded.test_stack import _stack_env

pytestmark = pytest.mark.slow


def test_demo_round_trips_frames_and_leaves_nothing_running(stack_settings_factory, run_oanet, tmp_path):
    s = stack_settings_factory(model_repository=tmp_path / "empty-repo")
    (tmp_path / "empty-repo").mkdir()
    before = {p.pid for p in psutil.process_iter()}
    result = run_oanet("demo", env=_stack_env(s), timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "8/8 frames back intact" in result.stdout
    # Three fields of the demo's frames (seed 20261122, the default bga package) are smudged on
    # purpose; every other field must read exactly.
    exact, total = map(int, re.search(r"OCR exact field matches: (\d+)/(\d+)", result.stdout).groups())
    assert total == 80 and exact >= 77
    assert "stopped triton" in result.stdout and "stopped broker" in result.stdout
    leftovers = [p for p in psutil.process_iter(["pid", "name"])
                 if p.pid not in before and p.info["name"] in ("tansu", "tritonserver")]
    assert leftovers == []
