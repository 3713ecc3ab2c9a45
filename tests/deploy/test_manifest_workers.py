"""A worker started exactly as the production manifests start it becomes ready.

The Kubernetes overlays are rendered with `kubectl kustomize` and the compose file with the real
Docker Compose loader; the worker container's arguments and environment are run as an `oanet`
process with no model repository in reach (the container mounts none), against the embedded
stack. Only what points at the cluster is replaced: addresses and transport security (the
embedded broker and Triton speak plaintext), the topic names (the stack is shared with other
tests) and the metrics port (a free one). Everything else is the manifest's.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from deploy.embedded.stack import EmbeddedStack
from oanet.settings import load_settings
from stream.topics import create_topics
from tests.conftest import with_unique_topics
from tests.deploy.manifests import OVERLAYS, compose_services, kustomize

pytestmark = pytest.mark.slow

# The worker image's entrypoint (Dockerfile ENTRYPOINT ["oanet"]).
ENTRYPOINT = [sys.executable, "-m", "oanet"]
# Values a Secret supplies in the cluster.
SECRET_VALUES = {("oanet-kafka", "username"): "oanet", ("oanet-kafka", "password"): "not-used-here"}
# Settings that point at the cluster: replaced by the embedded stack's (or dropped: TLS files).
CLUSTER_KEYS = ("OANET_KAFKA__", "OANET_TRITON__URL", "OANET_TRITON__SSL", "OANET_TRITON__ROOT_CERTIFICATES",
                "OANET_TOPICS__FRAMES", "OANET_TOPICS__VERDICTS", "OANET_TOPICS__DEAD_LETTER",
                "OANET_WORKER__METRICS_PORT")
READY_TIMEOUT_S = 300


def k8s_worker(overlay: Path) -> tuple[list[str], dict[str, str], dict]:
    """(args, environment, pod spec) of the worker container of a rendered overlay."""
    objects = kustomize(overlay)
    (deployment,) = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "oanet-worker"]
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    configmaps = {o["metadata"]["name"]: o["data"] for o in objects if o["kind"] == "ConfigMap"}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(configmaps[source["configMapRef"]["name"]])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = SECRET_VALUES[(ref["name"], ref["key"])]
    return [*container.get("command", []), *container["args"]], env, spec


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def run_until_ready(args: list[str], manifest_env: dict[str, str], stack: EmbeddedStack, workdir: Path) -> None:
    """Run `oanet ARGS` with the manifest's environment, pointed at `stack`, until /ready is 200."""
    s = stack.settings
    test = with_unique_topics(load_settings(stack=s.model_dump()))
    create_topics(test.kafka, test.topics.model_copy(update={"frames_partitions": 2, "verdicts_partitions": 1}))
    port = free_port()
    cluster = {k: v for k, v in manifest_env.items() if not k.startswith(CLUSTER_KEYS)}
    env = {k: v for k, v in os.environ.items() if not k.startswith("OANET_")}
    env.update(cluster)
    env.update({
        "OANET_KAFKA__BOOTSTRAP_SERVERS": f"{s.host}:{s.broker_port}",
        "OANET_TRITON__URL": f"{s.host}:{s.triton_grpc_port}",
        "OANET_TOPICS__FRAMES": test.topics.frames,
        "OANET_TOPICS__VERDICTS": test.topics.verdicts,
        "OANET_TOPICS__DEAD_LETTER": test.topics.dead_letter,
        "OANET_WORKER__METRICS_PORT": str(port),
        "OANET_WORKER__METRICS_HOST": "127.0.0.1",
    })
    # The container's working directory holds no model repository (Dockerfile WORKDIR /tmp).
    assert not any(workdir.iterdir())
    log = workdir.parent / f"{workdir.name}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([*ENTRYPOINT, *args], cwd=workdir,
                                   env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            deadline = time.monotonic() + READY_TIMEOUT_S
            while status(f"http://127.0.0.1:{port}/ready") != 200:
                if process.poll() is not None:
                    pytest.fail(f"the worker exited with {process.returncode}: {log.read_text()[-2000:]}")
                if time.monotonic() > deadline:
                    pytest.fail(f"/ready was not 200 within {READY_TIMEOUT_S} s: {log.read_text()[-2000:]}")
                time.sleep(0.5)
            assert status(f"http://127.0.0.1:{port}/live") == 200
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def test_the_overlays_start_one_and_the_same_worker():
    """Every overlay runs the worker with the same arguments and mounts (their settings differ):
    starting the production one below stands for all."""
    args, _, spec = k8s_worker(OVERLAYS[0])
    for overlay in OVERLAYS[1:]:
        other_args, _, other_spec = k8s_worker(overlay)
        assert other_args == args and other_spec["volumes"] == spec["volumes"], overlay.name
        assert other_spec["containers"][0]["volumeMounts"] == spec["containers"][0]["volumeMounts"]


def test_the_kubernetes_worker_starts_from_its_rendered_manifest(oanet_stack, tmp_path):
    args, env, spec = k8s_worker(next(o for o in OVERLAYS if o.name == "production"))
    mounts = {m["mountPath"] for m in spec["containers"][0].get("volumeMounts", [])}
    assert not any("model" in m for m in mounts), mounts
    assert "--profile" not in args and "--repo" not in args
    workdir = tmp_path / "k8s"
    workdir.mkdir()
    run_until_ready(args, env, oanet_stack, workdir)


def test_the_compose_worker_starts_from_its_service_definition(oanet_stack, tmp_path):
    worker = compose_services()["worker"]
    assert not [v for v in worker.get("volumes", []) if "model" in str(v.get("target", ""))]
    assert "--profile" not in worker["command"] and "--repo" not in worker["command"]
    workdir = tmp_path / "compose"
    workdir.mkdir()
    run_until_ready(worker["command"], {k: str(v) for k, v in worker["environment"].items()}, oanet_stack, workdir)
