"""Tests of aws.network against moto's EC2 (the session's moto server): subnet checks, DNS
warnings, ENIs, GC.

moto is lenient where AWS is strict (it hands out random, possibly repeated or reserved
ENI addresses and accepts any explicit one), so the tests assert our invariants - every
address usable, inside its subnet, unshared, no ENI leaked - by reading back what exists,
never by trusting what moto returned.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from typing import Any

import botocore.exceptions
import pytest

from tests.aws import conftest
from vk_fargate import errors
from vk_fargate.aws import network, session

REGION = conftest.REGION
CLUSTER = "test-cluster"


@pytest.fixture
def ec2(clients: session.Clients) -> Any:
    return clients.ec2


def make_vpc(ec2: Any, cidr: str = "10.0.0.0/16") -> str:
    return str(ec2.create_vpc(CidrBlock=cidr)["Vpc"]["VpcId"])


def make_subnet(ec2: Any, vpc_id: str, cidr: str, zone: str = "a") -> str:
    subnet = ec2.create_subnet(VpcId=vpc_id, CidrBlock=cidr, AvailabilityZone=REGION + zone)
    return str(subnet["Subnet"]["SubnetId"])


def internet_gateway(ec2: Any, vpc_id: str) -> str:
    gateway_id = str(ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"])
    ec2.attach_internet_gateway(InternetGatewayId=gateway_id, VpcId=vpc_id)
    return gateway_id


def route_table(ec2: Any, vpc_id: str, *, gateway_id: str | None = None) -> str:
    table_id = str(ec2.create_route_table(VpcId=vpc_id)["RouteTable"]["RouteTableId"])
    if gateway_id is not None:
        ec2.create_route(
            RouteTableId=table_id, DestinationCidrBlock="0.0.0.0/0", GatewayId=gateway_id
        )
    return table_id


def main_table(ec2: Any, vpc_id: str) -> str:
    tables = ec2.describe_route_tables(
        Filters=[
            {"Name": "vpc-id", "Values": [vpc_id]},
            {"Name": "association.main", "Values": ["true"]},
        ]
    )["RouteTables"]
    return str(tables[0]["RouteTableId"])


def all_enis(ec2: Any) -> list[dict[str, Any]]:
    """Every ENI of the account, ours or not: the leak detector."""
    return list(ec2.describe_network_interfaces()["NetworkInterfaces"])


# ----------------------------------------------------------------------------- subnets


async def test_a_subnet_on_a_private_table_is_private_even_when_the_main_table_is_public(
    ec2: Any,
) -> None:
    vpc_id = make_vpc(ec2)
    gateway_id = internet_gateway(ec2, vpc_id)
    ec2.create_route(
        RouteTableId=main_table(ec2, vpc_id), DestinationCidrBlock="0.0.0.0/0", GatewayId=gateway_id
    )
    subnet_id = make_subnet(ec2, vpc_id, "10.0.1.0/24", "b")
    ec2.associate_route_table(RouteTableId=route_table(ec2, vpc_id), SubnetId=subnet_id)

    [info] = await network.check_subnets(ec2, [subnet_id])

    assert info == network.SubnetInfo(
        subnet_id=subnet_id,
        zone=f"{REGION}b",
        cidr=ipaddress.IPv4Network("10.0.1.0/24"),
        vpc_id=vpc_id,
    )


async def test_an_explicit_table_with_an_internet_gateway_makes_the_subnet_public(
    ec2: Any,
) -> None:
    vpc_id = make_vpc(ec2)
    gateway_id = internet_gateway(ec2, vpc_id)
    table_id = route_table(ec2, vpc_id, gateway_id=gateway_id)
    subnet_id = make_subnet(ec2, vpc_id, "10.0.1.0/24")
    ec2.associate_route_table(RouteTableId=table_id, SubnetId=subnet_id)

    with pytest.raises(errors.SubnetNotPrivate) as caught:
        await network.check_subnets(ec2, [subnet_id])

    assert caught.value.subnet_id == subnet_id
    assert caught.value.route_table_id == table_id
    assert caught.value.gateway_id == gateway_id
    assert subnet_id in str(caught.value) and "private subnets only" in str(caught.value)


async def test_without_an_explicit_table_the_main_table_decides(ec2: Any) -> None:
    vpc_id = make_vpc(ec2)
    subnet_id = make_subnet(ec2, vpc_id, "10.0.1.0/24")
    assert [s.subnet_id for s in await network.check_subnets(ec2, [subnet_id])] == [subnet_id]

    gateway_id = internet_gateway(ec2, vpc_id)
    table_id = main_table(ec2, vpc_id)
    ec2.create_route(RouteTableId=table_id, DestinationCidrBlock="0.0.0.0/0", GatewayId=gateway_id)

    with pytest.raises(errors.SubnetNotPrivate) as caught:
        await network.check_subnets(ec2, [subnet_id])
    assert (caught.value.route_table_id, caught.value.gateway_id) == (table_id, gateway_id)


async def test_a_missing_subnet_is_named_even_among_good_ones(ec2: Any) -> None:
    vpc_id = make_vpc(ec2)
    good = make_subnet(ec2, vpc_id, "10.0.1.0/24")

    with pytest.raises(errors.SubnetNotFound) as caught:
        await network.check_subnets(ec2, [good, "subnet-0123456789abcdef0"])

    assert caught.value.subnet_id == "subnet-0123456789abcdef0"
    assert "subnet-0123456789abcdef0" in str(caught.value)
    assert isinstance(caught.value, errors.VkFargateError)


async def test_subnets_come_back_in_the_given_order_without_duplicates(ec2: Any) -> None:
    vpc_id = make_vpc(ec2)
    first = make_subnet(ec2, vpc_id, "10.0.1.0/24", "a")
    second = make_subnet(ec2, vpc_id, "10.0.2.0/24", "b")

    infos = await network.check_subnets(ec2, [second, first, second])

    assert [(s.subnet_id, s.zone) for s in infos] == [(second, f"{REGION}b"), (first, f"{REGION}a")]
    assert await network.check_subnets(ec2, []) == []


@pytest.mark.parametrize(
    ("support", "hostnames", "warned"),
    [
        (True, True, []),
        (True, False, ["enableDnsHostnames"]),
        (False, True, ["enableDnsSupport"]),
        (False, False, ["enableDnsSupport", "enableDnsHostnames"]),
    ],
)
async def test_vpc_dns_attributes_that_are_off_are_warned_about(
    ec2: Any, support: bool, hostnames: bool, warned: list[str]
) -> None:
    vpc_id = make_vpc(ec2)
    ec2.modify_vpc_attribute(VpcId=vpc_id, EnableDnsSupport={"Value": support})
    ec2.modify_vpc_attribute(VpcId=vpc_id, EnableDnsHostnames={"Value": hostnames})

    warnings = await network.check_vpc_dns(ec2, vpc_id)

    assert len(warnings) == len(warned)
    for warning, attribute in zip(warnings, warned, strict=True):
        assert attribute in warning and vpc_id in warning and "CoreDNS" in warning


# ----------------------------------------------------------------------------- ENIs


@pytest.fixture
def subnet(ec2: Any) -> network.SubnetInfo:
    vpc_id = make_vpc(ec2)
    subnet_id = make_subnet(ec2, vpc_id, "10.0.1.0/24")
    return network.SubnetInfo(subnet_id, f"{REGION}a", ipaddress.IPv4Network("10.0.1.0/24"), vpc_id)


async def create(ec2: Any, subnet: network.SubnetInfo, n: int, **kw: Any) -> network.Eni:
    return await network.create_eni(
        ec2,
        subnet.subnet_id,
        cluster=CLUSTER,
        namespace="shop",
        pod=f"web-{n}",
        uid=f"uid-{n}",
        **kw,
    )


async def test_an_eni_is_tagged_with_its_pod_and_holds_a_usable_address(
    ec2: Any, subnet: network.SubnetInfo
) -> None:
    eni = await create(ec2, subnet, 1)

    [described] = all_enis(ec2)
    assert described["NetworkInterfaceId"] == eni.eni_id
    assert described["PrivateIpAddress"] == eni.private_ip
    assert described["SubnetId"] == subnet.subnet_id
    tags = {t["Key"]: t["Value"] for t in described["TagSet"]}
    assert tags[network.TAG_CLUSTER] == CLUSTER
    assert tags[network.TAG_NAMESPACE] == "shop"
    assert tags[network.TAG_POD] == "web-1"
    assert tags[network.TAG_POD_UID] == "uid-1"
    assert network.usable_address(subnet.cidr, eni.private_ip)


async def test_creating_twice_for_one_pod_returns_the_same_eni(
    ec2: Any, subnet: network.SubnetInfo
) -> None:
    first = await create(ec2, subnet, 1)
    again = await create(ec2, subnet, 1, cidr=subnet.cidr)
    assert again == first
    assert len(all_enis(ec2)) == 1


async def test_list_and_delete(ec2: Any, subnet: network.SubnetInfo) -> None:
    made = [await create(ec2, subnet, n) for n in range(3)]
    other = await network.create_eni(
        ec2, subnet.subnet_id, cluster="another", namespace="x", pod="p", uid="uid-other"
    )

    listed = await network.list_enis(ec2, CLUSTER)
    assert sorted(listed) == sorted(
        network.OwnedEni(e.eni_id, f"uid-{n}") for n, e in enumerate(made)
    )
    assert await network.enis_per_subnet(ec2, CLUSTER) == Counter({subnet.subnet_id: 3})

    assert await network.delete_eni(ec2, made[0].eni_id) is True
    assert await network.delete_eni(ec2, made[0].eni_id) is False  # already gone is fine
    assert {e.eni_id for e in await network.list_enis(ec2, CLUSTER)} == {
        made[1].eni_id,
        made[2].eni_id,
    }
    assert {e["NetworkInterfaceId"] for e in all_enis(ec2)} == {
        made[1].eni_id,
        made[2].eni_id,
        other.eni_id,
    }


async def test_garbage_collection_deletes_exactly_the_enis_of_dead_pods(
    ec2: Any, subnet: network.SubnetInfo
) -> None:
    made = [await create(ec2, subnet, n, now=1000.0) for n in range(5)]
    foreign = await network.create_eni(
        ec2, subnet.subnet_id, cluster="another", namespace="x", pod="p", uid="uid-9"
    )
    before = len(all_enis(ec2))

    deleted = await network.garbage_collect(ec2, CLUSTER, {"uid-1", "uid-3"}, now=5000.0)

    assert sorted(deleted) == sorted(made[n].eni_id for n in (0, 2, 4))
    after = {e["NetworkInterfaceId"] for e in all_enis(ec2)}
    assert len(after) == before - 3
    assert after == {made[1].eni_id, made[3].eni_id, foreign.eni_id}
    assert await network.garbage_collect(ec2, CLUSTER, {"uid-1", "uid-3"}) == []


async def test_garbage_collection_spares_enis_younger_than_min_age(
    ec2: Any, subnet: network.SubnetInfo
) -> None:
    old = await create(ec2, subnet, 1, now=1000.0)
    young = await create(ec2, subnet, 2, now=1990.0)

    deleted = await network.garbage_collect(ec2, CLUSTER, set(), min_age_seconds=60, now=2000.0)

    assert deleted == [old.eni_id]
    assert [e.eni_id for e in await network.list_enis(ec2, CLUSTER)] == [young.eni_id]


class Wrapped:
    """Delegates to a real (moto) client; subclasses override one call."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_an_eni_that_cannot_be_deleted_is_left_for_the_next_round(
    ec2: Any, subnet: network.SubnetInfo
) -> None:
    stuck, loose = await create(ec2, subnet, 1), await create(ec2, subnet, 2)

    class InUse(Wrapped):
        def delete_network_interface(self, **kw: Any) -> Any:
            if kw["NetworkInterfaceId"] == stuck.eni_id:
                error = {"Code": "InvalidNetworkInterface.InUse", "Message": "in use"}
                raise botocore.exceptions.ClientError({"Error": error}, "DeleteNetworkInterface")
            return self.inner.delete_network_interface(**kw)

    assert await network.garbage_collect(InUse(ec2), CLUSTER, set()) == [loose.eni_id]
    assert [e["NetworkInterfaceId"] for e in all_enis(ec2)] == [stuck.eni_id]
    with pytest.raises(errors.AwsError, match=stuck.eni_id):
        await network.delete_eni(InUse(ec2), stuck.eni_id)


