"""The seed's walkthrough on the local stack, as a transcript: `vk-fargate dev demo`.

Creates the seed's namespace and `fargate` profile, applies the seed's simple-web
Deployment unchanged (the webhook sends it to fargate-scheduler), shows what the seed
shows (schedulerName, nodes, pods with IPs, `CapacityProvisioned: 0.25vCPU 0.5GB`, the
nginx welcome page from the pod IP, logs, the pod's CPU and memory from its node's
``/stats/summary``), then the limits variant (`2vCPU 4GB`), the
PodDisruptionBudget and a refused privileged pod. Uses the wheel's kubectl throughout.

On a stack started with ``dev up --aws`` the profile names the VPC's two private subnets
and the pod execution role (which also maps the role in aws-auth, as EKS does), so each
pod gets an ENI there; one more line shows the pod IP inside a private subnet's CIDR.
"""

from __future__ import annotations

import ipaddress
import json
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from vk_fargate import errors
from vk_fargate.aws import devaws
from vk_fargate.devcluster import binaries

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NAMESPACE = "fargate-workload"
WAIT_SECONDS = 120
CAPACITY = "CapacityProvisioned"
PROFILE_CLI = (sys.executable, "-m", "vk_fargate.cli", "profile")


class Demo:
    def __init__(self, kubeconfig: str) -> None:
        self.kubeconfig = kubeconfig

    def kubectl(self, *args: str, show: bool = True) -> str:
        if show:
            print(f"\n$ kubectl {' '.join(args)}", flush=True)
        done = subprocess.run(
            [str(binaries.kubectl_path()), "--kubeconfig", self.kubeconfig, *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise errors.HarnessError(f"kubectl {' '.join(args)}", done.stderr.strip())
        if show:
            print(done.stdout.rstrip(), flush=True)
        return done.stdout

    def pods(self) -> list[dict[str, Any]]:
        listed = self.kubectl("-n", NAMESPACE, "get", "po", "-o", "json", show=False)
        items: list[dict[str, Any]] = json.loads(listed)["items"]
        return items

    def ready_pod(self, capacity: str) -> dict[str, Any]:
        """The Ready simple-web pod provisioned at ``capacity``."""
        deadline = time.monotonic() + WAIT_SECONDS
        pods: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            pods = self.pods()
            for pod in pods:
                conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions") or []}
                annotations = pod["metadata"].get("annotations") or {}
                if (
                    conditions.get("Ready") == "True"
                    and not pod["metadata"].get("deletionTimestamp")
                    and annotations.get("CapacityProvisioned") == capacity
                ):
                    return pod
            time.sleep(1)
        states = [c.get("state") for p in pods for c in p["status"].get("containerStatuses") or []]
        raise errors.HarnessError(
            "wait for simple-web", f"no Ready {capacity} pod after {WAIT_SECONDS}s ({states})"
        )

    def events(self, name: str, reason: str) -> list[dict[str, Any]]:
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            listed = json.loads(
                self.kubectl(
                    "-n",
                    NAMESPACE,
                    "get",
                    "events",
                    "-o",
                    "json",
                    "--field-selector",
                    f"involvedObject.name={name}",
                    show=False,
                )
            )["items"]
            found = [e for e in listed if e["reason"] == reason]
            if found:
                return found
            time.sleep(1)
        raise errors.HarnessError(f"wait for {reason} on {name}", "no such event")


def _welcome(ip: str) -> str:
    """The page at the pod IP, fetched only when the IP is routed to fleetd's bridge."""
    if not ipaddress.ip_address(ip).is_private:
        return "(not fetched: not a private address)"
    route = subprocess.run(
        ["ip", "route", "get", ip], capture_output=True, text=True, check=False
    ).stdout
    if " dev vkfbr" not in route:
        return "(not fetched: pod IPs are nominal here, fleetd is not root)"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://{ip}/", timeout=10) as response:
        body: str = response.read().decode()
    return "\n".join(line for line in body.splitlines() if "<title>" in line)


def usage(kubeconfig: str, node: dict[str, Any]) -> str:
    """What `kubectl top` would show for the node's pod, from the node's own kubelet
    port (as metrics-server reads it; the API server's node proxy refuses loopback)."""
    status = node["status"]
    host = next(a["address"] for a in status["addresses"] if a["type"] == "Hostname")
    url = f"https://{host}:{status['daemonEndpoints']['kubeletEndpoint']['Port']}/stats/summary"
    pki = Path(kubeconfig).parent / "pki"
    tls = ssl.create_default_context()
    tls.check_hostname = False
    tls.verify_mode = ssl.CERT_NONE  # the kubelet API's certificate is self-signed
    tls.load_cert_chain(pki / "admin.crt", pki / "admin.key")
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=tls)
    )
    with opener.open(url, timeout=10) as response:
        summary = json.loads(response.read())
    [pod] = summary["pods"]
    cpu_ns = pod["cpu"]["usageCoreNanoSeconds"]
    memory = pod["memory"]["workingSetBytes"]
    return (
        f"$ curl --cert admin.crt {url}   # the node's own kubelet port\n"
        f"pod {pod['podRef']['name']}: cpu {cpu_ns / 1e9:.3f} core-seconds used, "
        f"memory working set {memory / 2**20:.1f}Mi (node {summary['node']['nodeName']})"
    )


