"""Tests of the Fargate Node object: name, labels, taint, capacity, addresses, conditions."""

from __future__ import annotations

from typing import Any

import pytest

from vk_fargate.fargate import nodes, sizing

NOW = "2024-05-01T12:00:00Z"
NAME = "fargate-ip-10-0-1-2.us-east-1.compute.internal"


def placement(**overrides: Any) -> nodes.Placement:
    fields: dict[str, Any] = {
        "pod_uid": "0a1b2c3d-0000-1111-2222-333344445555",
        "pod": "shop/web-0",
        "ip": "10.0.1.2",
        "zone": "us-east-1a",
        "region": "us-east-1",
        "cluster": "dev",
        "size": sizing.Size(2000, 4096, 20),
        "kubelet_host": "vk-fargate.example.internal",
        "kubelet_port": 10250,
    }
    fields.update(overrides)
    return nodes.Placement(**fields)


@pytest.mark.parametrize(
    ("ip", "region", "name"),
    [
        ("10.0.1.2", "us-east-1", NAME),
        ("192.168.100.254", "eu-west-3", "fargate-ip-192-168-100-254.eu-west-3.compute.internal"),
    ],
)
def test_node_name(ip: str, region: str, name: str) -> None:
    assert nodes.node_name(ip, region) == name


def test_name_and_labels() -> None:
    meta = nodes.node(placement(), NOW)["metadata"]
    assert meta["name"] == NAME
    labels = meta["labels"]
    assert labels["eks.amazonaws.com/compute-type"] == "fargate"
    assert labels["topology.kubernetes.io/region"] == "us-east-1"
    assert labels["topology.kubernetes.io/zone"] == "us-east-1a"
    assert labels["kubernetes.io/os"] == "linux"
    assert labels["kubernetes.io/arch"] == "amd64"
    assert labels["kubernetes.io/hostname"] == NAME
    assert labels[nodes.CLUSTER_LABEL] == "dev"


def test_labels_follow_the_placement() -> None:
    labels = nodes.node(placement(ip="10.9.8.7", zone="eu-west-3b", region="eu-west-3"), NOW)[
        "metadata"
    ]["labels"]
    assert labels["kubernetes.io/hostname"] == "fargate-ip-10-9-8-7.eu-west-3.compute.internal"
    assert labels["topology.kubernetes.io/zone"] == "eu-west-3b"
    assert labels["topology.kubernetes.io/region"] == "eu-west-3"


def test_annotations_name_the_pod() -> None:
    meta = nodes.node(placement(), NOW)["metadata"]
    assert meta["annotations"] == {
        nodes.POD_UID_ANNOTATION: "0a1b2c3d-0000-1111-2222-333344445555",
        nodes.POD_ANNOTATION: "shop/web-0",
    }


def test_fargate_taint() -> None:
    spec = nodes.node(placement(), NOW)["spec"]
    assert spec["taints"] == [
        {"key": "eks.amazonaws.com/compute-type", "value": "fargate", "effect": "NoSchedule"}
    ]


@pytest.mark.parametrize(
    ("size", "cpu", "memory", "storage"),
    [
        (sizing.Size(2000, 4096, 20), "2000m", "4096Mi", "20Gi"),
        (sizing.Size(250, 512, 100), "250m", "512Mi", "100Gi"),
        (sizing.Size(16000, 122880, 175), "16000m", "122880Mi", "175Gi"),
    ],
)
def test_capacity_and_allocatable_from_the_size(
    size: sizing.Size, cpu: str, memory: str, storage: str
) -> None:
    status = nodes.node(placement(size=size), NOW)["status"]
    expected = {"cpu": cpu, "memory": memory, "ephemeral-storage": storage, "pods": "1"}
    assert status["capacity"] == expected
    assert status["allocatable"] == expected


def test_addresses_and_kubelet_endpoint() -> None:
    status = nodes.node(placement(kubelet_port=10350), NOW)["status"]
    assert status["addresses"] == [
        {"type": "InternalIP", "address": "10.0.1.2"},
        {"type": "Hostname", "address": "vk-fargate.example.internal"},
    ]
    assert status["daemonEndpoints"] == {"kubeletEndpoint": {"Port": 10350}}
    # so the API server hands kubectl exec's WebSocket to us rather than wanting SPDY
    assert status["declaredFeatures"] == ["ExtendWebSocketsToKubelet"]


def test_node_info_is_linux_amd64() -> None:
    info = nodes.node(placement(), NOW)["status"]["nodeInfo"]
    assert (info["operatingSystem"], info["architecture"]) == ("linux", "amd64")
    assert info["kubeletVersion"] == nodes.KUBELET_VERSION
    assert info["systemUUID"] == "0a1b2c3d-0000-1111-2222-333344445555"


def test_a_new_node_has_five_conditions_and_only_ready_is_true() -> None:
    conditions = nodes.node(placement(), NOW)["status"]["conditions"]
    assert [c["type"] for c in conditions] == [
        "Ready",
        "MemoryPressure",
        "DiskPressure",
        "PIDPressure",
        "NetworkUnavailable",
    ]
    assert {c["type"]: c["status"] for c in conditions} == {
        "Ready": "True",
        "MemoryPressure": "False",
        "DiskPressure": "False",
        "PIDPressure": "False",
        "NetworkUnavailable": "False",
    }
    ready = conditions[0]
    assert ready["reason"] == "KubeletReady"
    assert all(c["lastHeartbeatTime"] == NOW for c in conditions)
    assert all(c["lastTransitionTime"] == NOW for c in conditions)


def test_not_ready_conditions() -> None:
    conditions = nodes.conditions(NOW, ready=False, message="microVM lost")
    by_type = {c["type"]: c for c in conditions}
    assert by_type["Ready"]["status"] == "False"
    assert by_type["Ready"]["reason"] == "KubeletNotReady"
    assert by_type["Ready"]["message"] == "microVM lost"
    assert all(c["status"] == "False" for c in conditions)
    assert by_type["MemoryPressure"]["reason"] == "NoMemoryPressure"
