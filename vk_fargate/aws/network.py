"""Subnets and ENIs: the VPC side of a Fargate pod.

A Fargate pod gets its IP from an ENI in one of its profile's subnets, so we create one
ENI per pod before the microVM starts and pass its private IP to the fleet. Creating
ENIs in AWS costs nothing while unattached, but a leaked one holds an address forever
(``fargate-facts.md`` §10: "leaked cloud resources after scale-down"), so every ENI is
tagged with the cluster and the pod's UID and ``garbage_collect`` removes those whose
pod is gone.

Profile subnets must be private (§2): a subnet is public when its route table - the one
explicitly associated with it, else its VPC's main table - routes to an internet gateway
(``igw-``; an egress-only ``eigw-`` keeps it private). A VPC without DNS support or DNS
hostnames leaves CoreDNS pods Pending (the seed chapter's troubleshooting), so that is
reported too, as warnings.

We let EC2 choose each address and then check it: inside the subnet, not one of the
five addresses AWS reserves, and held by no other ENI. AWS guarantees this; an emulator
may not (moto draws at random and can repeat itself or hand out .0), and a pod must
never share an IP, so a bad address is released and the creation tried again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import time
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import botocore.exceptions

from vk_fargate import errors
from vk_fargate.aws.session import Client, error_code

log = logging.getLogger(__name__)

TAG_CLUSTER = "vk-fargate.io/cluster"
TAG_NAMESPACE = "vk-fargate.io/namespace"
TAG_POD = "vk-fargate.io/pod"
TAG_POD_UID = "vk-fargate.io/pod-uid"
TAG_CREATED = "vk-fargate.io/created-at"
"""Unix seconds at creation, so a periodic GC can spare ENIs of pods still being placed."""
ENI_ATTEMPTS = 5
"""Creations tried before giving up when EC2 hands out an unusable address."""
_ENI_GONE = "InvalidNetworkInterfaceID.NotFound"


@dataclasses.dataclass(frozen=True)
class SubnetInfo:
    """A checked, private subnet."""

    subnet_id: str
    zone: str
    cidr: ipaddress.IPv4Network
    vpc_id: str


class Eni(NamedTuple):
    eni_id: str
    private_ip: str


class OwnedEni(NamedTuple):
    """An ENI of this cluster and the UID of the pod it was made for ('' if untagged)."""

    eni_id: str
    uid: str


def _tags(resource: Mapping[str, Any]) -> dict[str, str]:
    pairs = resource.get("TagSet") or resource.get("Tags") or []
    return {str(t["Key"]): str(t["Value"]) for t in pairs}


def public_route(route_table: Mapping[str, Any]) -> str | None:
    """The internet gateway ``route_table`` routes to, or None. Pure.

    Blackhole routes (their gateway was deleted) carry no traffic and do not count.
    """
    for route in route_table.get("Routes") or []:
        gateway = str(route.get("GatewayId") or "")
        if gateway.startswith("igw-") and route.get("State") != "blackhole":
            return gateway
    return None


def _describe_subnets(ec2: Client, subnet_ids: list[str]) -> list[dict[str, Any]]:
    # A filter (unlike SubnetIds=) returns what exists instead of failing on the first
    # missing id, so we can name the missing one ourselves.
    pages = ec2.get_paginator("describe_subnets").paginate(
        Filters=[{"Name": "subnet-id", "Values": subnet_ids}]
    )
    return [s for page in pages for s in page["Subnets"]]


def _route_tables(ec2: Client, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    pages = ec2.get_paginator("describe_route_tables").paginate(Filters=filters)
    return [t for page in pages for t in page["RouteTables"]]


def _check_subnets(ec2: Client, subnet_ids: Sequence[str]) -> list[SubnetInfo]:
    wanted = list(dict.fromkeys(subnet_ids))
    if not wanted:
        return []
    found = {s["SubnetId"]: s for s in _describe_subnets(ec2, wanted)}
    for subnet_id in wanted:
        if subnet_id not in found:
            raise errors.SubnetNotFound(subnet_id)
    explicit: dict[str, dict[str, Any]] = {}
    for table in _route_tables(ec2, [{"Name": "association.subnet-id", "Values": wanted}]):
        for association in table.get("Associations") or []:
            if association.get("SubnetId") in found:
                explicit[association["SubnetId"]] = table
    vpcs = sorted({s["VpcId"] for s in found.values()})
    main: dict[str, dict[str, Any]] = {}
    for table in _route_tables(
        ec2,
        [{"Name": "vpc-id", "Values": vpcs}, {"Name": "association.main", "Values": ["true"]}],
    ):
        main[table["VpcId"]] = table
    infos = []
    for subnet_id in wanted:
        subnet = found[subnet_id]
        routes = explicit.get(subnet_id) or main.get(subnet["VpcId"])
        gateway = public_route(routes) if routes is not None else None
        if routes is not None and gateway is not None:
            raise errors.SubnetNotPrivate(
                subnet_id, route_table_id=str(routes["RouteTableId"]), gateway_id=gateway
            )
        infos.append(
            SubnetInfo(
                subnet_id=subnet_id,
                zone=str(subnet["AvailabilityZone"]),
                cidr=ipaddress.IPv4Network(subnet["CidrBlock"]),
                vpc_id=str(subnet["VpcId"]),
            )
        )
    return infos


async def check_subnets(ec2: Client, subnet_ids: Sequence[str]) -> list[SubnetInfo]:
    """The subnets, in the order given (duplicates dropped), if all exist and are private.

    Raises ``SubnetNotFound`` or ``SubnetNotPrivate`` naming the first offending subnet.
    """
    return await asyncio.to_thread(_check_subnets, ec2, subnet_ids)


def _check_vpc_dns(ec2: Client, vpc_id: str) -> list[str]:
    warnings = []
    for attribute, key in (
        ("enableDnsSupport", "EnableDnsSupport"),
        ("enableDnsHostnames", "EnableDnsHostnames"),
    ):
        answer = ec2.describe_vpc_attribute(VpcId=vpc_id, Attribute=attribute)
        if not answer.get(key, {}).get("Value", False):
            warnings.append(
                f"VPC {vpc_id} has {attribute} off: CoreDNS pods on Fargate stay Pending; "
                f"turn it on with ModifyVpcAttribute"
            )
    return warnings


async def check_vpc_dns(ec2: Client, vpc_id: str) -> list[str]:
    """Warnings (empty when fine) for ``enableDnsSupport``/``enableDnsHostnames`` off."""
    return await asyncio.to_thread(_check_vpc_dns, ec2, vpc_id)


def usable_address(cidr: ipaddress.IPv4Network, address: str) -> bool:
    """Whether AWS could hand out ``address`` in ``cidr``. Pure.

    AWS reserves the network address, the next three (router, DNS, future use) and the
    broadcast address of every subnet.
    """
    ip = ipaddress.IPv4Address(address)
    return ip in cidr and int(ip) - int(cidr.network_address) > 3 and ip != cidr.broadcast_address


def _describe_enis(ec2: Client, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    pages = ec2.get_paginator("describe_network_interfaces").paginate(Filters=filters)
    return [e for page in pages for e in page["NetworkInterfaces"]]


def _ours(cluster: str, uid: str | None = None) -> list[dict[str, Any]]:
    filters = [{"Name": f"tag:{TAG_CLUSTER}", "Values": [cluster]}]
    if uid is not None:
        filters.append({"Name": f"tag:{TAG_POD_UID}", "Values": [uid]})
    return filters


def _subnet_cidr(ec2: Client, subnet_id: str) -> ipaddress.IPv4Network:
    subnets = _describe_subnets(ec2, [subnet_id])
    if not subnets:
        raise errors.SubnetNotFound(subnet_id)
    return ipaddress.IPv4Network(subnets[0]["CidrBlock"])


def _delete_eni(ec2: Client, eni_id: str) -> bool:
    try:
        ec2.delete_network_interface(NetworkInterfaceId=eni_id)
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) == _ENI_GONE:
            return False
        raise errors.AwsError(f"cannot delete ENI {eni_id}: {exc}", code=error_code(exc)) from exc
    return True


def _create_eni(
    ec2: Client,
    subnet_id: str,
    cidr: ipaddress.IPv4Network | None,
    tags: dict[str, str],
) -> Eni:
    existing = _describe_enis(ec2, _ours(tags[TAG_CLUSTER], tags[TAG_POD_UID]))
    if existing:
        # Idempotent per pod: a retried placement gets the ENI it already has.
        return Eni(str(existing[0]["NetworkInterfaceId"]), str(existing[0]["PrivateIpAddress"]))
    if cidr is None:
        cidr = _subnet_cidr(ec2, subnet_id)
    description = f"vk-fargate pod {tags[TAG_NAMESPACE]}/{tags[TAG_POD]}"[:255]
    rejected = []
    for _ in range(ENI_ATTEMPTS):
        try:
            # botocore fills in ClientToken, so its own retries never create a second ENI.
            created = ec2.create_network_interface(
                SubnetId=subnet_id,
                Description=description,
                TagSpecifications=[
                    {
                        "ResourceType": "network-interface",
                        "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
                    }
                ],
            )["NetworkInterface"]
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) == "InvalidSubnetID.NotFound":
                raise errors.SubnetNotFound(subnet_id) from exc
            raise errors.AwsError(
                f"cannot create an ENI in {subnet_id}: {exc}", code=error_code(exc)
            ) from exc
        eni = Eni(str(created["NetworkInterfaceId"]), str(created["PrivateIpAddress"]))
        holders = _describe_enis(
            ec2,
            [
                {"Name": "subnet-id", "Values": [subnet_id]},
                {"Name": "private-ip-address", "Values": [eni.private_ip]},
            ],
        )
        if usable_address(cidr, eni.private_ip) and len(holders) <= 1:
            return eni
        rejected.append(eni.private_ip)
        log.warning(
            "EC2 gave ENI %s address %s, unusable in %s (%s); trying again",
            eni.eni_id,
            eni.private_ip,
            cidr,
            "shared" if len(holders) > 1 else "outside or reserved",
        )
        _delete_eni(ec2, eni.eni_id)
    raise errors.AwsError(
        f"no usable address for an ENI in {subnet_id} ({cidr}) after {ENI_ATTEMPTS} "
        f"attempts; EC2 offered {', '.join(rejected)}"
    )


async def create_eni(
    ec2: Client,
    subnet_id: str,
    *,
    cluster: str,
    namespace: str,
    pod: str,
    uid: str,
    cidr: ipaddress.IPv4Network | None = None,
    now: float | None = None,
) -> Eni:
    """An ENI for pod ``namespace/pod`` (``uid``) in ``subnet_id``: its id and private IP.

    Idempotent per ``uid``: if this cluster already has an ENI for the pod, that one is
    returned (wherever it is). ``cidr`` (from ``SubnetInfo``) saves a describe call.
    """
    tags = {
        TAG_CLUSTER: cluster,
        TAG_NAMESPACE: namespace,
        TAG_POD: pod,
        TAG_POD_UID: uid,
        TAG_CREATED: str(int(time.time() if now is None else now)),
    }
    return await asyncio.to_thread(_create_eni, ec2, subnet_id, cidr, tags)


async def delete_eni(ec2: Client, eni_id: str) -> bool:
    """Delete ``eni_id``; False when it was already gone (which is fine)."""
    return await asyncio.to_thread(_delete_eni, ec2, eni_id)


async def list_enis(ec2: Client, cluster: str, *, uid: str | None = None) -> list[OwnedEni]:
    """This cluster's ENIs (of pod ``uid`` only, if given) with the UID each was made for."""
    enis = await asyncio.to_thread(_describe_enis, ec2, _ours(cluster, uid))
    return [OwnedEni(str(e["NetworkInterfaceId"]), _tags(e).get(TAG_POD_UID, "")) for e in enis]


