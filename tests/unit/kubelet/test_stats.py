"""The kubelet's resource formats (vk_fargate/kubelet/stats.py) with plain values.

``/stats/summary`` is checked against the real Go type: hack/statscheck decodes it into
k8s.io/kubelet ``stats/v1alpha1.Summary`` with unknown fields disallowed and writes it
back, and the round trip must give the very document we sent (so required fields are
there and times are whole seconds as ``metav1.Time`` writes them). ``/metrics/resource``
is re-parsed with prometheus_client's parser.
"""

from __future__ import annotations

import datetime
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import parser

from tests import gobuild
from vk_fargate.fleet import models
from vk_fargate.kubelet import stats

VM_ID = "0b7c8a0e-5f4e-4d55-9d1e-3f1a2b3c4d5e"
T0 = datetime.datetime(2026, 11, 27, 19, 13, 10, 250_000, tzinfo=datetime.UTC)
STARTED = datetime.datetime(2026, 11, 27, 19, 0, 0, 900_000, tzinfo=datetime.UTC)
GIB = 1024**3

NODE: dict[str, Any] = {
    "metadata": {
        "name": "fargate-ip-192-168-240-4.eu-central-1.compute.internal",
        "creationTimestamp": "2026-11-27T18:59:58Z",
    },
    "status": {"capacity": {"cpu": "250m", "memory": "1Gi", "pods": "1"}},
}
POD: dict[str, Any] = {
    "metadata": {
        "name": "simple-web-599c8c8887-wfrb8",
        "namespace": "fargate-workload",
        "uid": VM_ID,
    },
    "status": {
        "startTime": "2026-11-27T18:59:59Z",
        "containerStatuses": [
            {"name": "sidecar", "state": {"running": {"startedAt": "2026-11-27T19:00:05Z"}}},
        ],
    },
}


def _memory(working_set: int, **extra: int | None) -> models.MemoryStats:
    return models.MemoryStats(
        usage_bytes=working_set + 4096, working_set_bytes=working_set, **extra
    )


def reading(
    *,
    at: datetime.datetime = T0,
    vm_cpu: int = 2_000_000_000,
    web_cpu: int = 1_500_000_000,
    sidecar_cpu: int = 300_000_000,
) -> models.MicroVMStats:
    return models.MicroVMStats(
        microvm_id=VM_ID,
        timestamp=at,
        started_at=STARTED,
        cpu=models.CPUStats(usage_core_nanoseconds=vm_cpu),
        memory=_memory(
            300 * 1024**2, rss_bytes=200 * 1024**2, page_faults=5000, major_page_faults=3
        ),
        containers=[
            models.ContainerStats(
                name="web",
                started_at=STARTED + datetime.timedelta(seconds=1),
                cpu=models.CPUStats(usage_core_nanoseconds=web_cpu),
                memory=_memory(100 * 1024**2, rss_bytes=80 * 1024**2),
            ),
            models.ContainerStats(  # no start time from the fleet: the pod's status has one
                name="sidecar",
                cpu=models.CPUStats(usage_core_nanoseconds=sidecar_cpu),
                memory=_memory(20 * 1024**2),
            ),
        ],
        network=models.NetworkStats(
            name="eth0", rx_bytes=123_456, rx_errors=0, tx_bytes=7_890, tx_errors=1
        ),
    )


# The Go checker


@pytest.fixture(scope="session")
def statscheck() -> Path:
    return gobuild.checker("statscheck", timeout=600)


def check(binary: Path, document: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary)], input=json.dumps(document), capture_output=True, text=True, timeout=30
    )


def assert_round_trips(binary: Path, document: dict[str, Any]) -> None:
    result = check(binary, document)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == document


def two_samples(rates: stats.Rates) -> dict[str, Any]:
    stats.summary(NODE, POD, reading(), rates)
    later = reading(
        at=T0 + datetime.timedelta(seconds=10),
        vm_cpu=4_500_000_000,  # +2.5 s of CPU in 10 s: 250 millicores
        web_cpu=3_500_000_000,  # +2 s
        sidecar_cpu=300_000_000,  # idle
    )
    return stats.summary(NODE, POD, later, rates)


