"""Prometheus metrics of the worker and its HTTP endpoint (/metrics, /live, /ready).

Each worker has its own registry, so several workers in one process (tests) do not mix
their numbers. Rolling gauges (OCR missing-field ratio, gate weights) cover the last
`window` verdicts: an SRE sees the line's current state, not the average since start.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from oanet.contracts import STAGES
from triton_models.oanet_fusion.core import BRANCHES

# Seconds; from a few ms (decode of a small PNG) to a minute (a backlog on a slow line).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None, window: int = 200):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.frames = Counter("oanet_worker_frames", "Frames consumed from the frames topic", registry=r)
        self.verdicts = Counter("oanet_worker_verdicts", "Verdicts acknowledged by the broker, by outcome",
                                ["verdict"], registry=r)
        self.dead_letters = Counter("oanet_worker_dead_letters", "Dead letters acknowledged by the broker, by code",
                                    ["code"], registry=r)
        self.ignored_headers = Counter("oanet_worker_ignored_headers",
                                       "Malformed headers ignored (not required by the policy)", ["header"], registry=r)
        self.inference_retries = Counter("oanet_worker_inference_retries",
                                         "Inference calls that found the model server unavailable", registry=r)
        self.inference_faults = Counter("oanet_worker_inference_faults",
                                        "Inference calls the served model failed on (INTERNAL), retried alone",
                                        registry=r)
        self.ocr_restarts = Counter("oanet_worker_ocr_restarts",
                                    "OCR pools replaced after a process died or hung", registry=r)
        self.oldest_in_flight = Gauge("oanet_worker_oldest_in_flight_seconds",
                                      "Age of the oldest frame consumed and not yet acknowledged (0: none)",
                                      registry=r)
        self.commits = Counter("oanet_worker_commits", "Offset commits, by outcome", ["outcome"], registry=r)
        self.stage_seconds = Histogram("oanet_worker_stage_seconds", "Time per frame in each stage", ["stage"],
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.end_to_end = Histogram("oanet_worker_end_to_end_seconds",
                                    "From capture (captured_at header, else the record timestamp) to the "
                                    "acknowledged verdict", buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("oanet_worker_in_flight_frames", "Frames consumed and not yet acknowledged", registry=r)
        self.lag = Gauge("oanet_worker_consumer_lag", "Log end offset minus committed offset, per partition",
                         ["topic", "partition"], registry=r)
        self.paused = Gauge("oanet_worker_paused_partitions", "Assigned partitions paused (backpressure, "
                            "model server unavailable, shutdown)", registry=r)
        self.inference_available = Gauge("oanet_worker_inference_available",
                                         "1 while the model server answers, 0 while the worker waits for it", registry=r)
        self.ocr_missing_ratio = Gauge("oanet_worker_ocr_missing_field_ratio",
                                       "Share of profile fields OCR could not read, over the last verdicts", registry=r)
        self.ocr_fields = Counter("oanet_worker_ocr_fields",
                                  "Field lines of the verdicts' frames, by field and by the engine that read them "
                                  "(student, paddleocr, paddleocr-det; none: no engine read it, e.g. a blank slot)",
                                  ["field", "engine"], registry=r)
        self.gate_weight = Gauge("oanet_worker_gate_weight", "Mean KL-gate weight per branch over the last verdicts",
                                 ["branch"], registry=r)
        self.model = Info("oanet_worker_model", "The model the worker serves", registry=r)
        for stage in STAGES:
            self.stage_seconds.labels(stage)  # exported from the start, at zero
        self._lock = threading.Lock()
        self._missing: deque[float] = deque(maxlen=window)
        self._weights: deque[Sequence[float]] = deque(maxlen=window)

    def observe_verdict(self, missing_fields: int, total_fields: int, gate_weights: Sequence[float],
                        engines: Sequence[tuple[str, str]] = ()) -> None:
        """`engines`: (field, engine) of each reading of the verdict's record ("" for none)."""
        for field, engine in engines:
            self.ocr_fields.labels(field, engine or "none").inc()
        with self._lock:
            self._missing.append(missing_fields / max(1, total_fields))
            self._weights.append(tuple(gate_weights))
            self.ocr_missing_ratio.set(sum(self._missing) / len(self._missing))
            for i, branch in enumerate(BRANCHES):
                self.gate_weight.labels(branch).set(sum(w[i] for w in self._weights) / len(self._weights))


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - scrapes every few seconds; not worth a log line
        pass


class MetricsServer:
    """/metrics (Prometheus text), /live and /ready (200 or 503) on a background thread."""

    def __init__(self, metrics: WorkerMetrics, host: str, port: int,
                 live: Callable[[], bool], ready: Callable[[], bool]):
        prometheus = make_wsgi_app(metrics.registry)

        def app(environ, start_response):
            path = environ.get("PATH_INFO", "")
            for name, check in (("/live", live), ("/ready", ready)):
                if path == name:
                    ok = check()
                    start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")])
                    return [b"ok\n" if ok else b"not ok\n"]
            return prometheus(environ, start_response)

        self._server = make_server(host, port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, name="oanet-metrics", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
