"""Every Kubernetes overlay renders, validates against the Kubernetes schemas, and holds together:
probes, pinned images, non-root containers, autoscaling on the right objects and never more
workers than partitions. Offline: the overlays are rendered by `kubectl kustomize` and the
schemas ship in the kubernetes-validate wheel."""

from __future__ import annotations

import os
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from oanet.settings import load_settings
from tests.deploy.manifests import K8S, OVERLAYS, ROOT, kustomize
# The oldest Kubernetes the manifests target (unhealthyPodEvictionPolicy is GA in 1.31) and the newest
# schema the wheel ships.
K8S_VERSIONS = ("1.31.0", kubernetes_validate.utils.latest_version())
# Custom resources: no schema offline (KEDA, Prometheus Operator); their fields are checked below.
CUSTOM_KINDS = {"ScaledObject": "keda.sh/v1alpha1", "TriggerAuthentication": "keda.sh/v1alpha1",
                "PrometheusRule": "monitoring.coreos.com/v1", "PodMonitor": "monitoring.coreos.com/v1"}
PODS = {"Deployment", "Job"}


def rendered(folder: Path) -> list[dict]:
    return kustomize(folder)


def find(objects, kind, name=None):
    hits = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert hits, f"no {kind} {name or ''}"
    return hits


def pod_spec(obj):
    return obj["spec"]["template"]["spec"]


def config(objects) -> dict[str, str]:
    return find(objects, "ConfigMap", "oanet-config")[0]["data"]


@pytest.fixture(scope="module", params=OVERLAYS, ids=lambda p: str(p.relative_to(K8S)))
def objects(request):
    return rendered(request.param)


def test_overlays_exist():
    assert {p.name for p in OVERLAYS} >= {"base", "production", "cpu"}


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_builtin_objects_validate_against_the_kubernetes_schemas(objects, version):
    for obj in objects:
        if obj["kind"] in CUSTOM_KINDS:
            assert obj["apiVersion"] == CUSTOM_KINDS[obj["kind"]]
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {'.'.join(map(str, exc.path))}: {exc.message}")


def test_the_validator_refuses_an_unknown_field():
    deployment = find(rendered(K8S / "base"), "Deployment")[0]
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)


def test_containers_are_pinned_bounded_probed_and_unprivileged(objects):
    for obj in objects:
        if obj["kind"] not in PODS:
            continue
        spec = pod_spec(obj)
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] > 0
        assert spec.get("automountServiceAccountToken") is False
        for c in spec["containers"]:
            where = f"{obj['metadata']['name']}/{c['name']}"
            assert re.search(r":[\w][\w.-]*$|@sha256:", c["image"]) and not c["image"].endswith(":latest"), where
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and "memory" in c["resources"]["limits"], where
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            if obj["kind"] == "Deployment":
                assert {"startupProbe", "livenessProbe", "readinessProbe"} <= set(c), where


def test_triton_probes_reach_the_python_stubs(objects):
    (triton,) = find(objects, "Deployment", "oanet-triton")
    (c,) = pod_spec(triton)["containers"]
    assert c["readinessProbe"]["exec"]["command"][:3] == ["python3", "/opt/oanet/probe.py", "ready"]
    assert c["livenessProbe"]["exec"]["command"][:3] == ["python3", "/opt/oanet/probe.py", "live"]
    # The probe's own HTTP timeout must fit inside the kubelet's.
    for probe in ("readinessProbe", "livenessProbe"):
        command = c[probe]["exec"]["command"]
        assert 3 * float(command[command.index("--timeout") + 1]) < c[probe]["timeoutSeconds"]
    args = c["args"]
    assert "--model-control-mode=explicit" in args and "--strict-readiness=true" in args
    assert {"--grpc-use-ssl=true", "--grpc-server-cert=/etc/triton-tls/tls.crt"} <= set(args)
    volumes = {v["name"]: v for v in pod_spec(triton)["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"]["claimName"] == "oanet-model-repository"
    assert volumes["shm"]["emptyDir"]["medium"] == "Memory"
    find(objects, "PersistentVolumeClaim", "oanet-model-repository")
    (service,) = find(objects, "Service", "oanet-triton")
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]}["grpc"] == 8001
    assert service["spec"]["selector"].items() <= triton["spec"]["template"]["metadata"]["labels"].items()
    assert config(objects)["OANET_TRITON__URL"] == "oanet-triton:8001"


def test_gpu_requests(objects):
    (triton,) = find(objects, "Deployment", "oanet-triton")
    resources = pod_spec(triton)["containers"][0]["resources"]
    gpu = resources["limits"].get("nvidia.com/gpu")
    spec = pod_spec(triton)
    if triton["metadata"]["namespace"] == "oanet-lab":  # the cpu overlay
        assert gpu is None and "nvidia.com/gpu" not in resources["requests"]
        assert "nodeSelector" not in spec and "tolerations" not in spec
    else:
        assert gpu == 1 and resources["requests"]["nvidia.com/gpu"] == 1
        # Scheduled on GPU nodes only, through their usual taint.
        assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]