def test_summary_is_a_kubelet_summary(statscheck: Path) -> None:
    assert_round_trips(statscheck, stats.summary(NODE, POD, reading(), stats.Rates()))
    assert_round_trips(statscheck, two_samples(stats.Rates()))


def test_summary_of_a_microvm_without_container_or_network_readings(statscheck: Path) -> None:
    bare = reading().model_copy(update={"containers": [], "network": None})
    document = stats.summary(NODE, POD, bare, stats.Rates())
    assert document["pods"][0]["containers"] == []
    assert "network" not in document["node"] and "network" not in document["pods"][0]
    assert_round_trips(statscheck, document)


@pytest.mark.parametrize(
    ("where", "change", "complaint"),
    [
        ("node", lambda d: d["node"].update(bogus=1), 'unknown field "bogus"'),
        (
            "cpu",
            lambda d: d["node"]["cpu"].update(usageCoreNanoSeconds="12"),
            "usageCoreNanoSeconds",
        ),
        ("memory", lambda d: d["node"]["memory"].update(workingSetBytes=-1), "workingSetBytes"),
        ("pod", lambda d: d["pods"][0]["podRef"].update(uid=7), "uid"),
        ("time", lambda d: d["node"].update(startTime="yesterday"), "yesterday"),
        ("container", lambda d: d["pods"][0]["containers"][0].update(cpuUsage=1), "cpuUsage"),
        ("network", lambda d: d["pods"][0]["network"].update(rxPackets=1), "rxPackets"),
        (
            "interface",
            lambda d: d["node"]["network"]["interfaces"][0].update(txBytes=-5),
            "txBytes",
        ),
    ],
)
def test_the_checker_rejects_what_the_go_type_does_not_have(
    statscheck: Path, where: str, change: Any, complaint: str
) -> None:
    document = two_samples(stats.Rates())
    change(document)
    result = check(statscheck, document)
    assert result.returncode == 1, where
    assert complaint in result.stderr


def test_the_round_trip_notices_a_missing_start_time_and_fractional_seconds(
    statscheck: Path,
) -> None:
    document = two_samples(stats.Rates())
    del document["pods"][0]["startTime"]
    with pytest.raises(AssertionError):
        assert_round_trips(statscheck, document)
    document = two_samples(stats.Rates())
    document["node"]["cpu"]["time"] = "2026-11-27T19:13:20.25Z"
    with pytest.raises(AssertionError):
        assert_round_trips(statscheck, document)


# The summary's values


def test_summary_values() -> None:
    document = two_samples(stats.Rates())
    node = document["node"]
    assert node["nodeName"] == NODE["metadata"]["name"]
    assert node["startTime"] == "2026-11-27T19:00:00Z"  # the microVM's start, in seconds
    assert node["cpu"] == {
        "time": "2026-11-27T19:13:20Z",
        "usageNanoCores": 250_000_000,
        "usageCoreNanoSeconds": 4_500_000_000,
    }
    assert node["memory"] == {
        "time": "2026-11-27T19:13:20Z",
        "availableBytes": GIB - 300 * 1024**2,
        "usageBytes": 300 * 1024**2 + 4096,
        "workingSetBytes": 300 * 1024**2,
        "rssBytes": 200 * 1024**2,
        "pageFaults": 5000,
        "majorPageFaults": 3,
    }
    [pod] = document["pods"]
    assert pod["podRef"] == {
        "name": "simple-web-599c8c8887-wfrb8",
        "namespace": "fargate-workload",
        "uid": VM_ID,
    }
    assert pod["startTime"] == "2026-11-27T18:59:59Z"  # the pod's own start time
    assert pod["cpu"] == node["cpu"]  # the node is the microVM is the pod
    assert "availableBytes" not in pod["memory"]
    assert pod["memory"]["workingSetBytes"] == 300 * 1024**2
    web, sidecar = pod["containers"]
    assert web["name"] == "web" and web["startTime"] == "2026-11-27T19:00:01Z"
    assert web["cpu"]["usageNanoCores"] == 200_000_000
    assert web["memory"] == {
        "time": "2026-11-27T19:13:20Z",
        "usageBytes": 100 * 1024**2 + 4096,
        "workingSetBytes": 100 * 1024**2,
        "rssBytes": 80 * 1024**2,
    }
    eth0 = {"name": "eth0", "rxBytes": 123_456, "rxErrors": 0, "txBytes": 7_890, "txErrors": 1}
    assert pod["network"] == {"time": "2026-11-27T19:13:20Z", **eth0, "interfaces": [eth0]}
    assert node["network"] == pod["network"]
    assert sidecar["startTime"] == "2026-11-27T19:00:05Z"  # from the pod's status
    assert sidecar["cpu"]["usageNanoCores"] == 0
    assert "rssBytes" not in sidecar["memory"]  # not read, so not written


