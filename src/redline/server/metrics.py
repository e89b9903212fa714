"""Prometheus metrics for GET /metrics: requests, errors, tokens and latency per strategy.

Each app has its own registry, so several servers (tests, benches) in one process never
share counts.
"""

from __future__ import annotations

from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from redline.server.record import RequestRecord

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, in_flight: Callable[[], float]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("redline_requests", "Requests answered, by endpoint, strategy and HTTP status.",
                                ["endpoint", "strategy", "status"], registry=self.registry)
        self.errors = Counter("redline_errors", "Requests answered with an error, by error type.",
                              ["endpoint", "strategy", "type"], registry=self.registry)
        self.cancelled = Counter("redline_cancelled", "Requests whose client disconnected before the answer.",
                                 ["endpoint", "strategy"], registry=self.registry)
        self.tokens = Counter("redline_tokens", "Tokens used by all internal calls, by strategy and kind.",
                              ["strategy", "kind"], registry=self.registry)
        self.latency = Histogram("redline_request_latency_seconds", "Request latency by strategy.",
                                 ["strategy"], buckets=LATENCY_BUCKETS, registry=self.registry)
        gauge = Gauge("redline_requests_in_flight", "Completion requests being worked on.", registry=self.registry)
        gauge.set_function(in_flight)

    def observe(self, record: RequestRecord) -> None:
        strategy = record.strategy or "-"
        self.requests.labels(record.endpoint, strategy, str(record.status)).inc()
        if record.error_type:
            self.errors.labels(record.endpoint, strategy, record.error_type).inc()
        if record.cancelled:
            self.cancelled.labels(record.endpoint, strategy).inc()
        if record.strategy:
            self.tokens.labels(strategy, "prompt").inc(record.prompt_tokens)
            self.tokens.labels(strategy, "completion").inc(record.completion_tokens)
            self.latency.labels(strategy).observe(record.latency_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)