def test_autoscaled_workloads_carry_no_replica_count(objects):
    """An apply with `replicas` resets what the HPA or KEDA scaled to (a rebalance, a GPU pod lost)."""
    owned = {o["spec"]["scaleTargetRef"]["name"] for o in objects if o["kind"] in ("HorizontalPodAutoscaler",
                                                                                   "ScaledObject")}
    assert owned == {"oanet-triton", "oanet-worker"}
    for name in owned:
        (deployment,) = find(objects, "Deployment", name)
        assert "replicas" not in deployment["spec"], name


def test_triton_hpa_scales_on_the_adapter_queue_metric(objects):
    (hpa,) = find(objects, "HorizontalPodAutoscaler", "oanet-triton")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "oanet-triton"}
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    adapter = yaml.safe_load((ROOT / "deploy/monitoring/prometheus-adapter-values.yaml").read_text())
    assert metric["pods"]["metric"]["name"] in {r["name"]["as"] for r in adapter["rules"]["custom"]}


def test_workers_scale_on_lag_never_beyond_the_partitions(objects):
    (so,) = find(objects, "ScaledObject", "oanet-worker")
    (worker,) = find(objects, "Deployment", "oanet-worker")
    settings = config(objects)
    partitions = int(settings["OANET_TOPICS__FRAMES_PARTITIONS"])
    assert so["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]
    assert 1 <= so["spec"]["minReplicaCount"] <= so["spec"]["maxReplicaCount"] <= partitions
    (trigger,) = so["spec"]["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "kafka" and meta["allowIdleConsumers"] == "false"
    # Brokers, group and topic come from the worker container's own environment: KEDA watches
    # exactly what the workers consume, whatever an overlay sets.
    (container,) = [c for c in pod_spec(worker)["containers"] if c["name"] == so["spec"]["scaleTargetRef"][
        "envSourceContainerName"]]
    assert [s["configMapRef"]["name"] for s in container["envFrom"]] == ["oanet-config"]
    assert {k: meta[f"{k}FromEnv"] for k in ("bootstrapServers", "consumerGroup", "topic")} == {
        "bootstrapServers": "OANET_KAFKA__BOOTSTRAP_SERVERS", "consumerGroup": "OANET_WORKER__GROUP_ID",
        "topic": "OANET_TOPICS__FRAMES"}
    assert not {"bootstrapServers", "consumerGroup", "topic"} & set(meta)
    assert {"OANET_KAFKA__BOOTSTRAP_SERVERS", "OANET_WORKER__GROUP_ID", "OANET_TOPICS__FRAMES"} <= set(settings)
    assert int(meta["lagThreshold"]) > 0
    (auth,) = find(objects, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    assert {r["parameter"] for r in auth["spec"]["secretTargetRef"]} == {"sasl", "username", "password", "tls", "ca"}


def test_disruption_budgets_select_running_pods(objects):
    budgets = find(objects, "PodDisruptionBudget")
    deployments = find(objects, "Deployment")
    assert len(budgets) == len(deployments)
    for pdb in budgets:
        selector = pdb["spec"]["selector"]["matchLabels"].items()
        assert any(selector <= d["spec"]["template"]["metadata"]["labels"].items() for d in deployments)
        assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_settings_in_the_configmap_are_valid_oanet_settings(objects, monkeypatch):
    """The same check the worker makes at start: unknown keys and bad values are refused."""
    for key in [k for k in os.environ if k.startswith("OANET_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(ROOT / "deploy")  # no .env here
    for key, value in config(objects).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("OANET_KAFKA__SASL_USERNAME", "u")  # from the Secret oanet-kafka
    monkeypatch.setenv("OANET_KAFKA__SASL_PASSWORD", "p")
    settings = load_settings()
    assert settings.kafka.security_protocol == "SASL_SSL" and settings.triton.ssl
    assert str(settings.kafka.ssl_cafile).startswith("/etc/oanet/kafka/")


def test_secrets_are_documented_with_their_keys(objects):
    """Secrets are created by the operator (never in the repository): docs/operations.md says how."""
    doc = (ROOT / "docs" / "operations.md").read_text()
    used: dict[str, set[str]] = {}

    def walk(node):
        if isinstance(node, dict):
            if "secretKeyRef" in node:
                used.setdefault(node["secretKeyRef"]["name"], set()).add(node["secretKeyRef"]["key"])
            if "secret" in node and isinstance(node["secret"], dict) and "secretName" in node["secret"]:
                keys = {i["key"] for i in node["secret"].get("items", [])}
                used.setdefault(node["secret"]["secretName"], set()).update(keys)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for obj in objects:
        walk(obj)
        if obj["kind"] == "TriggerAuthentication":
            for ref in obj["spec"]["secretTargetRef"]:
                used.setdefault(ref["name"], set()).add(ref["key"])
    assert set(used) == {"oanet-kafka", "oanet-triton-tls", "oanet-model-signing"}
    for name, keys in used.items():
        command = next((line for line in doc.splitlines() if f"create secret generic {name}" in line
                        or f"create secret tls {name}" in line), None)
        assert command, f"docs/operations.md does not show how to create Secret {name}"
        block = doc[doc.index(command):doc.index(command) + 600]
        for key in keys:
            assert key in block, f"docs/operations.md: Secret {name} lacks key {key}"
