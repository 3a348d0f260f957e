"""CoreDNS deployed on the local stack as EKS deploys it, and running on Fargate.

A Fargate-only EKS cluster runs its CoreDNS on Fargate: a profile selects kube-system's
``k8s-app=kube-dns`` pods, and the add-on's Deployment, Service ``kube-dns`` and RBAC
do the rest. `vk-fargate dev up` does the same once the provider runs (``deploy``):
``manifests/coredns-profile.yaml`` first, waited for until ACTIVE (the webhook only
steers pods at their creation, so pods made before it would stay with
default-scheduler), then ``manifests/coredns.yaml``. Both through ``kubectl apply``,
so applying again changes nothing. ``pods`` says how its pods are doing, for
`dev status`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import subprocess
from pathlib import Path
from typing import Any

from vk_fargate import errors
from vk_fargate.devcluster import binaries, components

MANIFESTS = Path(__file__).resolve().parent / "manifests"
PROFILE = MANIFESTS / "coredns-profile.yaml"
COREDNS = MANIFESTS / "coredns.yaml"
PROFILE_NAME = "coredns"
SELECTOR = "k8s-app=kube-dns"
NAMESPACE = "kube-system"
PROFILE_WAIT = "60s"


def service_ip() -> str:
    """kube-dns's ClusterIP: the 10th address of the service CIDR, as kubeadm picks it."""
    return str(ipaddress.ip_network(components.SERVICE_CIDR)[10])


async def _kubectl(kubeconfig: Path, *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        str(binaries.kubectl_path()),
        "--kubeconfig",
        str(kubeconfig),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    if process.returncode != 0:
        raise errors.HarnessError(f"kubectl {' '.join(args)}", err.decode().strip()[-600:])
    return out.decode()


async def deploy(kubeconfig: Path) -> None:
    """Apply the profile, wait until it is ACTIVE, apply CoreDNS. Safe to repeat."""
    await _kubectl(kubeconfig, "apply", "-f", str(PROFILE))
    await _kubectl(
        kubeconfig,
        "wait",
        "--for=jsonpath={.status.status}=ACTIVE",
        f"fargateprofile/{PROFILE_NAME}",
        f"--timeout={PROFILE_WAIT}",
    )
    await _kubectl(kubeconfig, "apply", "-f", str(COREDNS))


def pods(kubeconfig: Path) -> list[dict[str, Any]]:
    """CoreDNS's pods: name, phase, ready, node (for `dev status`)."""
    done = subprocess.run(
        [
            *(str(binaries.kubectl_path()), "--kubeconfig", str(kubeconfig)),
            *("-n", NAMESPACE, "get", "pods", "-l", SELECTOR, "-o", "json"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if done.returncode != 0:
        return []
    return [summary(pod) for pod in json.loads(done.stdout)["items"]]


def summary(pod: dict[str, Any]) -> dict[str, Any]:
    """The few fields `dev status` shows of a pod. Pure."""
    status = pod.get("status") or {}
    conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
    return {
        "name": pod["metadata"]["name"],
        "phase": status.get("phase", "Unknown"),
        "ready": conditions.get("Ready") == "True",
        "node": (pod.get("spec") or {}).get("nodeName") or "",
    }