async def enis_per_subnet(ec2: Client, cluster: str) -> Counter[str]:
    """How many ENIs this cluster holds in each subnet (the ``counts`` of ``choose_subnet``)."""
    enis = await asyncio.to_thread(_describe_enis, ec2, _ours(cluster))
    return Counter(str(e["SubnetId"]) for e in enis)


async def garbage_collect(
    ec2: Client,
    cluster: str,
    live_uids: Collection[str],
    *,
    min_age_seconds: float = 0.0,
    now: float | None = None,
) -> list[str]:
    """Delete this cluster's ENIs whose pod UID is not in ``live_uids``; their ids.

    ``min_age_seconds`` spares ENIs younger than that (a pod being placed right now may
    not be in ``live_uids`` yet); 0 is right at start-up, before any placement. An ENI
    that cannot be deleted (e.g. attached) is logged and left for the next round.
    """
    enis = await asyncio.to_thread(_describe_enis, ec2, _ours(cluster))
    clock = time.time() if now is None else now
    deleted = []
    for eni in enis:
        tags = _tags(eni)
        if tags.get(TAG_POD_UID, "") in live_uids:
            continue
        try:
            created = float(tags.get(TAG_CREATED, "0"))
        except ValueError:
            created = 0.0
        if clock - created < min_age_seconds:
            continue
        eni_id = str(eni["NetworkInterfaceId"])
        try:
            if await delete_eni(ec2, eni_id):
                deleted.append(eni_id)
        except errors.AwsError as exc:
            log.warning("leaving ENI %s for the next collection: %s", eni_id, exc)
    if deleted:
        log.info("deleted %d leaked ENI(s) of cluster %s", len(deleted), cluster)
    return deleted


def choose_subnet(subnets: Iterable[SubnetInfo], counts: Mapping[str, int]) -> SubnetInfo:
    """The subnet for the next ENI: least-loaded zone, then least-loaded subnet. Pure.

    ``counts`` maps subnet ids to how many ENIs they hold (missing means 0). Spreading
    over zones first is what keeps a Deployment alive through a zone outage (and what
    Fargate's zone-by-zone patching, §5, assumes); ties go to the lower subnet id so
    the choice is deterministic.
    """
    candidates = list(subnets)
    if not candidates:
        raise errors.AwsError("no subnet to place an ENI in")
    per_zone: Counter[str] = Counter()
    for subnet in candidates:
        per_zone[subnet.zone] += counts.get(subnet.subnet_id, 0)
    return min(
        candidates,
        key=lambda s: (per_zone[s.zone], counts.get(s.subnet_id, 0), s.zone, s.subnet_id),
    )
