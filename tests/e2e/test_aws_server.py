"""``vk-fargate dev up --aws``'s fake AWS for real: moto's server as a subprocess, over HTTP.

Everything goes to the server's 127.0.0.1 endpoint with dummy credentials; nothing can
reach AWS. Needs nothing but the dev dependencies (moto[server]), so it never skips.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests import waiting
from vk_fargate import errors
from vk_fargate.aws import devaws, iam, network, session


@pytest.fixture
async def fake(tmp_path: Path) -> AsyncIterator[devaws.DevAws]:
    running = await devaws.start(tmp_path, region="eu-central-1", cluster_name="e2e")
    try:
        yield running
    finally:
        running.stop()


def settings_of(fake: devaws.DevAws) -> session.AwsSettings:
    return session.AwsSettings(
        enabled=True,
        region=fake.world["region"],
        endpoint_url=fake.endpoint_url,
        cluster_name="e2e",
    )


async def test_the_seeded_world_and_ten_enis_through_the_server(fake: devaws.DevAws) -> None:
    world = fake.world
    assert world["endpoint_url"].startswith("http://127.0.0.1:")
    assert set(world) == {
        "endpoint_url",
        "region",
        "vpc_id",
        "private_subnets",
        "public_subnets",
        "role_arn",
    }
    ec2, iam_client = await asyncio.to_thread(devaws.clients, settings_of(fake))

    assert await network.check_vpc_dns(ec2, world["vpc_id"]) == []
    private = await network.check_subnets(ec2, world["private_subnets"])
    assert len(private) == 2
    assert len({s.zone for s in private}) == 2
    assert {s.vpc_id for s in private} == {world["vpc_id"]}
    assert not private[0].cidr.overlaps(private[1].cidr)
    for public in world["public_subnets"]:
        with pytest.raises(errors.SubnetNotPrivate, match=public):
            await network.check_subnets(ec2, [public])
    await iam.check_pod_execution_role(iam_client, world["role_arn"])

    counts: Counter[str] = Counter()
    made: list[tuple[network.Eni, network.SubnetInfo]] = []
    for n in range(10):
        subnet = network.choose_subnet(private, counts)
        eni = await network.create_eni(
            ec2,
            subnet.subnet_id,
            cluster="e2e",
            namespace="shop",
            pod=f"web-{n}",
            uid=f"uid-{n}",
            cidr=subnet.cidr,
        )
        counts[subnet.subnet_id] += 1
        made.append((eni, subnet))

    described = {
        e["NetworkInterfaceId"]: e for e in ec2.describe_network_interfaces()["NetworkInterfaces"]
    }
    assert set(described) == {eni.eni_id for eni, _ in made}
    addresses = [ipaddress.IPv4Address(eni.private_ip) for eni, _ in made]
    assert len(set(addresses)) == 10
    for eni, subnet in made:
        assert described[eni.eni_id]["SubnetId"] == subnet.subnet_id
        assert described[eni.eni_id]["PrivateIpAddress"] == eni.private_ip
        assert ipaddress.IPv4Address(eni.private_ip) in subnet.cidr
        assert network.usable_address(subnet.cidr, eni.private_ip)
    assert sorted(counts.values()) == [5, 5]
    assert await network.enis_per_subnet(ec2, "e2e") == counts

    for eni, _ in made:
        assert await network.delete_eni(ec2, eni.eni_id)
    assert await network.list_enis(ec2, "e2e") == []
    assert ec2.describe_network_interfaces()["NetworkInterfaces"] == []


async def test_stopping_ends_the_server(tmp_path: Path) -> None:
    running = await devaws.start(tmp_path)

    async def answering() -> bool:
        return await asyncio.to_thread(devaws.answers, running.endpoint_url)

    # start() returned once it answered; a loaded machine may still be slow to answer again.
    await waiting.until(answering, timeout=30, what="moto's server to answer")
    env = running.env()
    assert env["VK_FARGATE_AWS_ENDPOINT_URL"] == running.endpoint_url
    assert env["AWS_ACCESS_KEY_ID"] == "testing"

    running.stop()

    assert running.process.returncode is not None
    assert not devaws.answers(running.endpoint_url)
    assert (tmp_path / "moto.log").exists()
