"""Fault suite: churn pods while the provider, fleetd and kube-apiserver are SIGKILLed at
random moments, and count what was lost. Every count must be 0.

Usage: python benchmarks/chaos.py [--rounds 10] [--pods 12] [--kills 3] [--seed N]
                                  [--state-dir DIR]
Starts a dev stack (`vk-fargate dev up`) in DIR (a new temporary one by default) and
stops it at the end, unless one already runs there. A Fargate profile selects the
namespace ``chaos``. Each round:

- creates ``--pods`` bare pods (no schedulerName: the webhook decides; each prints 40
  numbered lines, then sleeps), deletes a quarter of them, and scales the Deployment
  ``web`` 2 -> 8 -> 3 -> 6, with pauses between;
- meanwhile SIGKILLs ``--kills`` components, each at a random moment, each started
  again the way the stack starts it (`vk-fargate dev restart NAME --kill`);
- waits for the stack to settle, then counts: pods not converged (Running, or gone if
  deleted), pods Failed, bare pods missing that nobody deleted, microVMs without a
  pod, pods with two microVMs, nodes and Leases without a pod, pods with two nodes,
  pods force-deleted by the controller manager (PodGC, taint eviction), containers
  restarted, and logs not intact (the 40 lines, each once, in order).

It prints one line per round and a summary, and exits 1 if any count is not 0.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import random
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from kubernetes_asyncio import client as k8s

from vk_fargate.devcluster import state
from vk_fargate.fargate import nodes as fargate_nodes
from vk_fargate.fleet import client as fleet_api
from vk_fargate.k8s import client

NAMESPACE = "chaos"
VICTIMS = ("provider", "fleetd", "kube-apiserver")
LINES = 40
SCRIPT = f"for i in $(seq 1 {LINES}); do echo line $i; done; exec sleep 100000"
SETTLE = 300.0  # seconds a round's end may take to converge
FORCED = ("PodGC is force deleting Pod", "Deleting pod")  # the controller manager's log
T = TypeVar("T")


async def retried(call: Callable[[], Awaitable[T]], *, what: str, budget: float = 180) -> T:
    """``call()``, retried while the API server is away (it is killed on purpose)."""
    deadline = time.monotonic() + budget
    while True:
        try:
            return await call()
        except k8s.ApiException as exc:
            if exc.status not in (0, 429, 500, 502, 503, 504) or time.monotonic() > deadline:
                raise
        except (aiohttp.ClientError, OSError, TimeoutError):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: the API server stayed away") from None
        await asyncio.sleep(0.5)


async def created(call: Callable[[], Awaitable[Any]], *, what: str) -> None:
    """A create, retried; AlreadyExists means an earlier try got through."""
    try:
        await retried(call, what=what)
    except k8s.ApiException as exc:
        if exc.status != 409:
            raise


async def run_cli(state_dir: Path, *args: str) -> str:
    """`vk-fargate ARGS` on the stack in ``state_dir``; its output."""
    env = {**os.environ, "VK_FARGATE_STATE_DIR": str(state_dir)}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "vk_fargate.cli",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"vk-fargate {' '.join(args)} failed:\n{out.decode()}")
    return out.decode()


def bare_pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"chaos": "bare"}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", SCRIPT]}],
        },
    }


def deployment() -> dict[str, Any]:
    labels = {"app": "web"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [
                        {"name": "main", "image": "busybox", "command": ["sh", "-c", SCRIPT]}
                    ],
                },
            },
        },
    }


class Chaos:
    def __init__(self, state_dir: Path, api: k8s.ApiClient, seed: int) -> None:
        self.state_dir = state_dir
        self.root = state.dev_root(state_dir)
        self.core = k8s.CoreV1Api(api)
        self.apps = k8s.AppsV1Api(api)
        self.leases = k8s.CoordinationV1Api(api)
        self.random = random.Random(seed)
        self.alive: set[str] = set()  # bare pods created and not deleted by us
        self.deleted: set[str] = set()  # bare pods we deleted
        self.kills: collections.Counter[str] = collections.Counter()
        self.killing = asyncio.Lock()  # one restart at a time: each waits for health
        self.checked = ""  # what the last count looked at

    def _recorded(self) -> dict[str, Any]:
        recorded = state.load(self.root)
        assert recorded is not None
        return recorded

    async def kill_later(self, window: float) -> None:
        await asyncio.sleep(self.random.uniform(0, window))
        victim = self.random.choice(VICTIMS)
        async with self.killing:
            await run_cli(self.state_dir, "dev", "restart", victim, "--kill")
        self.kills[victim] += 1

    async def churn(self, round_no: int, pods: int) -> None:
        names = [f"bare-{round_no}-{i}" for i in range(pods)]
        for name in names:
            await created(
                lambda n=name: self.core.create_namespaced_pod(NAMESPACE, bare_pod(n)),
                what=f"create {name}",
            )
            self.alive.add(name)
            await asyncio.sleep(self.random.uniform(0, 0.5))
        for replicas in (8, 3, 6):
            await asyncio.sleep(self.random.uniform(1, 4))
            await retried(
                lambda r=replicas: self.apps.patch_namespaced_deployment_scale(
                    "web", NAMESPACE, {"spec": {"replicas": r}}
                ),
                what="scale web",
            )
        for name in self.random.sample(names, k=max(1, pods // 4)):
            await retried(
                lambda n=name: self.core.delete_namespaced_pod(n, NAMESPACE),
                what=f"delete {name}",
            )
            self.alive.discard(name)
            self.deleted.add(name)

    async def counts(self, since: dict[str, int]) -> dict[str, int]:
        """Every invariant's violations now (all 0 once the stack has settled)."""
        recorded = self._recorded()
        pods = (await retried(lambda: self.core.list_namespaced_pod(NAMESPACE), what="list")).items
        by_name = {p.metadata.name: p for p in pods}
        uids = {p.metadata.uid for p in pods}
        token = Path(recorded["fleet"]["token_file"]).read_text().strip()
        async with fleet_api.FleetClient(recorded["fleet"]["url"], token) as fleet:
            vms = (await fleet.list_microvms({"namespace": NAMESPACE})).items
        per_pod = collections.Counter(vm.id for vm in vms)
        selector = f"{fargate_nodes.CLUSTER_LABEL}=vk-fargate-dev"
        nodes = (
            await retried(lambda: self.core.list_node(label_selector=selector), what="nodes")
        ).items
        node_pods = collections.Counter(
            (n.metadata.annotations or {}).get(fargate_nodes.POD_UID_ANNOTATION) for n in nodes
        )
        # Nodes are cluster-wide: `dev up`'s CoreDNS pods (kube-system) have theirs too.
        everywhere = (
            await retried(lambda: self.core.list_pod_for_all_namespaces(), what="all pods")
        ).items
        node_uids = {p.metadata.uid for p in everywhere}
        leases = (
            await retried(
                lambda: self.leases.list_namespaced_lease("kube-node-lease"), what="leases"
            )
        ).items
        node_names = {n.metadata.name for n in nodes}
        live_node_names = {
            n.metadata.name
            for n in nodes
            if (n.metadata.annotations or {}).get(fargate_nodes.POD_UID_ANNOTATION) in node_uids
        }
        fargate_leases = [x for x in leases if x.metadata.name.startswith("fargate-ip-")]
        expected = {p.metadata.name for p in pods if p.metadata.labels.get("app") == "web"}
        web = await retried(
            lambda: self.apps.read_namespaced_deployment("web", NAMESPACE), what="web"
        )
        self.checked = f"{len(pods)} pods, {len(vms)} microVMs, {len(nodes)} nodes"
        return {
            "not converged": sum(
                1
                for p in pods
                if p.status.phase != "Running" or p.metadata.deletion_timestamp is not None
            )
            + sum(1 for name in self.deleted if name in by_name)
            + abs(len(expected) - (web.spec.replicas or 0)),
            "Failed": sum(1 for p in pods if p.status.phase == "Failed"),
            "bare pods lost": sum(1 for name in self.alive if name not in by_name),
            "microVMs without a pod": sum(1 for uid in per_pod if uid not in uids),
            "pods with 2+ microVMs": sum(1 for n in per_pod.values() if n > 1),
            "nodes without a pod": sum(1 for uid in node_pods if uid not in node_uids),
            "pods with 2+ nodes": sum(1 for n in node_pods.values() if n > 1),
            "Leases without a node": sum(
                1
                for x in fargate_leases
                if x.metadata.name not in node_names or x.metadata.name not in live_node_names
            ),
            "force-deleted by the cluster": self._forced(recorded, since),
            "containers restarted": sum(
                s.restart_count for p in pods for s in p.status.container_statuses or []
            ),
            "logs not intact": await self._bad_logs(pods),
        }

    def _forced(self, recorded: dict[str, Any], since: dict[str, int]) -> int:
        log = Path(recorded["components"]["kube-controller-manager"]["log"])
        with log.open("rb") as f:
            f.seek(since.get("kcm", 0))
            text = f.read().decode(errors="replace")
        return sum(
            1
            for line in text.splitlines()
            if NAMESPACE + "/" in line and any(mark in line for mark in FORCED)
        )

    def offsets(self) -> dict[str, int]:
        log = Path(self._recorded()["components"]["kube-controller-manager"]["log"])
        return {"kcm": log.stat().st_size if log.exists() else 0}

    async def _bad_logs(self, pods: list[Any]) -> int:
        want = [f"line {i}" for i in range(1, LINES + 1)]
        bad = 0
        for pod in pods:
            if pod.status.phase != "Running":
                continue
            try:
                text = await self.core.read_namespaced_pod_log(pod.metadata.name, NAMESPACE)
            except k8s.ApiException:
                bad += 1
                continue
            if str(text).splitlines()[:LINES] != want:
                bad += 1
        return bad

    async def settle(self, since: dict[str, int]) -> tuple[dict[str, int], float]:
        began = time.monotonic()
        while True:
            found = await self.counts(since)
            if not any(found.values()) or time.monotonic() - began > SETTLE:
                return found, time.monotonic() - began
            await asyncio.sleep(2)