def _profile(kubeconfig: str, aws: devaws.World | None) -> None:
    flags = ["--name", "fargate", "--namespace", NAMESPACE]
    if aws is not None:
        flags += [
            "--subnets",
            ",".join(aws["private_subnets"]),
            "--pod-execution-role-arn",
            aws["role_arn"],
        ]
    print(f"\n$ vk-fargate profile create {' '.join(flags)}", flush=True)
    subprocess.run(
        [*PROFILE_CLI, "--kubeconfig", kubeconfig, "create", *flags],
        check=False,
        timeout=120,
    )


def eni_line(ip: str, aws: devaws.World, subnets: list[dict[str, str]]) -> str:
    """Where the pod's IP (its ENI's) lies among the VPC's private ``subnets`` (id, cidr,
    zone), as one line. Pure."""
    address = ipaddress.ip_address(ip)
    for subnet in subnets:
        if address in ipaddress.ip_network(subnet["cidr"]):
            return (
                f"pod IP {ip} is its ENI's, in private subnet {subnet['id']} "
                f"({subnet['cidr']}, {subnet['zone']}) of {aws['vpc_id']}"
            )
    return f"pod IP {ip} is NOT in a private subnet of {aws['vpc_id']}"


def run(kubeconfig: str, *, aws: devaws.World | None = None) -> None:
    """The walkthrough; ``aws`` is the seeded world of a ``dev up --aws`` stack."""
    demo = Demo(kubeconfig)
    demo.kubectl("apply", "-f", str(EXAMPLES / "namespace.yaml"))
    existing = json.loads(demo.kubectl("get", "fargateprofiles", "-o", "json", show=False))
    if not [p for p in existing["items"] if p["metadata"]["name"] == "fargate"]:
        _profile(kubeconfig, aws)
    demo.kubectl("apply", "-f", str(EXAMPLES / "simple-web.yaml"))
    pod = demo.ready_pod("0.25vCPU 0.5GB")
    name, ip = pod["metadata"]["name"], pod["status"]["podIP"]
    print(f"\n$ kubectl get pods -o yaml -n {NAMESPACE} {name} | grep schedulerName")
    print(f"  schedulerName: {pod['spec']['schedulerName']}")
    demo.kubectl("get", "nodes", "-o", "wide")
    demo.kubectl("-n", NAMESPACE, "get", "po", "-o", "wide")
    if aws is not None:
        private = devaws.describe_subnets(aws, aws["private_subnets"])
        print(f"\n{eni_line(ip, aws, private)}")
    print(f"\n$ kubectl -n {NAMESPACE} describe po {name} | grep -A1 -e Labels -e Annotations")
    labels = pod["metadata"].get("labels") or {}
    print(
        f"Labels:       eks.amazonaws.com/fargate-profile="
        f"{labels.get('eks.amazonaws.com/fargate-profile')}"
    )
    print(f"Annotations:  CapacityProvisioned: {pod['metadata']['annotations'][CAPACITY]}")
    print(f"\n$ curl {ip}\n{_welcome(ip)}")
    demo.kubectl("-n", NAMESPACE, "logs", name, "--tail=3")
    node_json = demo.kubectl("get", "node", pod["spec"]["nodeName"], "-o", "json", show=False)
    node = json.loads(node_json)
    print(f"\n{usage(kubeconfig, node)}", flush=True)
    demo.kubectl("apply", "-f", str(EXAMPLES / "simple-web-limits.yaml"))
    bigger = demo.ready_pod("2vCPU 4GB")
    print(
        f"\n$ kubectl -n {NAMESPACE} describe po {bigger['metadata']['name']} "
        "| grep CapacityProvisioned"
    )
    print(f"Annotations:  CapacityProvisioned: {bigger['metadata']['annotations'][CAPACITY]}")
    demo.kubectl("apply", "-f", str(EXAMPLES / "pdb.yaml"))
    demo.kubectl("-n", NAMESPACE, "get", "poddisruptionbudgets")
    demo.kubectl("apply", "-f", str(EXAMPLES / "privileged.yaml"))
    refusal = demo.events("privileged", "FailedScheduling")[0]
    print(f"\n$ kubectl -n {NAMESPACE} describe po privileged | grep FailedScheduling")
    print(f"  Warning  FailedScheduling  {refusal['source']['component']}  {refusal['message']}")
