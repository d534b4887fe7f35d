"""Prometheus metrics, on a registry per app so that several apps (tests) can live in one process.

Under several uvicorn workers (`python -m service --workers N`) each worker is its own process with
its own counters, and a scrape reaches one of them at random; there `PROMETHEUS_MULTIPROC_DIR` is
set (service/__main__.py does it) and /metrics renders the sum over all workers' files.
"""
from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
STEP_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.request_latency = Histogram("sepsis_http_request_duration_seconds", "HTTP request latency",
                                         ["method", "route", "status"], buckets=LATENCY_BUCKETS, registry=r)
        self.predictions = Counter("sepsis_predictions_total", "Observations scored and stored",
                                   ["model", "version"], registry=r)
        self.duplicates = Counter("sepsis_duplicate_observations_total",
                                  "Observations posted again with an identical payload", registry=r)
        self.rejected = Counter("sepsis_rejected_requests_total", "Requests refused, by HTTP status",
                                ["status"], registry=r)
        self.implausible = Counter("sepsis_implausible_values_total",
                                   "Values accepted outside their plausible range (stored and scored as charted, "
                                   "answered with a warning), by variable", ["variable"], registry=r)
        self.alarm_events = Counter("sepsis_alarm_events_total", "Alarm lifecycle events",
                                    ["event"], registry=r)
        self.alarms_by_outcome = Gauge("sepsis_alarms_by_verdict", "Stored alarms by verdict once outcomes are known",
                                       ["verdict"], registry=r, multiprocess_mode="mostrecent")
        self.step_latency = Histogram("sepsis_model_step_seconds", "Model step (one ONNX run) latency",
                                      buckets=STEP_BUCKETS, registry=r)
        self.batch_size = Histogram("sepsis_model_batch_rows", "Rows per model run", buckets=BATCH_BUCKETS, registry=r)
        # The contributions' extra runs (every row plus one variant per withheld variable; with a memory
        # model, again with one variant per variable not measured for 24 h), per model run
        # explained; not counted in sepsis_model_step_seconds, so the two costs read apart (SEPSIS_EXPLAIN).
        self.explain_latency = Histogram("sepsis_explain_seconds", "Contributions (withheld-variable runs) per model run",
                                         buckets=STEP_BUCKETS, registry=r)
        self.model_info = Gauge("sepsis_model_info", "The loaded model and its execution provider",
                                ["model", "version", "provider", "microbatch"], registry=r, multiprocess_mode="max")

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)
            return generate_latest(merged)
        return generate_latest(self.registry)
