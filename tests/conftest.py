"""Shared fixtures: the control-plane binaries and one real cluster per test session.

e2e tests need etcd, kube-apiserver, kube-controller-manager and kube-scheduler built
from hack/controlplane, and CoreDNS from hack/coredns (`vk-fargate dev up` deploys it;
the registry holds its image). When they are missing they are built (Go needed); where
Go is missing the e2e tests are skipped with that reason, unless
VK_FARGATE_REQUIRE_E2E=1 (as in CI), where a missing binary fails the run instead of
hiding it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from vk_fargate import errors, settings
from vk_fargate.devcluster import binaries, cluster, coredns, images
from vk_fargate.devcluster import fleet as devfleet
from vk_fargate.devcluster import registry as devregistry
from vk_fargate.fleet import client as fleet_api
from vk_fargate.k8s import client


def _required() -> bool:
    return os.environ.get("VK_FARGATE_REQUIRE_E2E") == "1"


@pytest.fixture(scope="session")
def coredns_binary() -> Path | None:
    """CoreDNS's binary, built once per machine (None where it cannot be built, unless
    required: tests that need it skip themselves then)."""
    config = settings.load()
    try:
        if coredns.binary(config.cache) is None and binaries.go_available():
            coredns.build(config, log=config.cache / "logs" / coredns.LOG_NAME)
    except errors.BinariesError:
        if _required():
            raise
    found = coredns.binary(config.cache)
    if found is None and _required():
        raise errors.BinariesError("find CoreDNS", "not built, and Go is not installed")
    return found


@pytest.fixture(scope="session")
def control_plane_binaries(coredns_binary: Path | None) -> binaries.Binaries:
    config = settings.load()
    try:
        if binaries.missing(binaries.default_dir(config)) and binaries.go_available():
            binaries.build(config, log=config.cache / "logs" / "controlplane-build.log")
        return binaries.locate(config)
    except errors.BinariesError as exc:
        if _required():
            raise
        pytest.skip(f"e2e needs the control-plane binaries: {exc}")


@pytest.fixture(scope="session")
async def local_cluster(
    control_plane_binaries: binaries.Binaries,
) -> AsyncIterator[cluster.Cluster]:
    keep = os.environ.get("VK_FARGATE_KEEP") == "1"
    async with cluster.Cluster(control_plane_binaries, keep_files=keep) as running:
        yield running


@pytest.fixture(scope="session")
async def api(local_cluster: cluster.Cluster) -> AsyncIterator[client.ApiClient]:
    api_client = await client.connect(local_cluster.kubeconfig)
    try:
        yield api_client
    finally:
        await api_client.close()


@pytest.fixture(scope="session")
def kubeconfig(local_cluster: cluster.Cluster) -> Path:
    return local_cluster.kubeconfig


@pytest.fixture(scope="session")
async def registry(
    tmp_path_factory: pytest.TempPathFactory, coredns_binary: Path | None
) -> AsyncIterator[devregistry.Registry]:
    """A real registry on loopback holding the local images (busybox, nginx, and
    CoreDNS's once built)."""
    running = await devregistry.start_filled(
        tmp_path_factory.mktemp("registry"), settings.load().cache
    )
    try:
        yield running
    finally:
        running.stop()


PRIVATE_USER, PRIVATE_PASSWORD = "puller", "s3cret-pull-password"
PRIVATE_IMAGE = "private/app:1"  # busybox, in the private registry only


@pytest.fixture(scope="session")
async def private_registry(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[devregistry.Registry]:
    """A registry that wants Basic credentials, holding ``PRIVATE_IMAGE``."""
    running = await devregistry.start(
        tmp_path_factory.mktemp("private-registry"), users={PRIVATE_USER: PRIVATE_PASSWORD}
    )
    try:
        layout = images.build(settings.load().cache)
        push = await asyncio.create_subprocess_exec(
            "skopeo", "copy", "--quiet", "--dest-tls-verify=false",
            "--dest-creds", f"{PRIVATE_USER}:{PRIVATE_PASSWORD}",
            f"oci:{layout}:busybox", f"docker://{running.host}/{PRIVATE_IMAGE}",
        )  # fmt: skip
        assert await asyncio.wait_for(push.wait(), 120) == 0
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
async def fleet(
    tmp_path_factory: pytest.TempPathFactory,
    registry: devregistry.Registry,
    private_registry: devregistry.Registry,
) -> AsyncIterator[devfleet.Fleet]:
    """A real fleetd on loopback (process runtime, images from ``registry`` run by
    runc; ``private_registry`` reachable too), stopped with all its microVMs."""
    running = await devfleet.start(
        tmp_path_factory.mktemp("fleet"),
        registry=registry.host,
        private_registries=(private_registry.host,),
    )
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
async def fleet_client(fleet: devfleet.Fleet) -> AsyncIterator[fleet_api.FleetClient]:
    async with fleet_api.FleetClient(fleet.url, fleet.token) as api_client:
        yield api_client
