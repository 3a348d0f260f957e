"""kubectl exec into a pod on a ``microvm`` host (a QEMU guest): the same path as on a
``process`` host up to fleetd, then the guest's agent over its virtio-serial port."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from kubernetes_asyncio import client as k8s

from tests import kubectl, waiting
from tests.provider import conftest
from vk_fargate.devcluster import cluster, processes
from vk_fargate.devcluster import fleet as devfleet
from vk_fargate.devcluster import provider as devprovider
from vk_fargate.devcluster import registry as devregistry
from vk_fargate.k8s import client

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        shutil.which("qemu-system-x86_64") is None,
        reason="qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)",
    ),
]
BOOT = 240  # seconds for a pull, a boot under TCG and the container's start, on 2 busy cores
HOSTS = [{"id": "metal-vm-a", "zone": devfleet.ZONES[0], "vcpus": 4, "mem_mib": 8192}]


@pytest.fixture
async def microvm_provider(
    own_cluster: cluster.Cluster, registry: devregistry.Registry, tmp_path: Path
) -> AsyncIterator[cluster.Cluster]:
    """A provider whose fleet runs only microvm hosts, on a control plane of its own."""
    hosts = [{**host, "runtime": "microvm"} for host in HOSTS]
    fleet = await devfleet.start(tmp_path / "fleet", hosts=hosts, registry=registry.host)
    env = devprovider.environment(
        own_cluster, fleet, port=processes.free_ports(1)[0], cluster_name="microvm"
    )
    env["VK_FARGATE_PROFILES_FILE"] = str(conftest.profiles_file(tmp_path))
    provider = devprovider.Provider(env, tmp_path / "provider.log")
    try:
        await provider.start()
        yield own_cluster
    finally:
        provider.stop()
        fleet.stop()


async def test_kubectl_exec_reaches_a_microvm_guest(microvm_provider: cluster.Cluster) -> None:
    api = await client.connect(microvm_provider.kubeconfig)
    try:
        core = k8s.CoreV1Api(api)
        ns = await conftest.namespace(api, "microvm-exec")
        pod = conftest.shell_pod("guest", "exec sleep 3600")
        # no token volume: microvm guests run no volumes yet (such pods go to process hosts)
        pod["spec"]["automountServiceAccountToken"] = False
        await core.create_namespaced_pod(ns, pod)

        async def running() -> bool:
            found = await core.read_namespaced_pod("guest", ns)
            return found.status.phase == "Running"

        await waiting.until(running, timeout=BOOT, what="the guest's pod Running")
    finally:
        await api.close()
    kubeconfig = microvm_provider.kubeconfig
    exec_ = ("-n", ns, "exec", "guest", "--")
    code, out, err = await kubectl.run_async(kubeconfig, *exec_, "cat", "/etc/hostname")
    assert (code, out, err) == (0, b"guest\n", "")
    payload = os.urandom(1 << 20)
    code, out, err = await kubectl.run_async(
        kubeconfig, "-n", ns, "exec", "-i", "guest", "--", "wc", "-c", stdin=payload, timeout=120
    )
    assert (code, out.strip()) == (0, b"1048576"), err
    code, _, err = await kubectl.run_async(kubeconfig, *exec_, "sh", "-c", "exit 3")
    assert code == 3, err
