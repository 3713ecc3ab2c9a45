"""Metric names and label matchers used by PromQL expressions, for checking the monitoring
files (alert rules, Grafana dashboard, HPA adapter rules, KEDA queries) against what the
worker and Triton really export.

Expressions are parsed by `promql-parser` (Python bindings of the Rust PromQL parser), so a
function name, a keyword (`by`, `on`, `group_left`...), a label name or a string never passes
for a metric name, and an expression that is not valid PromQL fails loudly. Templates that are
not PromQL are replaced first by values of the right kind: Grafana variables (`$__rate_interval`,
`$var`, `${var}`) and prometheus-adapter placeholders (`<<.LabelMatchers>>`, `<<.GroupBy>>`,
`<<.Series>>`). Grafana's `label_values(metric, label)` queries give their metric.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import promql_parser

# Grafana's range variables stand where PromQL wants a duration; any other variable stands in a
# string (a label value) or in an `=~` regex.
_GRAFANA_RANGE = re.compile(r"\$(?:__rate_interval|__interval|__range)\b|\$\{(?:__rate_interval|__interval|__range)\}")
_GRAFANA_VAR = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_:]*\}|\$[A-Za-z_][A-Za-z0-9_]*")
_ADAPTER = {"<<.LabelMatchers>>": 'namespace="adapter"', "<<.GroupBy>>": "pod", "<<.Series>>": "adapter_series"}
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(?P<selector>.+?)\s*,\s*)?(?P<label>[A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$")
ADAPTER_PLACEHOLDER_SERIES = "adapter_series"


class PromQLError(ValueError):
    """An expression that does not parse (after template substitution)."""


@dataclass(frozen=True)
class Selector:
    """One vector selector: the metric name and the label names it matches on."""

    metric: str
    labels: frozenset[str] = field(default_factory=frozenset)


def _substitute(expr: str) -> str:
    for placeholder, value in _ADAPTER.items():
        expr = expr.replace(placeholder, value)
    expr = _GRAFANA_RANGE.sub("5m", expr)
    return _GRAFANA_VAR.sub("grafana_variable", expr)


def selectors(expr: str) -> list[Selector]:
    """Every vector selector of `expr` (inside range vectors, subqueries, functions...)."""
    text = _substitute(expr)
    match = _LABEL_VALUES.match(text)
    if match:  # Grafana template query, not PromQL
        text = match.group("selector") or ""
        if not text:
            return []
    try:
        tree = promql_parser.parse(text)
    except Exception as exc:  # the binding raises a plain ValueError/RuntimeError with the position
        raise PromQLError(f"not valid PromQL: {expr!r}: {exc}") from None
    found: list[Selector] = []

    def visit(node) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            matchers = list(node.matchers.matchers)
            for group in node.matchers.or_matchers or []:
                matchers += list(group)
            name = node.name
            labels = set()
            for matcher in matchers:
                if matcher.name == "__name__":
                    name = name or matcher.value
                else:
                    labels.add(matcher.name)
            if not name:
                raise PromQLError(f"selector without a metric name in {expr!r}: names must be literal to be checked")
            found.append(Selector(name, frozenset(labels)))

    promql_parser.walk(tree, visit)
    return found


def metric_names(expr: str) -> set[str]:
    return {s.metric for s in selectors(expr)}


# ------------------------------------------------------------------------------- exposition


_TYPE_LINE = re.compile(r"^#\s+TYPE\s+([a-zA-Z_:][a-zA-Z0-9_:]*)\s+(\w+)")
_SAMPLE_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+\S+")
_LABEL_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"(?:[^"\\]|\\.)*"')


def exported_names(text: str) -> dict[str, frozenset[str]]:
    """Sample names a scrape holds -> their label names, read verbatim from the Prometheus text
    exposition format, as Prometheus stores them.

    Verbatim matters: `prometheus_client.parser` renames counter samples to end in `_total`, but
    Triton exports counters without that suffix (`nv_inference_request_success`) and Prometheus
    stores them as written. A family announced by `# TYPE` with no sample yet (a labelled counter
    before its first increment) contributes the names its samples will have: the family name,
    plus `_bucket`/`_sum`/`_count` for a histogram and `_sum`/`_count` for a summary.
    """
    suffixes = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("", "_sum", "_count")}
    names: dict[str, set[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("#"):
            match = _TYPE_LINE.match(line)
            if match:
                family, kind = match.groups()
                for suffix in suffixes.get(kind, ("",)):
                    names.setdefault(family + suffix, set())
            continue
        match = _SAMPLE_LINE.match(line)
        if match:
            name, labels = match.groups()
            names.setdefault(name, set()).update(_LABEL_PAIR.findall(labels or ""))
    return {name: frozenset(labels) for name, labels in names.items()}


def unknown_references(exprs: Iterable[tuple[str, str]], exported: dict[str, frozenset[str]],
                       extra_labels: Iterable[str] = ()) -> Iterator[str]:
    """One line per metric name or label matcher in (where, expression) pairs that `exported`
    does not have. `extra_labels` are labels Prometheus attaches at scrape time (job, pod...).
    A metric whose labels are unknown (empty set: no sample seen) only has its name checked."""
    allowed_extra = set(extra_labels)
    for where, expr in exprs:
        for selector in selectors(expr):
            if selector.metric == ADAPTER_PLACEHOLDER_SERIES:
                continue
            if selector.metric not in exported:
                yield f"{where}: metric {selector.metric} is not exported"
                continue
            labels = exported[selector.metric]
            if labels:
                missing = selector.labels - labels - allowed_extra
                if missing:
                    yield f"{where}: {selector.metric} has no label(s) {sorted(missing)} (it has {sorted(labels)})"
