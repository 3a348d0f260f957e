"""The whole local stack behind `vk-fargate dev up`: control plane, an image registry
holding the local images, fleetd, provider, and with ``--aws`` a fake AWS (moto's
server, seeded by ``vk_fargate.aws.devaws``); then CoreDNS on Fargate, as on a
Fargate-only EKS cluster (``clusterdns``).

Everything is started detached (it outlives `dev up`) and recorded in the state file
as one component each, so `dev status` and `dev down` see and stop all of it, last
started first. A failing step stops what the earlier steps started. With AWS, moto
comes before fleetd (whose subnets mirror the VPC's private ones, so ENI addresses are
addresses fleetd serves) and the provider (which gets moto's endpoint and dummy keys).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vk_fargate import errors
from vk_fargate.aws import devaws
from vk_fargate.devcluster import binaries, cluster, clusterdns, coredns, processes, state
from vk_fargate.devcluster import fleet as devfleet
from vk_fargate.devcluster import provider as devprovider
from vk_fargate.devcluster import registry as devregistry

CLUSTER_NAME = "vk-fargate-dev"
Progress = Callable[[str], None]


def _component(
    process: subprocess.Popen[bytes],
    url: str,
    log: Path,
    grace: float,
    *,
    health_url: str,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A started component as the state file records it: enough to stop it, and to
    start it again as it was (``dev restart``)."""
    argv = [str(a) for a in process.args]  # type: ignore[union-attr]
    return {
        "pid": process.pid,
        "url": url,
        "log": str(log),
        "program": argv[0],
        "grace": grace,
        "argv": argv,
        "health_url": health_url,
        "env": env or {},
    }


def has_aws(status: dict[str, Any]) -> bool:
    """Whether a recorded stack was started with ``--aws``."""
    return "aws" in status


def aws_layout() -> devaws.Layout:
    """The fake VPC: 192.168.0.0/16 with three /24s no route of this machine uses (two
    private in zones a and b, one public), as fleetd's own subnets are picked."""
    private_a, private_b, public = (str(net) for net in devfleet.free_subnets(3))
    return devaws.Layout(
        vpc_cidr="192.168.0.0/16",
        private=((private_a, "a"), (private_b, "b")),
        public=((public, "a"),),
    )


async def _start_aws(root: Path, status: dict[str, Any], progress: Progress) -> devaws.DevAws:
    progress("starting the fake AWS (moto's server, on loopback)")
    try:
        aws = await devaws.start(
            root / "aws", cluster_name=CLUSTER_NAME, detach=True, layout=aws_layout()
        )
    except errors.AwsError as exc:
        log = root / "aws" / devaws.LOG_NAME
        raise errors.HarnessError("start moto", str(exc), log=log) from exc
    status["components"]["aws"] = _component(
        aws.process, aws.endpoint_url, aws.log, 10, health_url=aws.endpoint_url
    )
    status["aws"] = dict(aws.world)
    state.save(root, status)
    world = aws.world
    progress(
        f"AWS at {aws.endpoint_url}: {world['vpc_id']} ({world['region']}), private subnets "
        f"{', '.join(world['private_subnets'])}, public {', '.join(world['public_subnets'])}, "
        f"role {world['role_arn']}"
    )
    return aws


async def _start_registry(
    root: Path, cache: Path, status: dict[str, Any], progress: Progress
) -> devregistry.Registry:
    progress("starting the image registry (docker-registry, on loopback) with the local images")
    registry = await devregistry.start_filled(root / "registry", cache, detach=True)
    status["components"]["registry"] = _component(
        registry.process, registry.url, registry.log, 10, health_url=f"{registry.url}/v2/"
    )
    status["registry"] = {"url": registry.url, "images": registry.images}
    state.save(root, status)
    progress(f"registry at {registry.url}: {', '.join(registry.images)}")
    return registry


async def _deploy_coredns(
    kubeconfig: Path, registry: devregistry.Registry, status: dict[str, Any], progress: Progress
) -> None:
    if not any(ref.endswith(f"/{coredns.REPOSITORY}:{coredns.VERSION}") for ref in registry.images):
        raise errors.HarnessError(
            "deploy CoreDNS",
            f"the registry has no CoreDNS {coredns.VERSION} image: its binary is not built "
            "(`vk-fargate dev build` builds it)",
        )
    progress(f"deploying CoreDNS {coredns.VERSION} on Fargate (profile {clusterdns.PROFILE_NAME})")
    await clusterdns.deploy(kubeconfig)
    status["coredns"] = {"image": coredns.IMAGE, "service_ip": clusterdns.service_ip()}
    progress(
        f"CoreDNS applied: 2 replicas, Service kube-system/kube-dns at "
        f"{clusterdns.service_ip()} (`vk-fargate dev status` shows its pods)"
    )


async def up(
    bins: binaries.Binaries,
    root: Path,
    progress: Progress,
    *,
    cache: Path,
    with_aws: bool = False,
) -> dict[str, Any]:
    """Start the stack under ``root`` (images built under ``cache``); its status (also
    saved as the state file)."""
    began = time.monotonic()
    local = cluster.Cluster(bins, root=root, detach=True, keep_files=True)
    await local.start(progress=progress)
    status = local.status()
    state.save(root, status)
    try:
        registry = await _start_registry(root, cache, status, progress)
        aws = await _start_aws(root, status, progress) if with_aws else None
        progress("starting fleetd (the reference bare-metal fleet)")
        subnets = aws.fleet_subnets() if aws is not None else None
        fleet = await devfleet.start(
            root / "fleet", detach=True, subnets=subnets, registry=registry.host
        )
        status["components"]["fleetd"] = _component(
            fleet.process, fleet.url, fleet.log, 60, health_url=f"{fleet.url}/healthz"
        )
        status["fleet"] = {"url": fleet.url, "token_file": str(fleet.token_file)}
        state.save(root, status)
        progress(f"fleetd serving the fleet API at {fleet.url}")
        progress("starting the provider (vk-fargate run)")
        port = processes.free_ports(1)[0]
        env = devprovider.environment(local, fleet, port=port, cluster_name=CLUSTER_NAME)
        env["VK_FARGATE_NAMESPACE"] = "vk-fargate"
        if aws is not None:
            env.update(aws.env())
            env["VK_FARGATE_REGION"] = aws.world["region"]
        provider = devprovider.Provider(env, root / "logs" / "provider.log", detach=True)
        await provider.start()
        assert provider.process is not None
        own = {k: v for k, v in env.items() if os.environ.get(k) != v}
        status["components"]["provider"] = _component(
            provider.process, provider.url, provider.log, 20, health_url=provider.ready_url, env=own
        )
        status["provider"] = {"kubelet_url": provider.url, "cluster_name": CLUSTER_NAME}
        state.save(root, status)
        progress(f"provider serving the kubelet API at {provider.url}")
        await _deploy_coredns(local.kubeconfig, registry, status, progress)
        state.save(root, status)
    except BaseException:
        state.stop_all(status)
        raise
    progress(f"stack ready in {time.monotonic() - began:.1f}s at {local.server}")
    return status
