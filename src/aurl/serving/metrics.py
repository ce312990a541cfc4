"""Prometheus metrics of one server (its own registry, so tests can build several apps)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)
"""Seconds: a 64-token request takes ~0.2 s alone on one core, a 64-bar piece about a minute."""


class Metrics:
    """Request counts and latency (by route and status), tokens, batch occupancy, queue length."""

    def __init__(self, scheduler) -> None:
        self.scheduler = scheduler
        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "aurl_requests", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "aurl_request_seconds", "request latency by route", ["route"],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.tokens = Gauge("aurl_tokens_total", "tokens generated since start", registry=r)
        self.tokens_per_s = Gauge(
            "aurl_tokens_per_second",
            "tokens generated per second since the last scrape",
            registry=r,
        )
        self.active = Gauge("aurl_batch_rows", "rows decoding now (batch occupancy)", registry=r)
        self.occupancy = Gauge(
            "aurl_batch_occupancy_mean", "mean rows per decode step since start", registry=r
        )
        self.steps = Gauge(
            "aurl_decode_steps_total", "batched decode steps since start", registry=r
        )
        self.queue = Gauge("aurl_queue_length", "requests waiting for a row", registry=r)
        self._last = (time.monotonic(), 0)

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def render(self) -> bytes:
        s = self.scheduler.stats
        now, tokens = time.monotonic(), s.tokens
        t0, n0 = self._last
        self.tokens_per_s.set((tokens - n0) / max(now - t0, 1e-9))
        self._last = (now, tokens)
        self.tokens.set(tokens)
        self.active.set(s.active)
        self.steps.set(s.steps)
        self.occupancy.set(s.occupancy_sum / s.steps if s.steps else 0.0)
        self.queue.set(self.scheduler.queued)
        return generate_latest(self.registry)
