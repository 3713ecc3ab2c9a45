"""Write deploy/monitoring/prometheusrule.yaml from deploy/monitoring/alerts.yaml.

The alert rules have one source, `alerts.yaml` (Prometheus rule-file format, which compose's
Prometheus loads as is). Clusters that run the Prometheus Operator need the same groups
wrapped in a PrometheusRule object; kustomize cannot wrap a file into an object's spec, so
this writes it, and a test fails when the two differ:

    python -m deploy.tools.prometheusrule          # rewrite
    python -m deploy.tools.prometheusrule --check  # exit 1 when out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

MONITORING = Path(__file__).resolve().parents[1] / "monitoring"
SOURCE = MONITORING / "alerts.yaml"
TARGET = MONITORING / "prometheusrule.yaml"
HEADER = """---
# GENERATED from alerts.yaml by `python -m deploy.tools.prometheusrule`: edit alerts.yaml, then rerun.
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
        raise SystemExit(f"{source}: no top-level 'groups:' line") from None
    body = "\n".join(f"  {line}" if line else "" for line in lines[start:])
    return HEADER + METADATA + "spec:\n" + body + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the generated file is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = TARGET.read_text(encoding="utf-8") if TARGET.is_file() else ""
        if current != text:
            print(f"{TARGET} is out of date: run python -m deploy.tools.prometheusrule", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
