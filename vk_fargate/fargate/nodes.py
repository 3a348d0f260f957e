"""What a Fargate node looks like (``fargate-facts.md`` §3). Pure.

One node per pod, named after the microVM's IP; labels and taint as EKS sets them, so
workloads that select or tolerate Fargate nodes behave as on EKS. The node's
``InternalIP`` is the microVM's; its ``Hostname`` address is where the API server
reaches this provider's kubelet API (the API server's default
``--kubelet-preferred-address-types`` tries Hostname first).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from vk_fargate import __version__
from vk_fargate.fargate import sizing

COMPUTE_TYPE = "eks.amazonaws.com/compute-type"
CLUSTER_LABEL = "vk-fargate.io/cluster"
POD_UID_ANNOTATION = "vk-fargate.io/pod-uid"
POD_ANNOTATION = "vk-fargate.io/pod"
KUBELET_VERSION = "v1.36.3-vk-fargate-" + __version__
# The API server hands a client's exec/attach/port-forward WebSocket straight to a
# kubelet whose node declares this (Kubernetes 1.36; else it would want SPDY).
DECLARED_FEATURES = ["ExtendWebSocketsToKubelet"]
CONDITIONS = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure", "NetworkUnavailable")


def node_name(ip: str, region: str) -> str:
    """``fargate-ip-10-0-1-2.<region>.compute.internal``."""
    return f"fargate-ip-{ip.replace('.', '-')}.{region}.compute.internal"


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where a pod's microVM runs, as the node will say."""

    pod_uid: str
    pod: str  # namespace/name
    ip: str
    zone: str
    region: str
    cluster: str
    size: sizing.Size
    kubelet_host: str
    kubelet_port: int


def conditions(now: str, *, ready: bool = True, message: str = "") -> list[dict[str, Any]]:
    """The five node conditions; only Ready is True when healthy."""
    out = []
    for kind in CONDITIONS:
        healthy = kind == "Ready"
        status = ready if healthy else False
        reason = ("KubeletReady" if ready else "KubeletNotReady") if healthy else f"No{kind}"
        out.append(
            {
                "type": kind,
                "status": "True" if status else "False",
                "reason": reason,
                "message": message or ("vk-fargate microVM is running" if healthy else ""),
                "lastHeartbeatTime": now,
                "lastTransitionTime": now,
            }
        )
    return out


def node(placement: Placement, now: str) -> dict[str, Any]:
    """The Node object to create for a placement."""
    name = node_name(placement.ip, placement.region)
    size = placement.size
    capacity = {
        "cpu": f"{size.vcpu_millis}m",
        "memory": f"{size.mem_mib}Mi",
        "ephemeral-storage": f"{size.ephemeral_gib}Gi",
        "pods": "1",
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                COMPUTE_TYPE: "fargate",
                "topology.kubernetes.io/region": placement.region,
                "topology.kubernetes.io/zone": placement.zone,
                "failure-domain.beta.kubernetes.io/region": placement.region,
                "failure-domain.beta.kubernetes.io/zone": placement.zone,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/hostname": name,
                "type": "virtual-kubelet",
                CLUSTER_LABEL: placement.cluster,
            },
            "annotations": {POD_UID_ANNOTATION: placement.pod_uid, POD_ANNOTATION: placement.pod},
        },
        "spec": {
            "providerID": f"vk-fargate://{placement.zone}/{placement.pod_uid}",
            "taints": [{"key": COMPUTE_TYPE, "value": "fargate", "effect": "NoSchedule"}],
        },
        "status": {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": conditions(now),
            "addresses": [
                {"type": "InternalIP", "address": placement.ip},
                {"type": "Hostname", "address": placement.kubelet_host},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": placement.kubelet_port}},
            "declaredFeatures": DECLARED_FEATURES,
            "nodeInfo": {
                "machineID": placement.pod_uid.replace("-", ""),
                "systemUUID": placement.pod_uid,
                "bootID": placement.pod_uid,
                "kernelVersion": "vk-fargate",
                "osImage": "vk-fargate microVM",
                "containerRuntimeVersion": f"vk-fargate://{__version__}",
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": KUBELET_VERSION,
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        },
    }
