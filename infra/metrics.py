"""Prometheus metrics for one API process: requests and latency by GraphQL operation, HTTP
routes, the DB pool, and fleet-wide job and outbox counts read at scrape time."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncEngine

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass
class ScrapeSnapshot:
    """Values fetched from PostgreSQL and Redis just before a scrape is rendered."""

    jobs: dict[tuple[str, str], int] = field(default_factory=dict)
    queue_messages: dict[str, int] = field(default_factory=dict)
    outbox_unpublished: int | None = None
    sources_up: dict[str, bool] = field(default_factory=dict)


class _StateCollector(Collector):
    def __init__(self) -> None:
        self.engine: AsyncEngine | None = None  # set when the lifespan makes the engine
        self.snapshot = ScrapeSnapshot()
        self.result_cache_stats: dict[str, int] = {}
        self.principal_cache_stats: dict[str, int] = {}

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        if self.engine is not None:
            pool = self.engine.pool
            gauge = GaugeMetricFamily("gpucloud_db_pool_connections", "DB pool connections by state",
                                      labels=["state"])  # fmt: skip
            for state in ("checkedout", "checkedin", "overflow", "size"):
                reader = getattr(pool, state, None)
                if callable(reader):
                    gauge.add_metric([state], float(reader()))
            yield gauge
        cache = CounterMetricFamily("gpucloud_graphql_result_cache", "Public-query result cache lookups",
                                    labels=["outcome"])  # fmt: skip
        for outcome, count in sorted(self.result_cache_stats.items()):
            cache.add_metric([outcome], float(count))
        yield cache
        principals = CounterMetricFamily("gpucloud_auth_cache", "Authenticated-credential cache "
                                         "lookups", labels=["outcome"])  # fmt: skip
        for outcome, count in sorted(self.principal_cache_stats.items()):
            principals.add_metric([outcome], float(count))
        yield principals
        snap = self.snapshot
        jobs = CounterMetricFamily(
            "gpucloud_jobs", "Finished jobs, all workers", labels=["actor", "outcome"]
        )
        for (actor, outcome), count in sorted(snap.jobs.items()):
            jobs.add_metric([actor, outcome], float(count))
        yield jobs
        queued = GaugeMetricFamily("gpucloud_job_queue_messages", "Messages queued or in flight",
                                   labels=["queue"])  # fmt: skip
        for queue, count in sorted(snap.queue_messages.items()):
            queued.add_metric([queue], float(count))
        yield queued
        if snap.outbox_unpublished is not None:
            yield GaugeMetricFamily("gpucloud_outbox_unpublished", "Outbox rows not yet published",
                                    value=float(snap.outbox_unpublished))  # fmt: skip
        up = GaugeMetricFamily("gpucloud_dependency_up", "Dependency reachable at last scrape",
                               labels=["dependency"])  # fmt: skip
        for name, ok in sorted(snap.sources_up.items()):
            up.add_metric([name], 1.0 if ok else 0.0)
        yield up


class Metrics:
    """All metrics of one app instance, in a registry of its own (tests build many apps)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.graphql_requests = Counter(
            "gpucloud_graphql_operations", "GraphQL operations by name and outcome",
            ["operation", "outcome"], registry=self.registry,
        )  # fmt: skip
        self.graphql_latency = Histogram(
            "gpucloud_graphql_operation_duration_seconds", "GraphQL operation latency",
            ["operation"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.http_requests = Counter(
            "gpucloud_http_requests", "HTTP requests by route, method and status",
            ["route", "method", "status"], registry=self.registry,
        )  # fmt: skip
        self.http_latency = Histogram(
            "gpucloud_http_request_duration_seconds", "HTTP request latency", ["route"],
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.auth_requests = Counter(
            "gpucloud_auth_requests", "Requests by credential kind and authentication outcome",
            ["credential", "outcome"], registry=self.registry,
        )  # fmt: skip
        self.stripe_webhooks = Counter(
            "gpucloud_stripe_webhooks", "Stripe webhook deliveries by outcome",
            ["outcome"], registry=self.registry,
        )  # fmt: skip
        self.ws_connections = Gauge(
            "gpucloud_ws_connections", "Acknowledged graphql-transport-ws connections",
            registry=self.registry,
        )  # fmt: skip
        self.ws_closed = Counter(
            "gpucloud_ws_closed", "Websocket connections the server closed or refused, by reason",
            ["reason"], registry=self.registry,
        )  # fmt: skip
        self.state = _StateCollector()
        self.registry.register(self.state)