def test_first_summary_has_no_rate_and_no_capacity_means_no_available_bytes() -> None:
    node = {"metadata": NODE["metadata"], "status": {}}
    document = stats.summary(node, POD, reading(), stats.Rates())
    assert "usageNanoCores" not in document["node"]["cpu"]
    assert all("usageNanoCores" not in c["cpu"] for c in document["pods"][0]["containers"])
    assert "availableBytes" not in document["node"]["memory"]


def test_a_container_without_any_start_time_has_none() -> None:
    pod = {**POD, "status": {}}
    document = stats.summary(NODE, pod, reading(), stats.Rates())
    sidecar = document["pods"][0]["containers"][1]
    assert sidecar["name"] == "sidecar" and "startTime" not in sidecar
    assert document["pods"][0]["startTime"] == "2026-11-27T19:00:00Z"  # the microVM's


# Rates


def test_rates() -> None:
    rates = stats.Rates(min_window=1.0)
    key = (VM_ID, "web")
    at = T0
    assert rates.observe(key, at, 1_000_000_000) is None  # nothing to compare with yet
    at += datetime.timedelta(seconds=2)
    assert rates.observe(key, at, 2_000_000_000) == 500_000_000
    # Closer than the window: the last rate, and the sample is not taken as a base.
    assert rates.observe(key, at + datetime.timedelta(seconds=0.5), 2_900_000_000) == 500_000_000
    at += datetime.timedelta(seconds=4)
    assert rates.observe(key, at, 3_000_000_000) == 250_000_000  # from the 2 s sample
    # Same timestamp again (a repeated read): the same rate.
    assert rates.observe(key, at, 3_000_000_000) == 250_000_000
    # A counter that went down is a new container: start over.
    at += datetime.timedelta(seconds=1)
    assert rates.observe(key, at, 10) is None
    at += datetime.timedelta(seconds=1)
    assert rates.observe(key, at, 1_000_000_010) == 1_000_000_000
    # A new start time is a restart even if the counter happens to be higher.
    at += datetime.timedelta(seconds=1)
    assert rates.observe(key, at, 5_000_000_000, started_at=T0) is None
    # Other keys are separate; forget drops one microVM's counters only.
    assert rates.observe(("other", ""), at, 1) is None
    assert len(rates) == 2
    rates.forget(VM_ID)
    assert len(rates) == 1
    assert rates.observe(key, at + datetime.timedelta(seconds=5), 6_000_000_000) is None


# /metrics/resource


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in parser.text_string_to_metric_families(text)}


