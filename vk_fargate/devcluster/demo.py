"""The seed's walkthrough on the local stack, as a transcript: `vk-fargate dev demo`.

Applies ``examples/`` (the seed's namespace and simple-web Deployment) with the
wheel's kubectl, waits for the pod to run on its Fargate node, then shows what the
seed shows: nodes, pods with IPs, the CapacityProvisioned annotation, the nginx
welcome page from the pod IP, and a few lines of `kubectl logs`.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import time
import urllib.request
from pathlib import Path

from vk_fargate import errors
from vk_fargate.devcluster import binaries

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NAMESPACE = "fargate-workload"
WAIT_SECONDS = 120


def _kubectl(kubeconfig: str, *args: str, show: bool = True) -> str:
    if show:
        print(f"\n$ kubectl {' '.join(args)}", flush=True)
    done = subprocess.run(
        [str(binaries.kubectl_path()), "--kubeconfig", kubeconfig, *args],
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


def _running_pod(kubeconfig: str) -> dict[str, object]:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        pods = json.loads(
            _kubectl(kubeconfig, "-n", NAMESPACE, "get", "po", "-o", "json", show=False)
        )["items"]
        running = [
            p
            for p in pods
            if not p["metadata"].get("deletionTimestamp")
            and {c["type"]: c["status"] for c in p["status"].get("conditions") or []}.get("Ready")
            == "True"
        ]
        if running:
            return running[0]  # type: ignore[no-any-return]
        time.sleep(1)
    states = [c.get("state") for p in pods for c in p["status"].get("containerStatuses") or []]
    raise errors.HarnessError(
        "wait for simple-web", f"no Ready pod after {WAIT_SECONDS}s (containers: {states})"
    )


def _welcome(ip: str) -> str:
    """The page at the pod IP, fetched only when the IP is a private address we route."""
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
    return "\n".join(line for line in body.splitlines() if "title" in line or "<h1>" in line)


def run(kubeconfig: str) -> None:
    _kubectl(
        kubeconfig,
        "apply",
        "-f",
        str(EXAMPLES / "namespace.yaml"),
        "-f",
        str(EXAMPLES / "simple-web.yaml"),
    )
    pod = _running_pod(kubeconfig)
    meta = pod["metadata"]
    assert isinstance(meta, dict)
    name = meta["name"]
    _kubectl(kubeconfig, "get", "nodes", "-o", "wide")
    _kubectl(kubeconfig, "-n", NAMESPACE, "get", "po", "-o", "wide")
    annotations = _kubectl(
        kubeconfig,
        "-n",
        NAMESPACE,
        "get",
        "po",
        name,
        "-o",
        "jsonpath={.metadata.annotations.CapacityProvisioned}",
        show=False,
    )
    print(f"\n$ kubectl -n {NAMESPACE} describe po {name} | grep CapacityProvisioned")
    print(f"Annotations:          CapacityProvisioned: {annotations}")
    status = pod["status"]
    assert isinstance(status, dict)
    ip = str(status["podIP"])
    print(f"\n$ curl {ip}\n{_welcome(ip)}")
    _kubectl(kubeconfig, "-n", NAMESPACE, "logs", name, "--tail=5")
