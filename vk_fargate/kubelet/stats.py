"""The kubelet's resource-usage formats, built from a microVM's readings. Pure: no I/O.

``kubectl top`` reads metrics-server, which scrapes every node's kubelet API. Each of
our virtual nodes carries one pod and *is* one microVM, so the node's numbers are the
microVM's (``models.MicroVMStats``, from the fleet) and so are the pod's; containers
have numbers of their own where the fleet reads them (else none). Two formats:

- ``summary``: ``/stats/summary``, the JSON of k8s.io/kubelet ``stats/v1alpha1``
  ``Summary`` for one virtual node (CPU, memory, and the microVM's ``eth0`` as both the
  node's and the pod's network when the fleet reads it). Times are RFC 3339 in whole seconds, as
  ``metav1.Time`` writes them. Only values we have are written: no zeros stand in
  for what the fleet did not read (``usageNanoCores`` appears from the second sample
  on; ``availableBytes`` only with a known memory capacity).
- ``resource_metrics``: ``/metrics/resource``, Prometheus text (format 0.0.4) as the
  kubelet's resource collector writes it (pkg/kubelet/metrics/collectors): the same
  names, ``[STABLE]`` help texts, labels ``container``/``namespace``/``pod`` sorted,
  values as Go's ``strconv.FormatFloat(v, 'g', -1, 64)``, sample timestamps in
  milliseconds on everything but start times and scrape errors; families by name.

Facts about metrics-server v0.8.0 relied on (pkg/scraper/client/resource; its own
decoder reads our nodes in tests/provider/test_metrics_server_decoder.py):

- It GETs ``/metrics/resource`` from each node (the ``Hostname`` address first only if
  told so by ``--kubelet-preferred-address-types``; the node's own port only with
  ``--kubelet-use-node-status-port``) and parses it with Prometheus ``textparse``. It
  reads only ``node_cpu_usage_seconds_total``, ``node_memory_working_set_bytes``,
  ``container_cpu_usage_seconds_total``, ``container_memory_working_set_bytes`` and
  ``container_start_time_seconds`` (exact names); ``pod_*`` and the scrape errors are
  ignored: a pod's usage is its containers' sum.
- Container labels are found by substring search for ``container="``, ``pod="`` and
  ``namespace="``: all three must be there (a missing one garbles the parse).
- Timestamps are optional (the scrape's request time stands in) and in milliseconds.
- The node's numbers are dropped when its timestamp is zero or its CPU counter or
  working set is 0. In a pod, a container with a CPU counter or working set of 0
  (one of its two series missing counts as 0) drops the *whole pod*; a missing
  ``container_start_time_seconds`` only leaves the start time zero.
- CPU rates are computed by metrics-server from two scrapes of the cumulative
  counters; ``usageNanoCores`` (``Rates``) serves ``/stats/summary`` readers only,
  computed as cAdvisor does: counter delta over time delta between two samples.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
from collections.abc import Mapping, Sequence
from typing import Any

from vk_fargate.fargate import quantities
from vk_fargate.fleet import models

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
NANOS = 1_000_000_000
# Help texts as the kubelet (component-base metrics) annotates them.
HELP = {
    "container_cpu_usage_seconds_total": (
        "counter",
        "[STABLE] Cumulative cpu time consumed by the container in core-seconds",
    ),
    "container_memory_working_set_bytes": (
        "gauge",
        "[STABLE] Current working set of the container in bytes",
    ),
    "container_start_time_seconds": (
        "gauge",
        "[STABLE] Start time of the container since unix epoch in seconds",
    ),
    "node_cpu_usage_seconds_total": (
        "counter",
        "[STABLE] Cumulative cpu time consumed by the node in core-seconds",
    ),
    "node_memory_working_set_bytes": (
        "gauge",
        "[STABLE] Current working set of the node in bytes",
    ),
    "pod_cpu_usage_seconds_total": (
        "counter",
        "[STABLE] Cumulative cpu time consumed by the pod in core-seconds",
    ),
    "pod_memory_working_set_bytes": (
        "gauge",
        "[STABLE] Current working set of the pod in bytes",
    ),
    "resource_scrape_error": (
        "gauge",
        "[STABLE] 1 if there was an error while getting container metrics, 0 otherwise",
    ),
    "scrape_error": (
        "gauge",
        "[ALPHA] (Deprecated since 1.29.0) 1 if there was an error while getting container "
        "metrics, 0 otherwise",
    ),
}


# Rates


@dataclasses.dataclass(frozen=True)
class _Sample:
    timestamp: datetime.datetime
    usage_ns: int
    started_at: datetime.datetime | None


class Rates:
    """CPU rates (``usageNanoCores``) from cumulative readings, per key, as cAdvisor does.

    A key names one counter: ``(microvm id, "")`` for a microVM (node and pod), or
    ``(microvm id, container name)``. ``observe`` returns the rate between the previous
    sample and this one, in nanocores (CPU-nanoseconds per second): None for the first
    sample, after a counter reset (lower than before, or a new ``started_at``: a
    restarted container), and until a window of ``min_window`` seconds exists. A sample
    closer than ``min_window`` to the previous one gets the last rate and does not
    replace that sample, so rapid readers do not shrink the window to noise.
    """

    def __init__(self, *, min_window: float = 1.0) -> None:
        self.min_window = min_window
        self._samples: dict[tuple[str, str], _Sample] = {}
        self._rates: dict[tuple[str, str], int | None] = {}

    def observe(
        self,
        key: tuple[str, str],
        timestamp: datetime.datetime,
        usage_ns: int,
        *,
        started_at: datetime.datetime | None = None,
    ) -> int | None:
        sample = _Sample(timestamp, usage_ns, started_at)
        previous = self._samples.get(key)
        if previous is None or usage_ns < previous.usage_ns or started_at != previous.started_at:
            self._samples[key] = sample
            self._rates[key] = None
            return None
        seconds = (timestamp - previous.timestamp).total_seconds()
        if seconds < self.min_window or seconds <= 0:
            return self._rates.get(key)
        rate = round((usage_ns - previous.usage_ns) / seconds)
        self._samples[key] = sample
        self._rates[key] = rate
        return rate

    def forget(self, microvm_id: str) -> None:
        """Drop every counter of a microVM that is gone."""
        for key in [k for k in self._samples if k[0] == microvm_id]:
            del self._samples[key]
            self._rates.pop(key, None)

    def __len__(self) -> int:
        return len(self._samples)


# /stats/summary


def summary(
    node: Mapping[str, Any],
    pod: Mapping[str, Any],
    stats: models.MicroVMStats,
    rates: Rates,
) -> dict[str, Any]:
    """The ``Summary`` of the virtual node ``node`` running ``pod`` in the microVM whose
    readings are ``stats``; ``rates`` keeps the samples ``usageNanoCores`` needs."""
    vm_rate = rates.observe(
        (stats.microvm_id, ""),
        stats.timestamp,
        stats.cpu.usage_core_nanoseconds,
        started_at=stats.started_at,
    )
    vm_cpu = _cpu(stats.timestamp, stats.cpu, vm_rate)
    node_memory = _memory(stats.timestamp, stats.memory)
    capacity = _memory_capacity(node)
    if capacity is not None:
        node_memory["availableBytes"] = max(0, capacity - stats.memory.working_set_bytes)
    node_doc: dict[str, Any] = {"nodeName": node["metadata"]["name"]}
    node_start = _time(stats.started_at) or node["metadata"].get("creationTimestamp")
    if node_start:
        node_doc["startTime"] = node_start
    node_doc.update(cpu=vm_cpu, memory=node_memory)
    if stats.network is not None:
        node_doc["network"] = _network(stats.timestamp, stats.network)

    containers = []
    for item in stats.containers:
        started = _container_start(pod, item)
        rate = rates.observe(
            (stats.microvm_id, item.name),
            stats.timestamp,
            item.cpu.usage_core_nanoseconds,
            started_at=started,
        )
        entry: dict[str, Any] = {"name": item.name}
        if started is not None:
            entry["startTime"] = _time(started)
        entry["cpu"] = _cpu(stats.timestamp, item.cpu, rate)
        entry["memory"] = _memory(stats.timestamp, item.memory)
        containers.append(entry)

    metadata = pod["metadata"]
    pod_doc: dict[str, Any] = {
        "podRef": {
            "name": metadata["name"],
            "namespace": metadata["namespace"],
            "uid": metadata["uid"],
        }
    }
    pod_start = pod.get("status", {}).get("startTime") or _time(stats.started_at)
    if pod_start:
        pod_doc["startTime"] = pod_start
    pod_doc.update(
        containers=containers,
        cpu=dict(vm_cpu),
        memory=_memory(stats.timestamp, stats.memory),
    )
    if stats.network is not None:
        pod_doc["network"] = _network(stats.timestamp, stats.network)
    return {"node": node_doc, "pods": [pod_doc]}


def _network(moment: datetime.datetime, network: models.NetworkStats) -> dict[str, Any]:
    """``NetworkStats``: the default interface inline, and every interface (just it)."""
    interface = {
        "name": network.name,
        "rxBytes": network.rx_bytes,
        "rxErrors": network.rx_errors,
        "txBytes": network.tx_bytes,
        "txErrors": network.tx_errors,
    }
    return {"time": _time(moment), **interface, "interfaces": [dict(interface)]}


def _cpu(moment: datetime.datetime, cpu: models.CPUStats, rate: int | None) -> dict[str, Any]:
    doc: dict[str, Any] = {"time": _time(moment)}
    if rate is not None:
        doc["usageNanoCores"] = rate
    doc["usageCoreNanoSeconds"] = cpu.usage_core_nanoseconds
    return doc


def _memory(moment: datetime.datetime, memory: models.MemoryStats) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "time": _time(moment),
        "usageBytes": memory.usage_bytes,
        "workingSetBytes": memory.working_set_bytes,
    }
    optional = {
        "rssBytes": memory.rss_bytes,
        "pageFaults": memory.page_faults,
        "majorPageFaults": memory.major_page_faults,
    }
    doc.update({k: v for k, v in optional.items() if v is not None})
    return doc


def _memory_capacity(node: Mapping[str, Any]) -> int | None:
    raw = node.get("status", {}).get("capacity", {}).get("memory")
    if raw is None:
        return None
    try:
        return int(quantities.parse(raw))
    except ValueError:
        return None


def _time(moment: datetime.datetime | None) -> str | None:
    """RFC 3339 in whole seconds, UTC, as ``metav1.Time`` marshals."""
    if moment is None:
        return None
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _container_start(
    pod: Mapping[str, Any], item: models.ContainerStats
) -> datetime.datetime | None:
    """When the container's current instance started: the fleet's word, else the pod's."""
    if item.started_at is not None:
        return item.started_at
    statuses = [
        *pod.get("status", {}).get("initContainerStatuses", []),
        *pod.get("status", {}).get("containerStatuses", []),
    ]
    for status in statuses:
        if status.get("name") == item.name:
            raw = status.get("state", {}).get("running", {}).get("startedAt")
            if raw:
                return datetime.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    return None


