"""Offline tools for the deployment files: PromQL metric-name extraction and the PrometheusRule
generator. Used by tests/deploy and by hand."""
