"""Prometheus metrics of the service: requests per route, their latency, the reading pools.

``GET /metrics`` answers in Prometheus' text format. Requests are labelled by method,
route template (``/collections/{collection_id}/items/{item_id}/tiles/...``, never the raw
path, which would make a series per tile) and status; requests no route matched are
``route="unmatched"``. Each app has its own registry, and each process its own values:
with several uvicorn workers per host, scrape each worker (one worker per pod is the
Kubernetes layout) or read the figures as per-process.
"""

from __future__ import annotations

import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.datasets import dataset_pool

UNMATCHED = "unmatched"
# Tiles take tens of milliseconds, mosaics and statistics up to seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """The service's metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "terratiler_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "terratiler_request_duration_seconds",
            "Time to answer a request, by method and route template.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        open_datasets = Gauge(
            "terratiler_open_datasets",
            "COG datasets kept open for reuse (idle) in this process.",
            registry=self.registry,
        )
        open_datasets.set_function(lambda: len(dataset_pool()))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        """The metrics in Prometheus' text format, and its media type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _route_template(scope: Scope) -> str:
    # FastAPI (0.16x) keeps an included router's routes with their own paths and records
    # the full template, prefix included, in its routing context; older versions copy
    # the routes with the prefix into the app.
    context = (scope.get("fastapi") or {}).get("effective_route_context")
    route = context if context is not None else scope.get("route")
    return getattr(route, "path_format", None) or getattr(route, "path", None) or UNMATCHED


class MetricsMiddleware:
    """Count and time every HTTP request (innermost: it sees the route that matched)."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Time the request; record its route template and status when it ends."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception before any response is a server error

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.observe(
                scope["method"], _route_template(scope), status, time.perf_counter() - started
            )