class Offering(Wrapped):
    """Makes EC2 hand out chosen addresses first, as a careless backend could.

    Tests list the good address that follows the bad one too: moto's own pick
    is random and can itself be reserved (10.0.1.3 was, once, in CI).
    """

    def __init__(self, inner: Any, addresses: list[str]) -> None:
        super().__init__(inner)
        self.addresses = addresses
        self.creations = 0

    def create_network_interface(self, **kw: Any) -> Any:
        self.creations += 1
        if self.addresses:
            kw["PrivateIpAddress"] = self.addresses.pop(0)
        return self.inner.create_network_interface(**kw)


@pytest.mark.parametrize(
    "bad", ["192.168.7.7", "10.0.1.0", "10.0.1.1", "10.0.1.3", "10.0.1.255"], ids=str
)
async def test_an_address_outside_the_subnet_or_reserved_is_refused_and_released(
    ec2: Any, subnet: network.SubnetInfo, bad: str
) -> None:
    backend = Offering(ec2, [bad, "10.0.1.77"])

    eni = await create(backend, subnet, 1)

    assert backend.creations == 2
    assert eni.private_ip == "10.0.1.77"
    assert network.usable_address(subnet.cidr, eni.private_ip)
    assert [e["NetworkInterfaceId"] for e in all_enis(ec2)] == [eni.eni_id]  # no leak


