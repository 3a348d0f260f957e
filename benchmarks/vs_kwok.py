"""Benchmark: vk-fargate against KWOK on one control plane, as a user sees them.

Usage: python benchmarks/vs_kwok.py [--bursts 100,300] [--rates 5,10,20]
                                    [--steady-seconds 60] [--rest-seconds 60]
                                    [--fleet-nice 19]

Why: KWOK (sigs.k8s.io/kwok) fakes nodes and pods with nothing behind them, so it is
the floor of what giving a cluster nodes costs: what the API server, etcd and the
scheduler take. vk-fargate runs every pod for real (a microVM per pod from fleetd, runc
containers, one Node per pod). The ratios vk-fargate/KWOK say what that costs on top of
the floor, with both served by the same control plane on the same machine.

How: builds kwok once (``go install``, cached beside the control-plane binaries) and
starts one control plane, a registry of the local images, fleetd with big hosts and the
provider (its profile selects namespace ``vk``), and kwok, which manages the nodes
labelled ``type=kwok``. The kwok controller ships no behaviour of its own: it is given
the Stages kwokctl gives it by default (read from the kwok module's ``kustomize/stage/``:
nodes Ready at once with a Lease renewed every 10 s, as vk-fargate's; pods Running at
once and removed once deleted). KWOK's pods are bare pods of namespace ``kwok`` for the
kube-scheduler (vk-fargate's nodes are tainted NoSchedule, so never candidates).
Every number is what a watch on the API server shows (``kubectl get -w``): a create is
timed from the moment it is sent to the moment the watch shows the pod Running, a delete
until the watch shows it gone. The work runs interleaved, vk-fargate then KWOK, per size:

- a burst of N bare pods, 20 creates in flight: first create to all Running, and p50/p99
  of create->Running; KWOK twice, with N nodes made (and Ready) first, and with a node
  per pod created together with its pod (the pod selects it by hostname), as vk-fargate
  makes one node per pod;
- deleting that burst's pods: until all are gone (vk-fargate: and their nodes; KWOK,
  node per pod: the benchmark deletes each node once its pod is gone);
- after the largest burst, writes to the API server at rest (``apiserver_request_total``
  of write verbs over ``--rest-seconds``, 10 s after the burst, per node per minute; a
  first window with no nodes shows what the control plane writes alone; the provider's
  own metrics say which of vk-fargate's it sent itself) and the
  provider's and kwok's RSS per pod (before the burst and after the rest window; KWOK's
  includes making its N nodes);
- steady rates of R pods/s for D seconds: create->Running p50/p99 (KWOK on a pool of
  as many nodes as the largest burst, made first);
- with each burst and rate: the create call's p99 as the client sees it, and the
  admission webhook's p50/p99 as the API server measures it (its histogram
  ``apiserver_admission_webhook_admission_duration_seconds``, interpolated within its
  buckets, which bound at 5, 25, 100 and 500 ms). vk-fargate's webhook sees KWOK's pods
  too (every namespace but the system ones), so it counts on both sides.

The benchmark's own client is raw HTTP with JSON (no model classes to build): the same
cores run both sides, and it should take as little of them as it can. Nothing is
asserted; a run that does not finish within ``--timeout`` is reported with what it got.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import procstat  # benchmarks/procstat.py, beside this script

from vk_fargate import settings
from vk_fargate.devcluster import binaries, cluster, components, processes
from vk_fargate.devcluster import fleet as devfleet
from vk_fargate.devcluster import provider as devprovider

KWOK_VERSION = "v0.8.0"
KWOK_MODULE = "sigs.k8s.io/kwok"
# What kwokctl gives its kwok controller when it is given no Stages (its default).
STAGES = (
    "node/fast/node-initialize.yaml",
    "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "pod/fast/pod-ready.yaml",
    "pod/fast/pod-complete.yaml",
    "pod/fast/pod-delete.yaml",
)
LEASE_SECONDS = 40  # kwokctl's default: renewed every 10 s, like vk-fargate's node Leases
VK, KWOK = "vk", "kwok"  # the namespaces of each side's pods
CLUSTER_NAME = "vs-kwok"  # vk-fargate labels its nodes vk-fargate.io/cluster=<this>
IN_FLIGHT = 20  # creates and deletes of a burst in flight at once
WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "DELETE", "DELETECOLLECTION", "APPLY"})
# Seconds between a burst's end (or the namespaces' creation) and a rest window: events
# about the burst are written by rate-limited recorders, after it; a new namespace gets
# its ServiceAccount and ConfigMap.
SETTLE_SECONDS = 10.0
WEBHOOK_HISTOGRAM = "apiserver_admission_webhook_admission_duration_seconds_bucket"
LABEL = re.compile(r'(\w+)="([^"]*)"')


def kwok_binary(cache: Path) -> Path:
    """kwok, built with ``go install`` the first time."""
    path = cache / "kwok" / KWOK_VERSION / "kwok"
    if not path.exists():
        print(f"building kwok {KWOK_VERSION} into {path.parent} ...", flush=True)
        env = {**os.environ, "GOBIN": str(path.parent)}
        subprocess.run(
            ["go", "install", f"{KWOK_MODULE}/cmd/kwok@{KWOK_VERSION}"], env=env, check=True
        )
    return path


def kwok_config(directory: Path) -> Path:
    """kwokctl's default Stages, from the kwok module (in Go's module cache once built)."""
    found = subprocess.run(
        ["go", "mod", "download", "-json", f"{KWOK_MODULE}@{KWOK_VERSION}"],
        cwd=directory,
        capture_output=True,
        text=True,
        check=True,
    )
    stages = Path(json.loads(found.stdout)["Dir"]) / "kustomize" / "stage"
    path = directory / "kwok.yaml"
    path.write_text("---\n".join((stages / name).read_text() for name in STAGES))
    return path


async def start_kwok(binary: Path, local: cluster.Cluster, root: Path) -> Any:
    port = processes.free_ports(1)[0]
    command = components.Command(
        "kwok",
        (
            str(binary),
            "--kubeconfig",
            str(local.kubeconfig),
            "--config",
            str(kwok_config(root)),
            "--manage-nodes-with-label-selector=type=kwok",
            f"--node-lease-duration-seconds={LEASE_SECONDS}",
            "--server-address",
            f"127.0.0.1:{port}",
        ),
        f"http://127.0.0.1:{port}/healthz",
        root / "kwok.log",
    )
    process = processes.spawn(command, detach=False)
    try:
        await processes.wait_healthy(process, command, ssl_context=False, timeout=60)
    except BaseException:
        processes.stop(process.pid, grace=5, child=process)
        raise
    return process


class Api:
    """The API server over plain HTTP (admin certificate), JSON in and out."""

    def __init__(self, local: cluster.Cluster) -> None:
        self.server = local.server
        tls = cluster.health_ssl(local.layout, "kube-apiserver")
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls, limit=0))
        self.gate = asyncio.Semaphore(IN_FLIGHT)

    async def send(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        gated: bool = True,
        took: list[float] | None = None,
    ) -> float:
        """Send one request; the moment it was sent (and how long the call took, into
        ``took``). A DELETE of something gone is fine."""
        async with self.gate if gated else contextlib.nullcontext():
            sent = time.monotonic()
            async with self.http.request(method, self.server + path, json=body) as response:
                text = await response.text()
            if took is not None:
                took.append(time.monotonic() - sent)
        if response.status >= 300 and not (method == "DELETE" and response.status == 404):
            raise RuntimeError(f"{method} {path}: {response.status} {text[:300]}")
        return sent

    async def get(self, path: str, **params: str) -> Any:
        async with self.http.get(self.server + path, params=params) as response:
            response.raise_for_status()
            return json.loads(await response.read())

    async def writes(self) -> Counter[str]:
        """Write requests the API server has served so far, by resource."""
        counts: Counter[str] = Counter()
        async for labels, value in self._samples(
            self.server + "/metrics", "apiserver_request_total"
        ):
            if labels.get("verb") in WRITE_VERBS:
                resource = labels.get("resource", "")
                if labels.get("subresource"):
                    resource += "/" + labels["subresource"]
                counts[resource] += int(value)
        return counts

    async def own_writes(self, metrics_url: str) -> Counter[str]:
        """Write requests the provider has sent so far, by resource (its own metrics)."""
        counts: Counter[str] = Counter()
        async for labels, value in self._samples(metrics_url, "vkfargate_kube_requests_total"):
            if labels.get("verb") in WRITE_VERBS:
                counts[labels.get("resource", "")] += int(value)
        return counts

    async def _samples(self, url: str, metric: str) -> AsyncIterator[tuple[dict[str, str], float]]:
        """Each sample of ``metric`` that ``url`` (Prometheus text) has: labels, value."""
        async with self.http.get(url) as response:
            response.raise_for_status()
            text = await response.text()
        for line in text.splitlines():
            if line.startswith(metric + "{"):
                yield dict(LABEL.findall(line.split("}", 1)[0])), float(line.rsplit(" ", 1)[1])

    async def admission(self) -> dict[float, float]:
        """The API server's admission-webhook histogram for pod creates, summed over
        webhooks: cumulative count at each bucket's upper bound (seconds)."""
        async with self.http.get(self.server + "/metrics") as response:
            response.raise_for_status()
            text = await response.text()
        buckets: dict[float, float] = {}
        for line in text.splitlines():
            if not line.startswith(WEBHOOK_HISTOGRAM + "{"):
                continue
            labels = dict(LABEL.findall(line.split("}", 1)[0]))
            if labels.get("operation") != "CREATE" or labels.get("type") != "admit":
                continue
            bound = float(labels["le"]) if labels["le"] != "+Inf" else float("inf")
            buckets[bound] = buckets.get(bound, 0.0) + float(line.rsplit(" ", 1)[1])
        return buckets


