"""Prometheus metrics of the provider, served on ``/metrics``.

Counters and histograms are updated where things happen (fleet calls, pods reaching
Running); gauges about the current state (pods by phase, watch restarts, lease lag,
provisioned capacity) are computed when scraped by ``StateCollector``, from the
provider's own view, so they can never drift from it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import prometheus_client
from prometheus_client import core

REGISTRY = prometheus_client.CollectorRegistry()

SCHEDULING_LATENCY = prometheus_client.Histogram(
    "vkfargate_pod_create_to_running_seconds",
    "Time from a pod's creation to its first Running status.",
    buckets=(0.5, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 300),
    registry=REGISTRY,
)
FLEET_LATENCY = prometheus_client.Histogram(
    "vkfargate_fleet_request_seconds",
    "Fleet API call latency.",
    ["call"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
FLEET_ERRORS = prometheus_client.Counter(
    "vkfargate_fleet_errors",
    "Fleet API calls that failed, by call and error code.",
    ["call", "code"],
    registry=REGISTRY,
)
KUBE_REQUESTS = prometheus_client.Counter(
    "vkfargate_kube_requests",
    "Requests to the Kubernetes API, by verb and resource (watches included).",
    ["verb", "resource"],
    registry=REGISTRY,
)
# client-go's workqueue metrics, per queue (pods, status, profiles, ...).
QUEUE_DEPTH = prometheus_client.Gauge(
    "vkfargate_workqueue_depth", "Keys waiting in the queue.", ["name"], registry=REGISTRY
)
QUEUE_ADDS = prometheus_client.Counter(
    "vkfargate_workqueue_adds", "Keys added to the queue.", ["name"], registry=REGISTRY
)
QUEUE_RETRIES = prometheus_client.Counter(
    "vkfargate_workqueue_retries", "Keys retried after a failure.", ["name"], registry=REGISTRY
)
QUEUE_WAIT = prometheus_client.Histogram(
    "vkfargate_workqueue_queue_duration_seconds",
    "How long a key waited in the queue before a worker took it.",
    ["name"],
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
QUEUE_WORK = prometheus_client.Histogram(
    "vkfargate_workqueue_work_duration_seconds",
    "How long working a key took.",
    ["name"],
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
PROVISIONED_VCPU_SECONDS = prometheus_client.Counter(
    "vkfargate_provisioned_vcpu_seconds",
    "vCPU-seconds provisioned to finished microVMs.",
    ["namespace", "profile"],
    registry=REGISTRY,
)
LOG_EVENTS = prometheus_client.Counter(
    "vkfargate_log_events",
    "Container log events by what became of them (shipped to CloudWatch Logs, rejected by "
    "it for their age, possibly shipped twice after a lost answer, or dropped by a grep "
    "filter), by namespace.",
    ["namespace", "outcome"],
    registry=REGISTRY,
)
LOG_RETRIES = prometheus_client.Counter(
    "vkfargate_log_put_retries",
    "PutLogEvents calls retried (throttling, 5xx, connection errors), by namespace.",
    ["namespace"],
    registry=REGISTRY,
)
PROVISIONED_GB_SECONDS = prometheus_client.Counter(
    "vkfargate_provisioned_gb_seconds",
    "GB-seconds provisioned to finished microVMs.",
    ["namespace", "profile"],
    registry=REGISTRY,
)
# The kubelet API's streaming sessions (exec, portforward), as kubelet_..._streaming.
STREAM_SESSIONS = prometheus_client.Gauge(
    "vkfargate_streaming_sessions",
    "Streaming sessions open now, by kind.",
    ["kind"],
    registry=REGISTRY,
)
STREAM_SESSIONS_TOTAL = prometheus_client.Counter(
    "vkfargate_streaming_sessions_opened",
    "Streaming sessions opened, by kind.",
    ["kind"],
    registry=REGISTRY,
)
STREAM_BYTES = prometheus_client.Counter(
    "vkfargate_streaming_bytes",
    "Bytes through streaming sessions, by kind and direction (in: from the client).",
    ["kind", "direction"],
    registry=REGISTRY,
)


class Timer:
    """``with metrics.Timer("put_microvm"):`` records latency, and errors by code."""

    def __init__(self, call: str) -> None:
        self.call = call
        self.began = 0.0

    def __enter__(self) -> Timer:
        self.began = time.perf_counter()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        FLEET_LATENCY.labels(self.call).observe(time.perf_counter() - self.began)
        if exc is not None:
            FLEET_ERRORS.labels(self.call, getattr(exc, "code", type(exc).__name__)).inc()


class StateCollector:
    """Gauges read from the provider's state at scrape time."""

    def __init__(self, read: Callable[[], dict[str, Any]]) -> None:
        self.read = read

    def describe(self) -> Iterable[core.Metric]:
        return []

    def collect(self) -> Iterator[core.Metric]:
        state = self.read()
        yield core.GaugeMetricFamily(
            "vkfargate_leader",
            "1 on the replica that holds the leader Lease (and schedules), else 0.",
            value=1 if state["leading"] else 0,
        )
        pods = core.GaugeMetricFamily("vkfargate_pods", "Pods by phase.", labels=["phase"])
        for phase, count in sorted(state["pods_by_phase"].items()):
            pods.add_metric([phase], count)
        yield pods
        restarts = core.CounterMetricFamily(
            "vkfargate_watch_restarts", "Watches re-listed after an error.", labels=["watch"]
        )
        for name, count in sorted(state["watch_restarts"].items()):
            restarts.add_metric([name], count)
        yield restarts
        yield core.GaugeMetricFamily(
            "vkfargate_lease_renewal_lag_seconds",
            "Worst lateness of a node Lease renewal so far.",
            value=state["lease_lag"],
        )
        vcpu = core.GaugeMetricFamily(
            "vkfargate_running_vcpu",
            "vCPUs provisioned to live microVMs.",
            labels=["namespace", "profile"],
        )
        memory = core.GaugeMetricFamily(
            "vkfargate_running_memory_gb",
            "GB provisioned to live microVMs.",
            labels=["namespace", "profile"],
        )
        cost = core.GaugeMetricFamily(
            "vkfargate_running_cost_usd_per_hour",
            "Estimated Fargate cost per hour of live microVMs (the pricing table's rates).",
            labels=["namespace", "profile"],
        )
        for (namespace, profile), (cpus, gbs, usd) in sorted(state["running"].items()):
            vcpu.add_metric([namespace, profile], cpus)
            memory.add_metric([namespace, profile], gbs)
            cost.add_metric([namespace, profile], usd)
        yield from (vcpu, memory, cost)


def render() -> bytes:
    return prometheus_client.generate_latest(REGISTRY)


CONTENT_TYPE = prometheus_client.CONTENT_TYPE_LATEST