# /metrics/resource


def resource_metrics(
    pods: Sequence[tuple[Mapping[str, Any], models.MicroVMStats]],
    *,
    node: models.MicroVMStats | None = None,
    scrape_error: bool = False,
) -> str:
    """``/metrics/resource`` for ``pods`` (each with its microVM's readings) and, when
    given, the node's own readings (a virtual node: its one pod's microVM)."""
    series: dict[str, list[tuple[tuple[str, ...], str]]] = {name: [] for name in HELP}
    if node is not None:
        stamp = _millis(node.timestamp)
        series["node_cpu_usage_seconds_total"].append(
            _sample("node_cpu_usage_seconds_total", {}, _seconds(node.cpu), stamp)
        )
        series["node_memory_working_set_bytes"].append(
            _sample("node_memory_working_set_bytes", {}, node.memory.working_set_bytes, stamp)
        )
    for pod, stats in pods:
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        stamp = _millis(stats.timestamp)
        for item in stats.containers:
            labels = {"container": item.name, "namespace": namespace, "pod": name}
            started = _container_start(pod, item)
            if started is not None and started > EPOCH:
                seconds = (started - EPOCH) / datetime.timedelta(seconds=1)
                series["container_start_time_seconds"].append(
                    _sample("container_start_time_seconds", labels, seconds, None)
                )
            series["container_cpu_usage_seconds_total"].append(
                _sample("container_cpu_usage_seconds_total", labels, _seconds(item.cpu), stamp)
            )
            series["container_memory_working_set_bytes"].append(
                _sample(
                    "container_memory_working_set_bytes",
                    labels,
                    item.memory.working_set_bytes,
                    stamp,
                )
            )
        labels = {"namespace": namespace, "pod": name}
        series["pod_cpu_usage_seconds_total"].append(
            _sample("pod_cpu_usage_seconds_total", labels, _seconds(stats.cpu), stamp)
        )
        series["pod_memory_working_set_bytes"].append(
            _sample("pod_memory_working_set_bytes", labels, stats.memory.working_set_bytes, stamp)
        )
    error = 1 if scrape_error else 0
    series["resource_scrape_error"].append(_sample("resource_scrape_error", {}, error, None))
    series["scrape_error"].append(_sample("scrape_error", {}, error, None))
    lines = []
    for name in sorted(series):
        if not series[name]:
            continue
        kind, text = HELP[name]
        lines.append(f"# HELP {name} {_escape_help(text)}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(line for _, line in sorted(series[name]))
    return "".join(line + "\n" for line in lines)


def _seconds(cpu: models.CPUStats) -> float:
    return cpu.usage_core_nanoseconds / NANOS


def _millis(moment: datetime.datetime) -> int:
    """Milliseconds since the epoch, truncated as Go's ``UnixMilli``."""
    return (moment - EPOCH) // datetime.timedelta(milliseconds=1)


def _sample(
    name: str, labels: Mapping[str, str], value: float, millis: int | None
) -> tuple[tuple[str, ...], str]:
    """(sort key, line): Go's client orders a family's samples by their label values."""
    text = name
    if labels:
        pairs = ",".join(f'{k}="{_escape_label(v)}"' for k, v in sorted(labels.items()))
        text += "{" + pairs + "}"
    text += " " + go_float(value)
    if millis is not None:
        text += f" {millis}"
    return tuple(v for _, v in sorted(labels.items())), text


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def go_float(value: float) -> str:
    """``value`` as Go's ``strconv.FormatFloat(value, 'g', -1, 64)`` writes it (what
    Prometheus' Go client writes): shortest digits, exponent form from 1e+06 and below
    1e-04 (``1.2345678e+07``, ``0.5``, ``123456``)."""
    number = float(value)
    if number == 0:
        return "0"
    sign, digit_tuple, exponent = decimal.Decimal(repr(number)).normalize().as_tuple()
    assert isinstance(exponent, int), number  # finite numbers only
    digits = "".join(str(d) for d in digit_tuple)
    point = len(digits) + exponent  # where the decimal point goes in ``digits``
    power = point - 1
    if power < -4 or power >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        text = f"{mantissa}e{'-' if power < 0 else '+'}{abs(power):02d}"
    elif point <= 0:
        text = "0." + "0" * -point + digits
    elif point >= len(digits):
        text = digits + "0" * (point - len(digits))
    else:
        text = digits[:point] + "." + digits[point:]
    return ("-" if sign else "") + text