def histogram_quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """Prometheus's histogram_quantile over the calls between two scrapes, in ms (linear
    within a bucket; a quantile in the +Inf bucket is the largest finite bound)."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return float("nan")
    rank, lower, below = q * counts[-1], 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= rank:
            if bound == float("inf"):
                return lower * 1000
            inside = count - below
            return (lower + (bound - lower) * ((rank - below) / inside if inside else 1)) * 1000
        lower, below = bound, count
    return lower * 1000


def running(pod: dict[str, Any]) -> bool:
    return bool(pod.get("status", {}).get("phase") == "Running")


def node_ready(node: dict[str, Any]) -> bool:
    conditions = node.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


class Seen:
    """What a watch on a collection showed: when each object (by name) was first ready
    (pods: Running; nodes: Ready) and when it was gone. Every name is used once."""

    def __init__(self, api: Api, path: str, ready: Callable[[dict[str, Any]], bool], **params: str):
        self.api, self.path, self.ready, self.params = api, path, ready, params
        self.ready_at: dict[str, float] = {}
        self.gone_at: dict[str, float] = {}
        self.present: set[str] = set()

    def _saw(self, item: dict[str, Any], now: float) -> None:
        name = item["metadata"]["name"]
        self.present.add(name)
        if name not in self.ready_at and self.ready(item):
            self.ready_at[name] = now

    def _gone(self, name: str, now: float) -> None:
        self.present.discard(name)
        self.gone_at.setdefault(name, now)

    async def follow(self) -> None:
        """List, then watch from there; list again when the watch ends or fails."""
        while True:
            try:
                await self._watch(await self._list())
            except (aiohttp.ClientError, ValueError):  # the API server is busy: again
                await asyncio.sleep(0.5)

    async def _list(self) -> str:
        listed = await self.api.get(self.path, **self.params)
        now = time.monotonic()
        names = {item["metadata"]["name"] for item in listed["items"]}
        for name in self.present - names:
            self._gone(name, now)
        for item in listed["items"]:
            self._saw(item, now)
        return str(listed["metadata"]["resourceVersion"])

    async def _watch(self, version: str) -> None:
        params = {
            **self.params,
            "watch": "1",
            "allowWatchBookmarks": "true",
            "resourceVersion": version,
            "timeoutSeconds": "600",
        }
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        url = self.api.server + self.path
        async with self.api.http.get(url, params=params, timeout=timeout) as response:
            response.raise_for_status()
            async for line in response.content:
                event = json.loads(line)
                kind, item = event["type"], event["object"]
                if kind == "ERROR":  # too old a version: list again
                    return
                if kind == "DELETED":
                    self._gone(item["metadata"]["name"], time.monotonic())
                elif kind != "BOOKMARK":
                    self._saw(item, time.monotonic())


async def until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def pod(name: str, node: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "app", "image": "busybox", "command": ["sleep", "3600"]}],
    }
    if node is not None:
        spec["nodeSelector"] = {"kubernetes.io/hostname": node}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def node(name: str) -> dict[str, Any]:
    labels = {"type": "kwok", "kubernetes.io/hostname": name}
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else float("nan")


@dataclasses.dataclass
class Run:
    """One side's run of one work item."""

    load: float  # 1-minute load average when it began
    values: dict[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Row:
    label: str
    unit: str
    key: str
    vk: Run
    kwok: Run


class Bench:
    def __init__(self, api: Api, timeout: float) -> None:
        self.api, self.timeout = api, timeout
        self.pods = {ns: Seen(api, f"/api/v1/namespaces/{ns}/pods", running) for ns in (VK, KWOK)}
        self.vk_nodes = Seen(
            api, "/api/v1/nodes", node_ready, labelSelector=f"vk-fargate.io/cluster={CLUSTER_NAME}"
        )
        self.kwok_nodes = Seen(api, "/api/v1/nodes", node_ready, labelSelector="type=kwok")
        self.rows: list[Row] = []
        self.notes: list[str] = []

    def watches(self) -> list[Seen]:
        return [*self.pods.values(), self.vk_nodes, self.kwok_nodes]

    async def _wait(self, what: str, condition: Callable[[], bool]) -> None:
        if not await until(condition, self.timeout):
            self.notes.append(f"{what}: not done after {self.timeout:.0f}s, counted as it was")

    async def make_nodes(self, names: list[str]) -> None:
        """KWOK nodes, made and Ready before the run that uses them (not timed)."""
        await asyncio.gather(*(self.api.send("POST", "/api/v1/nodes", node(n)) for n in names))
        await self._wait(
            "kwok nodes Ready", lambda: all(n in self.kwok_nodes.ready_at for n in names)
        )

    async def remove_nodes(self, names: list[str]) -> None:
        await asyncio.gather(*(self.api.send("DELETE", f"/api/v1/nodes/{n}") for n in names))
        await self._wait("kwok nodes gone", lambda: not set(names) & self.kwok_nodes.present)

    async def create(
        self, ns: str, names: list[str], *, rate: float | None = None, own_nodes: bool = False
    ) -> Run:
        """Create pods (``rate`` per second, else all at once ``IN_FLIGHT`` at a time) and
        wait until the watch shows them all Running: the time from the first create to
        the last Running, and each pod's create->Running p50/p99."""
        run = Run(os.getloadavg()[0])
        seen, sent = self.pods[ns], {}
        calls: list[float] = []
        webhook_before = await self.api.admission()

        async def one(name: str) -> None:
            if own_nodes:  # timed from the node's create: the pod needs it
                sent[name] = await self.api.send("POST", "/api/v1/nodes", node(f"{name}-node"))
                await self.api.send(
                    "POST", f"/api/v1/namespaces/{ns}/pods", pod(name, f"{name}-node"), took=calls
                )
            else:
                sent[name] = await self.api.send(
                    "POST",
                    f"/api/v1/namespaces/{ns}/pods",
                    pod(name),
                    gated=rate is None,
                    took=calls,
                )

        tasks = []
        began = time.monotonic()
        for i, name in enumerate(names):
            if rate is not None:
                await asyncio.sleep(max(0.0, began + i / rate - time.monotonic()))
            tasks.append(asyncio.create_task(one(name)))
        await asyncio.gather(*tasks)
        await self._wait(
            f"{ns} {names[0]}..: Running", lambda: all(n in seen.ready_at for n in names)
        )
        latencies = [seen.ready_at[n] - sent[n] for n in names if n in seen.ready_at]
        last = max((seen.ready_at[n] for n in names if n in seen.ready_at), default=began)
        run.values = {
            "all": last - min(sent.values()),
            "p50": quantile(latencies, 0.5) * 1000,
            "p99": quantile(latencies, 0.99) * 1000,
            "create_p99": quantile(calls, 0.99) * 1000,
        }
        # vk-fargate's webhook sees every new pod outside its excluded namespaces, KWOK's
        # too: it must say quickly that a profile does not select them.
        webhook_after = await self.api.admission()
        run.values["webhook_p50"] = histogram_quantile(webhook_before, webhook_after, 0.5)
        run.values["webhook_p99"] = histogram_quantile(webhook_before, webhook_after, 0.99)
        return run

    async def delete(self, ns: str, names: list[str], *, own_nodes: bool = False) -> Run:
        """Delete the pods; the time until the watch shows them all gone, and (vk-fargate,
        or KWOK with a node per pod) until their nodes are gone too."""
        run = Run(os.getloadavg()[0])
        seen = self.pods[ns]

        async def one(name: str) -> float:
            sent = await self.api.send("DELETE", f"/api/v1/namespaces/{ns}/pods/{name}")
            if own_nodes:
                await until(lambda: name in seen.gone_at, self.timeout)
                await self.api.send("DELETE", f"/api/v1/nodes/{name}-node")
            return sent

        first = min(await asyncio.gather(*(one(n) for n in names)))
        await self._wait(f"{ns} {names[0]}..: gone", lambda: not set(names) & seen.present)
        run.values["pods"] = max(seen.gone_at.get(n, time.monotonic()) for n in names) - first
        if ns == VK:
            await self._wait("vk-fargate nodes gone", lambda: not self.vk_nodes.present)
            gone = [t for t in self.vk_nodes.gone_at.values() if t >= first]
            run.values["nodes"] = max(gone, default=time.monotonic()) - first
        elif own_nodes:
            nodes = {f"{n}-node" for n in names}
            await self._wait("kwok nodes gone", lambda: not nodes & self.kwok_nodes.present)
            gone = [self.kwok_nodes.gone_at.get(n, time.monotonic()) for n in nodes]
            run.values["nodes"] = max(gone) - first
        return run

    async def at_rest(
        self, seconds: float, *, settle: float = 0.0, own: str | None = None
    ) -> tuple[Counter[str], Counter[str]]:
        """Writes the API server served in a window of ``seconds`` with nothing changing,
        after ``settle`` seconds for the events of what came before to be written; and
        of them, those the provider at metrics URL ``own`` sent (empty without it)."""
        await asyncio.sleep(settle)
        before = await self.api.writes()
        own_before = await self.api.own_writes(own) if own else Counter[str]()
        await asyncio.sleep(seconds)
        after = await self.api.writes()
        own_after = await self.api.own_writes(own) if own else Counter[str]()
        after.subtract(before)
        own_after.subtract(own_before)
        return +after, +own_after

    def add(self, label: str, unit: str, key: str, vk: Run, kwok: Run) -> None:
        self.rows.append(Row(label, unit, key, vk, kwok))


async def bench(
    b: Bench,
    bursts: list[int],
    rates: list[float],
    steady_seconds: float,
    rest_seconds: float,
    pids: dict[str, int],
    provider_metrics: str,
) -> None:
    print(f"rest window with no nodes ({rest_seconds:.0f}s) ...", flush=True)
    base, _ = await b.at_rest(rest_seconds, settle=SETTLE_SECONDS)
    b.notes.append(
        f"writes at rest with no nodes (counted in the rows, not subtracted): "
        f"{sum(base.values()) / rest_seconds * 60:.0f}/min "
        f"({', '.join(f'{r} {n}' for r, n in base.most_common(4))} in {rest_seconds:.0f}s)"
    )

    def per_node_minute(writes: Counter[str], nodes: int) -> float:
        return sum(writes.values()) / nodes / (rest_seconds / 60)

    largest = max(bursts)
    for n in sorted(bursts):
        print(f"burst {n} ...", flush=True)
        names = [f"b{n}-{i}" for i in range(n)]
        rss_vk = procstat.status_kib(pids["vk"], "VmRSS")
        vk = await b.create(VK, [f"vk-{x}" for x in names])
        if n == largest:
            vk_rest_load = os.getloadavg()[0]
            vk_rest, vk_own = await b.at_rest(
                rest_seconds, settle=SETTLE_SECONDS, own=provider_metrics
            )
            vk_rss = (procstat.status_kib(pids["vk"], "VmRSS") - rss_vk) / n
            rss = f"RSS before -> after burst {n}: provider {rss_vk / 1024:.0f} -> "
            rss += f"{rss_vk / 1024 + vk_rss * n / 1024:.0f} MiB"
            nodes_vk = len(b.vk_nodes.present)
        vk_del = await b.delete(VK, [f"vk-{x}" for x in names])

        pool = [f"b{n}-pool-{i}" for i in range(n)]
        rss_kwok = procstat.status_kib(pids["kwok"], "VmRSS")
        await b.make_nodes(pool)
        first = await b.create(KWOK, [f"first-{x}" for x in names])
        if n == largest:
            kwok_rest_load = os.getloadavg()[0]
            kwok_rest, _ = await b.at_rest(rest_seconds, settle=SETTLE_SECONDS)
            kwok_rss = (procstat.status_kib(pids["kwok"], "VmRSS") - rss_kwok) / n
            rss += f", kwok {rss_kwok / 1024:.0f} -> {rss_kwok / 1024 + kwok_rss * n / 1024:.0f}"
            b.notes.append(rss + " MiB (a heap grown by an earlier burst may not grow again)")
        first_del = await b.delete(KWOK, [f"first-{x}" for x in names])
        await b.remove_nodes(pool)

        own = await b.create(KWOK, [f"own-{x}" for x in names], own_nodes=True)
        own_del = await b.delete(KWOK, [f"own-{x}" for x in names], own_nodes=True)

        for kwok, how in ((first, "nodes first"), (own, "node per pod")):
            b.add(f"burst {n}: all Running ({how})", "s", "all", vk, kwok)
            b.add(f"burst {n}: create->Running p50 ({how})", "ms", "p50", vk, kwok)
            b.add(f"burst {n}: create->Running p99 ({how})", "ms", "p99", vk, kwok)
        b.add(f"burst {n}: create call p99 (nodes first)", "ms", "create_p99", vk, first)
        b.add(f"burst {n}: admission webhook p50 (nodes first)", "ms", "webhook_p50", vk, first)
        b.add(f"burst {n}: admission webhook p99 (nodes first)", "ms", "webhook_p99", vk, first)
        b.add(f"delete {n}: pods gone (nodes first)", "s", "pods", vk_del, first_del)
        b.add(f"delete {n}: pods gone (node per pod)", "s", "pods", vk_del, own_del)
        b.add(f"delete {n}: pods and nodes gone (node per pod)", "s", "nodes", vk_del, own_del)

    b.add(
        f"writes at rest per node per minute ({largest} pods)",
        "",
        "writes",
        Run(vk_rest_load, {"writes": per_node_minute(vk_rest, nodes_vk)}),
        Run(kwok_rest_load, {"writes": per_node_minute(kwok_rest, largest)}),
    )
    for side, writes in (("vk-fargate", vk_rest), ("KWOK", kwok_rest)):
        top = ", ".join(f"{r} {c}" for r, c in writes.most_common(4))
        b.notes.append(f"writes at rest, {side}: {top} in {rest_seconds:.0f}s")
    top = ", ".join(f"{r} {c}" for r, c in vk_own.most_common(4))
    b.notes.append(
        f"writes at rest, vk-fargate's provider itself: {top} in {rest_seconds:.0f}s, "
        f"{per_node_minute(vk_own, nodes_vk):.2f} per node per minute (the rest are the "
        "control plane's)"
    )
    b.add(
        f"RSS per pod ({largest} pods, provider / kwok)",
        "KiB",
        "rss",
        Run(vk.load, {"rss": vk_rss}),
        Run(first.load, {"rss": kwok_rss}),
    )

    pool = [f"steady-pool-{i}" for i in range(largest)]
    await b.make_nodes(pool)
    for rate in rates:
        print(f"steady {rate:g}/s for {steady_seconds:.0f}s ...", flush=True)
        count = max(1, round(rate * steady_seconds))
        names = [f"r{rate:g}-{i}".replace(".", "p") for i in range(count)]
        runs = []
        for ns in (VK, KWOK):
            runs.append(await b.create(ns, [f"{ns}-{x}" for x in names], rate=rate))
            await b.delete(ns, [f"{ns}-{x}" for x in names])
        b.add(f"steady {rate:g}/s: create->Running p50", "ms", "p50", *runs)
        b.add(f"steady {rate:g}/s: create->Running p99", "ms", "p99", *runs)
        b.add(f"steady {rate:g}/s: admission webhook p99", "ms", "webhook_p99", *runs)
    await b.remove_nodes(pool)


def table(b: Bench) -> str:
    lines = [
        f"{'work':<54} {'vk-fargate':>11} {'KWOK':>9} {'ratio':>7}   load1 vk/KWOK",
    ]
    for row in b.rows:
        vk, kwok = row.vk.values.get(row.key), row.kwok.values.get(row.key)
        if vk is None or kwok is None:
            continue
        ratio = f"{vk / kwok:.1f}x" if kwok > 0 else "-"
        label = f"{row.label} ({row.unit})" if row.unit else row.label
        lines.append(
            f"{label:<54} {vk:>11.2f} {kwok:>9.2f} {ratio:>7}   "
            f"{row.vk.load:.2f}/{row.kwok.load:.2f}"
        )
    return "\n".join(lines + [f"note: {note}" for note in b.notes])


def machine() -> str:
    one, five, fifteen = os.getloadavg()
    return (
        f"machine: {os.cpu_count()} cores, load average {one:.2f} {five:.2f} {fifteen:.2f}; "
        "what else ran: (fill in)"
    )


async def main(arguments: argparse.Namespace) -> None:
    cfg = settings.load()
    bins = binaries.locate(cfg)
    kwok = kwok_binary(cfg.cache)
    print(machine(), flush=True)
    root = Path(tempfile.mkdtemp(prefix="vk-fargate-vs-kwok-"))
    hosts = [
        {"id": f"metal-{z[-1]}", "zone": z, "vcpus": 256, "mem_mib": 1 << 20}
        for z in devfleet.ZONES
    ]
    # Three /24s per zone: room for 1500 pods at once (a steady 20/s for 60 s is 1200).
    subnets = [
        {"id": f"subnet-bench-{n}", "cidr": str(net), "zone": devfleet.ZONES[n % 2]}
        for n, net in enumerate(devfleet.free_subnets(6))
    ]
    b: Bench | None = None
    try:
        async with (
            cluster.Cluster(bins) as local,
            devfleet.with_images(root, cfg.cache, hosts=hosts, subnets=subnets) as fleet,
        ):
            if arguments.fleet_nice:
                # Children inherit it: every shim and container started from now on.
                os.setpriority(os.PRIO_PROCESS, fleet.process.pid, arguments.fleet_nice)
                print(f"fleetd and its pods at nice {arguments.fleet_nice}", flush=True)
            port = processes.free_ports(1)[0]
            env = devprovider.environment(local, fleet, port=port, cluster_name=CLUSTER_NAME)
            env["VK_FARGATE_PROFILES_FILE"] = str(devprovider.profiles_file(root, VK))
            provider = devprovider.Provider(env, root / "provider.log")
            kwok_process = None
            api = Api(local)
            try:
                await provider.start()
                assert provider.process is not None
                kwok_process = await start_kwok(kwok, local, root)
                b = Bench(api, arguments.timeout)
                for ns in (VK, KWOK):
                    await api.send("POST", "/api/v1/namespaces", {"metadata": {"name": ns}})
                    while not (await api.get(f"/api/v1/namespaces/{ns}/serviceaccounts"))["items"]:
                        await asyncio.sleep(0.2)
                watches = [asyncio.create_task(seen.follow()) for seen in b.watches()]
                try:
                    await bench(
                        b,
                        arguments.bursts,
                        arguments.rates,
                        arguments.steady_seconds,
                        arguments.rest_seconds,
                        {"vk": provider.process.pid, "kwok": kwok_process.pid},
                        f"http://127.0.0.1:{env['VK_FARGATE_METRICS_PORT']}/metrics",
                    )
                finally:
                    for task in watches:
                        task.cancel()
                    await asyncio.gather(*watches, return_exceptions=True)
            finally:
                await api.http.close()
                if kwok_process is not None:
                    processes.stop(kwok_process.pid, grace=5, child=kwok_process)
                provider.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
        if b is not None:
            print(machine())
            print(table(b))


async def interruptible(arguments: argparse.Namespace) -> None:
    """``main``, cancelled by SIGTERM as by Ctrl-C: everything is stopped and removed."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    await main(arguments)


def numbers(kind: type) -> Callable[[str], list[Any]]:
    return lambda text: [kind(x) for x in text.split(",") if x]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bursts", type=numbers(int), default=[100, 300])
    parser.add_argument("--rates", type=numbers(float), default=[5.0, 10.0, 20.0])
    parser.add_argument("--steady-seconds", type=float, default=60.0)
    parser.add_argument("--rest-seconds", type=float, default=60.0)
    parser.add_argument(
        "--fleet-nice",
        type=int,
        default=0,
        help="run fleetd, its shims and containers at this nice level (19: as if the pods "
        "ran on other machines, the control side getting the CPU first)",
    )
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="seconds a run may take before it is cut"
    )
    try:
        asyncio.run(interruptible(parser.parse_args()))
    except KeyboardInterrupt:
        sys.exit(128 + signal.SIGINT)
    except asyncio.CancelledError:
        sys.exit(128 + signal.SIGTERM)
