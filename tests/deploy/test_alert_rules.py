"""The alert rules load in Prometheus and behave as their unit tests say (deploy/monitoring/
alerts.test.yaml), with Prometheus's own `promtool` (Debian package `prometheus`; .ci/run
installs it)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.deploy.manifests import ROOT

MONITORING = ROOT / "deploy" / "monitoring"


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus); .ci/run installs it")
    return path


def test_the_rules_load(promtool):
    result = subprocess.run([promtool, "check", "rules", str(MONITORING / "alerts.yaml")], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rule_unit_tests_pass(promtool):
    result = subprocess.run([promtool, "test", "rules", str(MONITORING / "alerts.test.yaml")], capture_output=True,
                            text=True, timeout=120, cwd=MONITORING)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_but_the_global_absence_is_per_namespace():
    import yaml

    for group in yaml.safe_load((MONITORING / "alerts.yaml").read_text())["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                assert "by (namespace" in rule["expr"], rule["alert"]
