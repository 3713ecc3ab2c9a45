"""Every metric name (and label matcher) that the alert rules, the Grafana dashboard, the HPA's
prometheus-adapter rule and the KEDA triggers use is exported by the real worker metrics endpoint
or by the real tritonserver serving the real exported model, scraped live after traffic (some
Triton series appear only once a model has served a request)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import yaml

from deploy.tools import promql
from tests.deploy.manifests import kustomize
from deploy.triton import probe
from stream.worker.metrics import MetricsServer, WorkerMetrics

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
# Labels Prometheus attaches at scrape time (target labels), not exported by the process.
TARGET_LABELS = ("job", "instance", "pod", "namespace", "container", "service", "endpoint")


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def monitoring_expressions() -> list[tuple[str, str]]:
    exprs = []
    for group in yaml.safe_load((MONITORING / "alerts.yaml").read_text())["groups"]:
        exprs += [(f"alert {rule['alert']}" if "alert" in rule else f"record {rule['record']}", rule["expr"])
                  for rule in group["rules"]]
    dashboard = json.loads((MONITORING / "dashboards/oanet.json").read_text())
    for panel in dashboard["panels"]:
        exprs += [(f"panel {panel['title']!r}", target["expr"]) for target in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            exprs.append((f"variable {variable['name']}", variable["query"]))
    adapter = yaml.safe_load((MONITORING / "prometheus-adapter-values.yaml").read_text())
    for rule in adapter["rules"]["custom"]:
        exprs += [("adapter seriesQuery", rule["seriesQuery"]), ("adapter metricsQuery", rule["metricsQuery"])]
    for overlay in (ROOT / "deploy/k8s/overlays").iterdir():
        for obj in kustomize(overlay):
            if obj["kind"] == "ScaledObject":
                for trigger in obj["spec"]["triggers"]:
                    if trigger["type"] == "prometheus":
                        exprs.append((f"KEDA {overlay.name}", trigger["metadata"]["query"]))
    return exprs


@pytest.fixture(scope="module")
def worker_exported() -> dict[str, frozenset[str]]:
    """The worker's real /metrics endpoint (its MetricsServer over its WorkerMetrics registry)."""
    metrics = WorkerMetrics()
    server = MetricsServer(metrics, "127.0.0.1", 0, live=lambda: True, ready=lambda: True)
    try:
        text = scrape(f"http://127.0.0.1:{server.port}/metrics")
    finally:
        server.close()
    exported = dict(promql.exported_names(text))
    # Labelled families export no sample before their first event; their label names come from
    # the collectors themselves (the same objects the worker increments).
    for collector in vars(metrics).values():
        names = getattr(collector, "_labelnames", None)
        if names:
            for sample in list(exported):
                if sample.startswith(collector._name):
                    exported[sample] = exported[sample] | frozenset(names)
                    if collector._type == "histogram":
                        exported[sample] |= {"le"}
    return exported


@pytest.fixture(scope="module")
def triton_exported(oanet_stack, oanet_triton) -> dict[str, frozenset[str]]:
    """Triton serving the exported model, after one ensemble request and one probe."""
    s = oanet_stack.settings
    client = grpcclient.InferenceServerClient(oanet_triton.url)
    meta = client.get_model_metadata("oanet", as_json=True)
    inputs = []
    for tensor in meta["inputs"]:
        shape = [2, *(int(d) for d in tensor["shape"][1:])]
        data = {"UINT8": np.zeros(shape, np.uint8), "FP32": np.full(shape, np.nan, np.float32),
                "BOOL": np.ones(shape, bool)}[tensor["datatype"]]  # every field missing: a valid frame
        infer_input = grpcclient.InferInput(tensor["name"], shape, tensor["datatype"])
        infer_input.set_data_from_numpy(data)
        inputs.append(infer_input)
    client.infer("oanet", inputs)
    client.close()
    assert probe.main(["ready", "--url", f"http://{s.host}:{s.triton_http_port}"]) == 0
    text = scrape(f"http://{s.host}:{s.triton_metrics_port}/metrics")
    return promql.exported_names(text)


def test_the_scrapes_hold_the_metrics_the_issue_names(worker_exported, triton_exported):
    assert {"oanet_worker_dead_letters_total", "oanet_worker_end_to_end_seconds_bucket",
            "oanet_worker_consumer_lag"} <= set(worker_exported)
    assert {"nv_inference_queue_duration_us", "oanet_gate_deactivations_total"} <= set(triton_exported)
    assert {"model", "modality"} <= triton_exported["oanet_gate_deactivations_total"]


def test_monitoring_uses_only_exported_metrics(worker_exported, triton_exported):
    exprs = monitoring_expressions()
    assert len(exprs) > 30
    # Series of the recording rules are Prometheus's own, built from the exported ones (checked
    # as the rules' expressions), labelled by their level (`namespace_pod:...`: namespace, pod).
    recorded = {rule["record"]: frozenset(rule["record"].split(":")[0].split("_"))
                for group in yaml.safe_load((MONITORING / "alerts.yaml").read_text())["groups"]
                for rule in group["rules"] if "record" in rule}
    problems = list(promql.unknown_references(exprs, {**triton_exported, **worker_exported, **recorded},
                                              TARGET_LABELS))
    assert problems == []
