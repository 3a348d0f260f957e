"""An ENI per pod, as Fargate gives each pod one in a subnet of its profile.

With an AWS backend, a pod placed by a profile that names subnets gets an ENI in one of
them (spread across subnets and zones), and its microVM is created with the ENI's
private IP, so the node name ``fargate-ip-...`` carries it. The ENI goes when the pod
and its microVM have gone; at start-up, ENIs of pods that no longer exist are
collected. A profile whose subnets are missing or public blocks new launches with
EKS's ``Misconfigured Fargate Profile`` text.
"""

from __future__ import annotations

import collections
import dataclasses
import ipaddress
import logging

from vk_fargate import errors
from vk_fargate.aws import network, session
from vk_fargate.fargate import profiles
from vk_fargate.fleet import models
from vk_fargate.k8s import kube

log = logging.getLogger(__name__)


class Misconfigured(errors.VkFargateError):
    """The pod's profile cannot launch pods; the message is EKS's event text."""


def misconfigured(profile: str, reason: str) -> str:
    """EKS's event text for a pod of a profile that cannot launch pods."""
    return (
        f"Misconfigured Fargate Profile: fargate profile {profile} blocked for new launches "
        f"due to: {reason}"
    )


@dataclasses.dataclass(frozen=True)
class Address:
    private_ip: str
    subnet_id: str
    zone: str


class Enis:
    def __init__(self, clients: session.Clients, *, cluster: str) -> None:
        self.clients = clients
        self.cluster = cluster
        self._subnets: dict[tuple[str, ...], list[network.SubnetInfo]] = {}
        self._counts: collections.Counter[str] = collections.Counter()

    async def collect(self, live_uids: set[str]) -> list[str]:
        """Delete ENIs of this cluster whose pod is gone; their ids."""
        self._counts = await network.enis_per_subnet(self.clients.ec2, self.cluster)
        return list(await network.garbage_collect(self.clients.ec2, self.cluster, live_uids))

    async def checked_subnets(self, profile: profiles.Profile) -> list[network.SubnetInfo]:
        key = tuple(profile.subnets)
        if key not in self._subnets:
            try:
                self._subnets[key] = await network.check_subnets(self.clients.ec2, key)
            except errors.AwsError as exc:
                raise Misconfigured(misconfigured(profile.name, str(exc))) from exc
        return self._subnets[key]

    async def address(
        self, profile: profiles.Profile, *, namespace: str, pod: str, uid: str
    ) -> Address:
        """The pod's ENI address (made once per pod UID) in one of the profile's subnets."""
        subnets = await self.checked_subnets(profile)
        subnet = network.choose_subnet(subnets, self._counts)
        eni = await network.create_eni(
            self.clients.ec2,
            subnet.subnet_id,
            cluster=self.cluster,
            namespace=namespace,
            pod=pod,
            uid=uid,
            cidr=subnet.cidr,
        )
        self._counts[subnet.subnet_id] += 1
        placed = next((s for s in subnets if s.cidr.overlaps(_net(eni.private_ip))), subnet)
        return Address(eni.private_ip, placed.subnet_id, placed.zone)

    async def release(self, uid: str) -> int:
        """Delete the pod's ENIs (absent ones are fine); how many went."""
        gone = 0
        for owned in await network.list_enis(self.clients.ec2, self.cluster, uid=uid):
            if await network.delete_eni(self.clients.ec2, owned.eni_id):
                gone += 1
        return gone


async def assign(
    enis: Enis | None, pod: kube.JSON, spec: models.MicroVMSpec, profile: profiles.Profile
) -> models.MicroVMSpec:
    """``spec`` with the address of the pod's ENI, when there is an AWS backend and the
    pod's profile names subnets; else ``spec`` as it is (the fleet's IPAM decides)."""
    meta = pod["metadata"]
    if enis is None or not profile.subnets:
        return spec
    address = await enis.address(
        profile, namespace=meta["namespace"], pod=meta["name"], uid=meta["uid"]
    )
    return spec.model_copy(update={"private_ip": address.private_ip, "subnet": address.subnet_id})


def _net(ip: str) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(f"{ip}/32")
