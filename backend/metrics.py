"""Prometheus metrics of one app instance (its own registry, so several apps can live in one process)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: the methods counted by name; any other (a client may send any token) is counted as "other"
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def method_label(method: str) -> str:
    """The ``method`` label: one of :data:`METHODS` or ``other`` (a fixed set, so made-up methods cannot grow
    ``/metrics``)."""
    return method if method in METHODS else "other"


def status_class(status: int) -> str:
    """The ``status`` label: ``2xx``, ``3xx``, ``4xx``, ``5xx`` (``other`` outside 100-599)."""
    return f"{status // 100}xx" if 100 <= status <= 599 else "other"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "adaptiveclick_http_requests",
            "HTTP requests by endpoint (route), method and status class",
            ["endpoint", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "adaptiveclick_http_request_seconds",
            "HTTP request latency by endpoint",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.model_latency = Histogram(
            "adaptiveclick_model_seconds",
            "Predictor time per /predict request",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.network_runs = Counter("adaptiveclick_network_runs", "Predictor steps run", registry=self.registry)
        self.cached_clicks = Counter(
            "adaptiveclick_cached_clicks", "Clicks answered from the session cache", registry=self.registry
        )
        self.model_swaps = Counter("adaptiveclick_model_swaps", "Registry versions swapped in", registry=self.registry)
        self.model_rejections = Counter(
            "adaptiveclick_model_rejections",
            "Registry versions rejected (not loadable or failing the smoke test)",
            registry=self.registry,
        )
        self.webhook_events = Counter(
            "adaptiveclick_webhook_events", "Webhook events by action", ["action"], registry=self.registry
        )

    def record_swap(self, version: str) -> None:
        """A registry version was swapped in (the served models are read at scrape time)."""
        self.model_swaps.inc()

    def add_collector(self, collect: Callable[[], list[GaugeMetricFamily]]) -> None:
        """Register values read at scrape time (cache size, annotation counts)."""

        class _Collector:
            def collect(self):
                return collect()

        self.registry.register(_Collector())

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
