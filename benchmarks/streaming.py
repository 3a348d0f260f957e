"""Benchmark: kubectl exec round trips and port-forward throughput into a Fargate pod,
beside the same work done against the fleet's streaming channel directly.

Usage: python benchmarks/streaming.py [--execs 100] [--mib 64]
Starts a control plane, fleetd, the provider and a registry on loopback, runs one nginx
pod, then prints:
- exec: p50/p99 of ``kubectl exec -- true`` (a new kubectl process each time: what a
  user waits for), and of ``true`` through the fleet client alone (no kubectl, no API
  server, no kubelet API);
- port-forward: MiB/s of ``curl`` fetching a file of ``--mib`` MiB from nginx through
  ``kubectl port-forward``, and through the fleet's port stream alone;
and the load average before and after, as everything shares this machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from kubernetes_asyncio import client as k8s

from vk_fargate import settings
from vk_fargate.devcluster import binaries, cluster, processes
from vk_fargate.devcluster import fleet as devfleet
from vk_fargate.devcluster import provider as devprovider
from vk_fargate.devcluster import registry as devregistry
from vk_fargate.fleet import client as fleet_client
from vk_fargate.k8s import client

NAMESPACE = "bench"
STDIN, STDOUT, ERROR, CLOSE = 0, 1, 3, 255


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def kubectl(kubeconfig: Path, *args: str) -> bytes:
    process = await asyncio.create_subprocess_exec(
        str(binaries.kubectl_path()), "--kubeconfig", str(kubeconfig), "-n", NAMESPACE, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {err.decode()}")
    return out


async def kubectl_execs(kubeconfig: Path, count: int) -> list[float]:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        await kubectl(kubeconfig, "exec", "web", "--", "true")
        times.append(time.perf_counter() - start)
    return times


async def fleet_execs(fleet: fleet_client.FleetClient, uid: str, count: int) -> list[float]:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        stream = await fleet.open_exec(uid, "web", ["true"], stdin=False, tty=False)
        try:
            while (message := await stream.receive()) is not None and message[0] != ERROR:
                pass
        finally:
            await stream.close()
        times.append(time.perf_counter() - start)
    return times


async def curl_mib_per_s(port: int, mib: int) -> float:
    start = time.perf_counter()
    curl = await asyncio.create_subprocess_exec(
        "curl", "-sS", "-o", "/dev/null", "-w", "%{size_download}",
        f"http://127.0.0.1:{port}/big.bin",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await curl.communicate()
    seconds = time.perf_counter() - start
    if int(float(out)) != mib << 20:
        raise RuntimeError(f"curl fetched {out!r} bytes, not {mib << 20}")
    return mib / seconds


async def port_forward_mib_per_s(kubeconfig: Path, mib: int, rounds: int) -> list[float]:
    port = processes.free_ports(1)[0]
    forward = await asyncio.create_subprocess_exec(
        str(binaries.kubectl_path()), "--kubeconfig", str(kubeconfig), "-n", NAMESPACE,
        "port-forward", "pod/web", f"{port}:80",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert forward.stdout is not None
        await asyncio.wait_for(forward.stdout.readline(), 60)
        return [await curl_mib_per_s(port, mib) for _ in range(rounds)]
    finally:
        forward.terminate()
        await forward.wait()


async def fleet_port_mib_per_s(
    fleet: fleet_client.FleetClient, uid: str, mib: int, rounds: int
) -> list[float]:
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        stream = await fleet.open_port(uid, 80)
        received = 0
        try:
            await stream.send(bytes((STDIN,)) + b"GET /big.bin HTTP/1.0\r\nHost: web\r\n\r\n")
            while (message := await stream.receive()) is not None:
                if message[0] == STDOUT:
                    received += len(message) - 1
                elif message[0] in (ERROR, CLOSE):
                    break
        finally:
            await stream.close()
        if received < mib << 20:
            raise RuntimeError(f"the port stream carried {received} bytes, not {mib << 20}+")
        rates.append(mib / (time.perf_counter() - start))
    return rates


async def main(execs: int, mib: int, registry_host: str) -> None:
    bins = binaries.locate(settings.load())
    root = Path(tempfile.mkdtemp(prefix="vk-fargate-bench-"))
    async with cluster.Cluster(bins) as local:
        fleet = await devfleet.start(root / "fleet", registry=registry_host)
        env = devprovider.environment(
            local, fleet, port=processes.free_ports(1)[0], cluster_name="bench"
        )
        env["VK_FARGATE_PROFILES_FILE"] = str(devprovider.profiles_file(root, NAMESPACE))
        provider = devprovider.Provider(env, root / "provider.log")
        await provider.start()
        api = await client.connect(local.kubeconfig)
        direct = fleet_client.FleetClient(fleet.url, fleet.token)
        try:
            core = k8s.CoreV1Api(api)
            await core.create_namespace({"metadata": {"name": NAMESPACE}})
            while not (await core.list_namespaced_service_account(NAMESPACE)).items:
                await asyncio.sleep(0.2)
            pod = {
                "metadata": {"name": "web"},
                "spec": {"containers": [{"name": "web", "image": "nginx"}]},
            }
            await core.create_namespaced_pod(NAMESPACE, pod)
            while (await core.read_namespaced_pod("web", NAMESPACE)).status.phase != "Running":
                await asyncio.sleep(0.2)
            uid = (await core.read_namespaced_pod("web", NAMESPACE)).metadata.uid
            await kubectl(
                local.kubeconfig, "exec", "web", "--",
                "dd", "if=/dev/urandom", "of=/usr/share/nginx/html/big.bin", "bs=1M",
                f"count={mib}",
            )  # fmt: skip
            load_before = os.getloadavg()
            through_kubectl = await kubectl_execs(local.kubeconfig, execs)
            through_fleet = await fleet_execs(direct, uid, execs)
            forwarded = await port_forward_mib_per_s(local.kubeconfig, mib, 3)
            fleet_port = await fleet_port_mib_per_s(direct, uid, mib, 3)
            load_after = os.getloadavg()
        finally:
            await direct.close()
            await api.close()
            provider.stop()
            fleet.stop()
    ms = 1000.0
    kp50, fp50 = statistics.median(through_kubectl), statistics.median(through_fleet)
    print(f"exec round trip, {execs} x true   p50      p99")
    kp99, fp99 = percentile(through_kubectl, 0.99), percentile(through_fleet, 0.99)
    print(f"  kubectl exec (whole CLI)   {kp50 * ms:6.0f} ms {kp99 * ms:6.0f} ms")
    print(f"  fleet client directly      {fp50 * ms:6.0f} ms {fp99 * ms:6.0f} ms")
    print(f"  ratio (kubectl / fleet)    {kp50 / fp50:6.1f}x")
    kmib, fmib = statistics.median(forwarded), statistics.median(fleet_port)
    print(f"port stream, {mib} MiB from nginx (median of 3)")
    print(f"  kubectl port-forward + curl {kmib:7.1f} MiB/s  {[round(r, 1) for r in forwarded]}")
    print(f"  fleet port stream directly  {fmib:7.1f} MiB/s  {[round(r, 1) for r in fleet_port]}")
    print(f"  ratio (port-forward / fleet) {kmib / fmib:6.2f}")
    print(f"load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f}")


async def with_registry(execs: int, mib: int) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        registry = await devregistry.start_filled(Path(scratch), settings.load().cache)
        try:
            await main(execs, mib, registry.host)
        finally:
            registry.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--execs", type=int, default=100)
    parser.add_argument("--mib", type=int, default=64)
    arguments = parser.parse_args()
    asyncio.run(with_registry(arguments.execs, arguments.mib))
