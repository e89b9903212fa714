"""Prometheus metrics for GET /metrics: requests, errors, tokens and latency per strategy, and the
upstream endpoints (generator replicas, remote PRMs) with their calls, errors, latency and state.

Each app has its own registry, so several servers (tests, benches) in one process never
share counts.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from redline.backends.endpoints import EndpointPool
from redline.server.record import RequestRecord


def endpoint_pools(runtime: Any) -> list[EndpointPool[Any]]:
    """The endpoint pools a runtime uses: its backend's and those of the verifiers built so far."""
    owners = [runtime.backend, *getattr(runtime, "verifiers", {}).values()]
    pools = [getattr(o, "endpoints", None) for o in owners]
    return list({id(p): p for p in pools if isinstance(p, EndpointPool)}.values())


class UpstreamCollector(Collector):
    """Reads the pools' `EndpointStats` at scrape time (they are counted where the calls happen)."""

    def __init__(self, pools: Callable[[], Iterable[EndpointPool[Any]]]) -> None:
        self.pools = pools

    def collect(self) -> Iterator[Metric]:
        labels = ["pool", "endpoint"]
        calls = CounterMetricFamily("redline_upstream_calls", "Attempts sent to each upstream endpoint.", labels=labels)
        errors = CounterMetricFamily("redline_upstream_errors", "Attempts that failed, per upstream endpoint.",
                                     labels=labels)
        latency = CounterMetricFamily("redline_upstream_latency_seconds",
                                      "Summed latency of successful upstream attempts.", labels=labels)
        in_flight = GaugeMetricFamily("redline_upstream_in_flight", "Attempts in flight per endpoint.", labels=labels)
        up = GaugeMetricFamily("redline_upstream_in_service", "1 while the endpoint takes requests, 0 while it is "
                               "out (probed with GET /v1/models until it answers).", labels=labels)
        for pool in self.pools():
            for s in pool.stats():
                key = [pool.name, s.url]
                calls.add_metric(key, s.calls)
                errors.add_metric(key, s.errors)
                latency.add_metric(key, s.latency_sum_s)
                in_flight.add_metric(key, s.in_flight)
                up.add_metric(key, 1.0 if s.in_service else 0.0)
        yield from (calls, errors, latency, in_flight, up)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, in_flight: Callable[[], float],
                 upstream: Callable[[], Iterable[EndpointPool[Any]]] = tuple) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(UpstreamCollector(upstream))
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
            self.tokens.labels(strategy, "cached_prompt").inc(record.cached_prompt_tokens)
            self.tokens.labels(strategy, "completion").inc(record.completion_tokens)
            self.latency.labels(strategy).observe(record.latency_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)