async def main(args: argparse.Namespace) -> int:
    state_dir = args.state_dir or Path(tempfile.mkdtemp(prefix="vk-fargate-chaos-"))
    ours = state.load(state.dev_root(state_dir)) is None
    if ours:
        print(f"starting a dev stack in {state_dir}", flush=True)
        await run_cli(state_dir, "dev", "up")
    try:
        recorded = state.load(state.dev_root(state_dir))
        assert recorded is not None
        await run_cli(state_dir, "profile", "create", "--name", "chaos", "--namespace", NAMESPACE)
        api = await client.connect(Path(recorded["kubeconfig"]))
        try:
            return await rounds(state_dir, api, args)
        finally:
            await api.close()
    finally:
        if ours:
            await run_cli(state_dir, "dev", "down")


async def rounds(state_dir: Path, api: k8s.ApiClient, args: argparse.Namespace) -> int:
    chaos = Chaos(state_dir, api, args.seed)
    await created(
        lambda: chaos.core.create_namespace({"metadata": {"name": NAMESPACE}}), what="namespace"
    )
    await asyncio.sleep(2)  # the namespace's default ServiceAccount
    await created(
        lambda: chaos.apps.create_namespaced_deployment(NAMESPACE, deployment()), what="web"
    )
    totals: collections.Counter[str] = collections.Counter()
    print(f"seed {args.seed}; {args.rounds} rounds of {args.pods} bare pods, {args.kills} kills")
    for n in range(1, args.rounds + 1):
        since = chaos.offsets()
        began = time.monotonic()
        load = os.getloadavg()[0]
        killers = [
            asyncio.create_task(chaos.kill_later(12.0), name=f"kill-{n}-{k}")
            for k in range(args.kills)
        ]
        await chaos.churn(n, args.pods)
        await asyncio.gather(*killers)
        found, settled = await chaos.settle(since)
        totals.update(found)
        bad = {k: v for k, v in found.items() if v}
        print(
            f"round {n}: {time.monotonic() - began:5.1f}s (settled in {settled:4.1f}s), "
            f"load {load:.1f}, kills so far {dict(chaos.kills)}; checked {chaos.checked}: "
            f"{bad or 'all 0'}",
            flush=True,
        )
    print("\ncount over all rounds (each must be 0):")
    for key in found:
        print(f"  {key:<30} {totals[key]}")
    print(f"kills: {dict(chaos.kills)}; bare pods made {args.rounds * args.pods}")
    return 1 if any(totals.values()) else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--pods", type=int, default=12)
    parser.add_argument("--kills", type=int, default=3, help="components killed per round")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--state-dir", type=Path, default=None)
    sys.exit(asyncio.run(main(parser.parse_args())))