def test_resource_metrics_parse_as_metrics_server_reads_them() -> None:
    sample = reading()
    text = stats.resource_metrics([(POD, sample)], node=sample)
    found = families(text)
    millis = 1_795_806_790_250  # T0
    pod_labels = {"namespace": "fargate-workload", "pod": "simple-web-599c8c8887-wfrb8"}

    def only(name: str) -> Any:
        [item] = found[name].samples
        return item

    # Family names drop _total for counters in prometheus_client; the samples keep it.
    assert set(found) == {
        "container_cpu_usage_seconds",
        "container_memory_working_set_bytes",
        "container_start_time_seconds",
        "node_cpu_usage_seconds",
        "node_memory_working_set_bytes",
        "pod_cpu_usage_seconds",
        "pod_memory_working_set_bytes",
        "resource_scrape_error",
        "scrape_error",
    }
    assert found["node_cpu_usage_seconds"].type == "counter"
    assert found["node_memory_working_set_bytes"].type == "gauge"
    node_cpu = only("node_cpu_usage_seconds")
    assert (node_cpu.name, node_cpu.labels, node_cpu.value) == (
        "node_cpu_usage_seconds_total",
        {},
        2.0,
    )
    assert node_cpu.timestamp == pytest.approx(millis / 1000, abs=1e-6)
    assert only("node_memory_working_set_bytes").value == 300 * 1024**2
    cpu = {s.labels["container"]: s for s in found["container_cpu_usage_seconds"].samples}
    assert set(cpu) == {"web", "sidecar"}
    assert cpu["web"].labels == {"container": "web", **pod_labels}
    assert cpu["web"].value == 1.5 and cpu["sidecar"].value == 0.3
    assert cpu["web"].timestamp == pytest.approx(millis / 1000, abs=1e-6)
    memory = {
        s.labels["container"]: s.value for s in found["container_memory_working_set_bytes"].samples
    }
    assert memory == {"web": 100 * 1024**2, "sidecar": 20 * 1024**2}
    starts = {s.labels["container"]: s for s in found["container_start_time_seconds"].samples}
    assert starts["web"].value == pytest.approx((STARTED.timestamp() + 1), abs=1e-6)
    assert (
        starts["sidecar"].value
        == datetime.datetime(2026, 11, 27, 19, 0, 5, tzinfo=datetime.UTC).timestamp()
    )
    assert starts["web"].timestamp is None  # start times carry no timestamp
    pod_cpu = only("pod_cpu_usage_seconds")
    assert (pod_cpu.labels, pod_cpu.value) == (pod_labels, 2.0)
    assert only("pod_memory_working_set_bytes").labels == pod_labels
    assert only("scrape_error").value == 0 and only("scrape_error").timestamp is None
    assert only("resource_scrape_error").value == 0
    # Exactly as the kubelet writes: help, type, sorted labels, Go floats, integer ms.
    assert (
        "# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by "
        "the container in core-seconds\n"
        "# TYPE container_cpu_usage_seconds_total counter\n"
        'container_cpu_usage_seconds_total{container="sidecar",namespace="fargate-workload",'
        'pod="simple-web-599c8c8887-wfrb8"} 0.3 1795806790250\n'
        'container_cpu_usage_seconds_total{container="web",namespace="fargate-workload",'
        'pod="simple-web-599c8c8887-wfrb8"} 1.5 1795806790250\n'
    ) in text
    assert "node_memory_working_set_bytes 3.145728e+08 1795806790250\n" in text
    assert text.index("# HELP container_") < text.index("# HELP node_") < text.index("# HELP pod_")


def test_resource_metrics_leave_out_what_is_unknown() -> None:
    sample = reading().model_copy(update={"containers": []})
    found = families(stats.resource_metrics([(POD, sample)], scrape_error=True))
    assert "container_cpu_usage_seconds" not in found  # no container readings, no lines
    assert "node_cpu_usage_seconds" not in found  # no node readings given
    assert [s.value for s in found["pod_cpu_usage_seconds"].samples] == [2.0]
    assert [s.value for s in found["scrape_error"].samples] == [1]
    no_start = reading()
    pod = {**POD, "status": {}}
    found = families(stats.resource_metrics([(pod, no_start)]))
    assert [s.labels["container"] for s in found["container_start_time_seconds"].samples] == ["web"]


@pytest.mark.parametrize(
    ("value", "text"),  # what Go's strconv.FormatFloat(v, 'g', -1, 64) prints
    [
        (0, "0"),
        (1, "1"),
        (0.3, "0.3"),
        (12.345, "12.345"),
        (100000, "100000"),
        (123456, "123456"),
        (1e6, "1e+06"),
        (1234567, "1.234567e+06"),
        (12345678, "1.2345678e+07"),
        (1.7000000005e9, "1.7000000005e+09"),
        (1e21, "1e+21"),
        (0.0001, "0.0001"),
        (0.00001234, "1.234e-05"),
        (-2.5, "-2.5"),
    ],
)
def test_go_float(value: float, text: str) -> None:
    assert stats.go_float(value) == text
