"""The PromQL metric-name extraction that the monitoring checks rely on (deploy/tools/promql.py)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from deploy.tools.promql import PromQLError, Selector, exported_names, metric_names, selectors, unknown_references


@pytest.mark.parametrize(("expr", "names"), [
    ("up", {"up"}),
    ("sum(rate(foo_total[5m]))", {"foo_total"}),
    # functions, aggregations, keywords and label names are not metrics
    ('histogram_quantile(0.99, sum by (le) (rate(lat_seconds_bucket{job="w"}[5m])))', {"lat_seconds_bucket"}),
    ("sum by (code) (rate(a_total[10m])) / ignoring (code) group_left sum(rate(b_total[10m]))", {"a_total", "b_total"}),
    ("sum by (m) (rate(x[30m])) / on () group_left clamp_min(sum(rate(y[30m])), 1e-9) > 0.05", {"x", "y"}),
    ("absent(frames_total)", {"frames_total"}),
    ("max_over_time(g[1h:5m] offset 1d)", {"g"}),  # subquery and offset
    ('{__name__="by_name_only", a="b"}', {"by_name_only"}),
    ('count(rate) and on() vector(1)', {"rate"}),  # a metric may be named like a function
    ('sum(x{le="0.5", quantile="bar"}) unless bool_metric', {"x", "bool_metric"}),
    ('"a string with metric_like words" ', set()),
])
def test_metric_names(expr, names):
    assert metric_names(expr) == names


def test_label_matchers_are_reported_per_selector():
    found = selectors('rate(a{topic="t", partition=~"1|2"}[5m]) / b{model!="x"}')
    assert found == [Selector("a", frozenset({"topic", "partition"})), Selector("b", frozenset({"model"}))]


@pytest.mark.parametrize(("expr", "names"), [
    ("sum(rate(frames_total[$__rate_interval]))", {"frames_total"}),
    ('sum by (pod) (lag{pod=~"$pod", ns="${namespace}"})', {"lag"}),
    ("label_values(oanet_worker_frames_total, pod)", {"oanet_worker_frames_total"}),
    ("label_values(pod)", set()),
    ("sum by (<<.GroupBy>>) (rate(q_us{<<.LabelMatchers>>,model=\"m\"}[2m]))", {"q_us"}),
])
def test_templates_are_substituted_before_parsing(expr, names):
    assert metric_names(expr) == names


@pytest.mark.parametrize("expr", ["sum(rate(x[5m])", "rate(x)", "x +", "sum by (le (x)"])
def test_invalid_promql_is_refused(expr):
    with pytest.raises(PromQLError, match="not valid PromQL"):
        selectors(expr)


def test_exported_names_of_prometheus_client():
    registry = CollectorRegistry()
    Counter("jobs", "h", ["code"], registry=registry)  # labelled, no child yet: no samples
    Histogram("lat_seconds", "h", registry=registry)
    Gauge("depth", "h", ["topic"], registry=registry).labels("t").set(3)
    names = exported_names(generate_latest(registry).decode())
    assert {"jobs_total", "lat_seconds_bucket", "lat_seconds_sum", "lat_seconds_count", "depth"} <= set(names)
    assert "jobs" not in names
    assert names["depth"] == {"topic"} and "le" in names["lat_seconds_bucket"]


def test_exported_names_are_verbatim():
    """Triton's counters have no _total suffix; Prometheus stores them as written."""
    text = ('# HELP nv_inference_request_success Number of successful requests\n'
            '# TYPE nv_inference_request_success counter\n'
            'nv_inference_request_success{model="oanet",version="1"} 3\n'
            '# TYPE nv_gpu_utilization gauge\n'
            'odd{a="x,y=\\"z\\"",b="2"} 1 1700000000\n')
    names = exported_names(text)
    assert names == {"nv_inference_request_success": {"model", "version"}, "nv_gpu_utilization": frozenset(),
                     "odd": {"a", "b"}}


def test_unknown_references_name_the_metric_and_the_label():
    exported = {"a_total": frozenset({"code"}), "b": frozenset()}
    problems = list(unknown_references(
        [("r1", 'rate(a_total{code="x", job="w"}[5m])'), ("r2", 'rate(a_total{cod="x"}[5m])'),
         ("r3", "c_total"), ("r4", 'b{anything="goes"}')], exported, extra_labels=["job"]))
    assert problems == ["r2: a_total has no label(s) ['cod'] (it has ['code'])", "r3: metric c_total is not exported"]