async def test_an_address_another_eni_holds_is_refused(
    ec2: Any, subnet: network.SubnetInfo
) -> None:
    first = await create(ec2, subnet, 1)
    free = next(
        str(a) for a in subnet.cidr.hosts() if a.packed[-1] > 3 and str(a) != first.private_ip
    )
    backend = Offering(ec2, [first.private_ip, free])

    second = await create(backend, subnet, 2)

    assert backend.creations == 2
    assert second.private_ip == free
    assert {e["PrivateIpAddress"] for e in all_enis(ec2)} == {first.private_ip, second.private_ip}


async def test_giving_up_after_repeated_bad_addresses_leaks_nothing(
    ec2: Any, subnet: network.SubnetInfo
) -> None:
    backend = Offering(ec2, ["10.0.1.0"] * network.ENI_ATTEMPTS)

    with pytest.raises(errors.AwsError, match="no usable address"):
        await create(backend, subnet, 1)

    assert backend.creations == network.ENI_ATTEMPTS
    assert all_enis(ec2) == []


async def test_creating_in_a_missing_subnet_is_subnet_not_found(ec2: Any) -> None:
    with pytest.raises(errors.SubnetNotFound, match="subnet-0123456789abcdef0"):
        await network.create_eni(
            ec2, "subnet-0123456789abcdef0", cluster=CLUSTER, namespace="n", pod="p", uid="u"
        )
