"""Write deploy/monitoring/prometheusrule.yaml from deploy/monitoring/alerts.yaml.

The alert rules have one source, `alerts.yaml` (Prometheus rule-file format, which compose's
Prometheus loads as is). Clusters that run the Prometheus Operator need the same groups
wrapped in a PrometheusRule object; kustomize cannot wrap a file into an object's spec, so
this writes it, and a test fails when the two differ:

    oanet monitoring prometheusrule          # rewrite
    oanet monitoring prometheusrule --check  # exit 1 when out of date
"""

from __future__ import annotations

from pathlib import Path

from oanet.errors import OanetError

MONITORING = Path(__file__).resolve().parents[1] / "monitoring"
SOURCE = MONITORING / "alerts.yaml"
TARGET = MONITORING / "prometheusrule.yaml"
HEADER = """---
# GENERATED from alerts.yaml by `oanet monitoring prometheusrule`: edit alerts.yaml, then rerun.
# For clusters with the Prometheus Operator (kube-prometheus-stack selects rules by the label
# `release`; set it to your release name in an overlay if yours differs).
"""
METADATA = """apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: oanet-alerts
  labels:
    app.kubernetes.io/part-of: oanet
    release: kube-prometheus-stack
"""


def render(source: Path = SOURCE) -> str:
    """The PrometheusRule text: alerts.yaml's `groups:` block (comments and layout kept) moved
    under `spec:`."""
    text = source.read_text(encoding="utf-8")
    lines = text.splitlines()
    try:
        start = lines.index("groups:")
    except ValueError:
        raise OanetError(f"{source}: no top-level 'groups:' line") from None
    body = "\n".join(f"  {line}" if line else "" for line in lines[start:])
    return HEADER + METADATA + "spec:\n" + body + "\n"
