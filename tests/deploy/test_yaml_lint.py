"""yamllint is clean on the deployment files; the generated PrometheusRule matches alerts.yaml; the
dashboard and the alert rules are well-formed and point at sections of the runbook that exist."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from yamllint import linter
from yamllint.config import YamlLintConfig

from deploy.tools import prometheusrule

ROOT = Path(__file__).resolve().parents[2]
YAML_FILES = sorted([*ROOT.joinpath("deploy").rglob("*.yaml"), *ROOT.joinpath("deploy").rglob("*.yml"),
                     ROOT / ".yamllint.yaml"])


def test_yamllint_is_clean():
    config = YamlLintConfig(file=str(ROOT / ".yamllint.yaml"))
    problems = [f"{path.relative_to(ROOT)}:{p.line}:{p.column} {p.level} {p.message} ({p.rule})"
                for path in YAML_FILES for p in linter.run(path.read_text(), config, str(path))]
    assert len(YAML_FILES) > 20
    assert problems == []


def test_prometheusrule_is_generated_from_alerts_yaml():
    assert prometheusrule.TARGET.read_text() == prometheusrule.render(), \
        "run: oanet monitoring prometheusrule"
    rule = yaml.safe_load(prometheusrule.TARGET.read_text())
    assert rule["spec"]["groups"] == yaml.safe_load(prometheusrule.SOURCE.read_text())["groups"]


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    return {re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            for m in re.finditer(r"^#+ (.+)$", markdown, re.M)}


def test_alert_rules_are_complete_and_link_to_the_runbook():
    groups = yaml.safe_load((ROOT / "deploy/monitoring/alerts.yaml").read_text())["groups"]
    known = anchors((ROOT / "docs/operations.md").read_text())
    alerts = [rule for group in groups for rule in group["rules"] if "alert" in rule]
    names = [rule["alert"] for rule in alerts]
    assert len(names) == len(set(names))
    for group in groups:
        for rule in group["rules"]:
            if "record" in rule:  # a recording rule: a series, no page
                assert set(rule) == {"record", "expr"}
                continue
            assert rule["labels"]["severity"] in {"warning", "critical"}
            assert {"summary", "description", "runbook_url"} <= set(rule["annotations"])
            page, _, anchor = rule["annotations"]["runbook_url"].partition("#")
            assert page == "docs/operations.md" and anchor in known, rule["alert"]


def test_dashboard_is_well_formed():
    dashboard = json.loads((ROOT / "deploy/monitoring/dashboards/oanet.json").read_text())
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    assert dashboard["uid"] and dashboard["templating"]["list"][0]["type"] == "datasource"
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"]
            assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])
    cells = set()
    for panel in panels:  # no two panels overlap
        g = panel["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, panel["title"]
                cells.add((x, y))
