"""A fake AWS for ``vk-fargate dev up --aws`` and the tests: moto's server, seeded.

Nothing here ever reaches real AWS: the server listens on 127.0.0.1, every client is
made with its ``endpoint_url`` and dummy credentials. It runs as a subprocess
(``python -m moto.server``), not in-process, so the provider under test talks to it
over HTTP exactly as it would to AWS, and so ``dev up`` can leave it running detached.

The seeded world is what a Fargate profile needs: a VPC with DNS support and DNS
hostnames on, two private subnets in two zones (their route table has only the local
route), one public subnet (its route table sends 0.0.0.0/0 to an internet gateway), and
a pod execution role that trusts ``eks-fargate-pods.amazonaws.com``. The CIDRs default to
``VPC_CIDR``/``PRIVATE``/``PUBLIC``; ``dev up --aws`` passes a ``Layout`` of /24s no route
of the machine uses, since fleetd's bridges for them must not collide with another stack's.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, TypedDict

from vk_fargate import errors, supervision
from vk_fargate.aws import session

DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}
VPC_CIDR = "10.0.0.0/16"
PRIVATE = (("10.0.1.0/24", "a"), ("10.0.2.0/24", "b"))
PUBLIC = (("10.0.101.0/24", "a"),)
ROLE_NAME = "vk-fargate-pod-execution"
LOG_NAME = "moto.log"  # the server's log, in the folder given to ``start``
TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "eks-fargate-pods.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}
_PR_SET_PDEATHSIG = 1
Subnets = tuple[tuple[str, str], ...]  # (CIDR, zone letter) each


@dataclasses.dataclass(frozen=True)
class Layout:
    """The VPC's CIDR and its subnets' (CIDR, zone letter)."""

    vpc_cidr: str = VPC_CIDR
    private: Subnets = PRIVATE
    public: Subnets = PUBLIC


class World(TypedDict):
    """What ``seed`` made, for the provider's settings and the tests."""

    endpoint_url: str
    region: str
    vpc_id: str
    private_subnets: list[str]
    public_subnets: list[str]
    role_arn: str


def fleet_subnets(world: World, private: Subnets = PRIVATE) -> list[dict[str, str]]:
    """fleetd's subnets mirroring the private ones (ids, CIDRs, zones), so that ENI
    addresses are addresses fleetd can hand out; ``private`` as seeded. Pure."""
    return [
        {"id": subnet_id, "cidr": cidr, "zone": f"{world['region']}{zone}"}
        for subnet_id, (cidr, zone) in zip(world["private_subnets"], private, strict=True)
    ]


def describe_subnets(world: World, subnet_ids: list[str]) -> list[dict[str, str]]:
    """``subnet_ids`` as the fake AWS at ``world['endpoint_url']`` describes them: id,
    cidr, zone (in the order given)."""
    aws = session.AwsSettings(
        enabled=True, region=world["region"], endpoint_url=world["endpoint_url"]
    )
    keys = (DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"], DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
    ec2 = session.make_client(aws, "ec2", credentials=keys)
    found = ec2.describe_subnets(SubnetIds=subnet_ids)["Subnets"]
    by_id = {
        str(s["SubnetId"]): {
            "id": str(s["SubnetId"]),
            "cidr": str(s["CidrBlock"]),
            "zone": str(s["AvailabilityZone"]),
        }
        for s in found
    }
    return [by_id[subnet_id] for subnet_id in subnet_ids]


@dataclasses.dataclass
class DevAws:
    """A running moto server and the world seeded in it."""

    world: World
    process: subprocess.Popen[bytes]
    log: Path
    layout: Layout = dataclasses.field(default_factory=Layout)

    @property
    def endpoint_url(self) -> str:
        return self.world["endpoint_url"]

    def env(self) -> dict[str, str]:
        """Environment for a provider process that should use this fake AWS."""
        return {
            **DUMMY_CREDENTIALS,
            "AWS_DEFAULT_REGION": self.world["region"],
            "VK_FARGATE_AWS_ENABLED": "true",
            "VK_FARGATE_AWS_ENDPOINT_URL": self.endpoint_url,
        }

    def fleet_subnets(self) -> list[dict[str, str]]:
        """fleetd's subnets mirroring this world's private ones."""
        return fleet_subnets(self.world, self.layout.private)

    def stop(self) -> None:
        stop(self.process.pid, child=self.process)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def spawn(port: int, log: Path, *, detach: bool = False) -> subprocess.Popen[bytes]:
    """``python -m moto.server`` on 127.0.0.1:``port``, output appended to ``log``.

    Unless ``detach``, the kernel kills the server when this process dies.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=None if detach else _die_with_parent,
            env={**os.environ, **DUMMY_CREDENTIALS},
        )


def answers(url: str, *, timeout: float = 5.0) -> bool:
    """Whether moto's server at ``url`` answers. Asks its small config document, not
    ``/moto-api/data.json``, which serializes every resource the server holds."""
    try:
        with urllib.request.urlopen(f"{url}/moto-api/config", timeout=timeout) as response:
            return 200 <= int(response.status) < 300  # moto answers 201
    except (urllib.error.URLError, OSError):
        return False


async def wait_ready(process: subprocess.Popen[bytes], url: str, log: Path, timeout: float) -> None:
    """Poll ``url`` until moto answers; ``AwsError`` if it exits or time runs out."""
    deadline = time.monotonic() + timeout
    poll = supervision.Backoff(0.05, 0.5, factor=1.5, jitter=0.0)
    while not await asyncio.to_thread(answers, url):
        if process.poll() is not None:
            raise errors.AwsError(
                f"moto server exited with code {process.returncode}: {_tail(log)}"
            )
        if time.monotonic() > deadline:
            raise errors.AwsError(f"moto server at {url} not ready after {timeout:.0f}s ({log})")
        await poll.sleep()


def _tail(log: Path, lines: int = 10) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


def clients(aws: session.AwsSettings) -> tuple[session.Client, session.Client]:
    """EC2 and IAM clients of the fake at ``aws.endpoint_url``, with dummy credentials."""
    if aws.endpoint_url is None:
        raise errors.AwsError("refusing to use the fake AWS's clients without an endpoint")
    keys = (DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"], DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
    ec2 = session.make_client(aws, "ec2", credentials=keys)
    iam = session.make_client(aws, "iam", credentials=keys)
    return ec2, iam


def _seed(aws: session.AwsSettings, layout: Layout) -> World:
    ec2, iam = clients(aws)
    assert aws.endpoint_url is not None  # clients() checked it
    tags = [{"Key": "vk-fargate.io/cluster", "Value": aws.cluster_name}]

    def tagged(kind: str) -> list[dict[str, Any]]:
        return [{"ResourceType": kind, "Tags": tags}]

    vpc = ec2.create_vpc(CidrBlock=layout.vpc_cidr, TagSpecifications=tagged("vpc"))
    vpc_id = vpc["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc_id, EnableDnsSupport={"Value": True})
    ec2.modify_vpc_attribute(VpcId=vpc_id, EnableDnsHostnames={"Value": True})

    private_table = ec2.create_route_table(VpcId=vpc_id, TagSpecifications=tagged("route-table"))
    private_table_id = private_table["RouteTable"]["RouteTableId"]

    def subnets(wanted: Subnets, table_id: str) -> list[str]:
        made = []
        for cidr, zone in wanted:
            subnet_id = ec2.create_subnet(
                VpcId=vpc_id,
                CidrBlock=cidr,
                AvailabilityZone=aws.region + zone,
                TagSpecifications=tagged("subnet"),
            )["Subnet"]["SubnetId"]
            ec2.associate_route_table(RouteTableId=table_id, SubnetId=subnet_id)
            made.append(str(subnet_id))
        return made

    private_subnets = subnets(layout.private, private_table_id)

    gateway_id = ec2.create_internet_gateway(TagSpecifications=tagged("internet-gateway"))[
        "InternetGateway"
    ]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=gateway_id, VpcId=vpc_id)
    public_table = ec2.create_route_table(VpcId=vpc_id, TagSpecifications=tagged("route-table"))
    public_table_id = public_table["RouteTable"]["RouteTableId"]
    ec2.create_route(
        RouteTableId=public_table_id, DestinationCidrBlock="0.0.0.0/0", GatewayId=gateway_id
    )
    public_subnets = subnets(layout.public, public_table_id)

    role = iam.create_role(
        RoleName=ROLE_NAME,
        AssumeRolePolicyDocument=json.dumps(TRUST_POLICY),
        Description="Pod execution role of vk-fargate's fake AWS",
    )["Role"]
    return World(
        endpoint_url=aws.endpoint_url,
        region=aws.region,
        vpc_id=str(vpc_id),
        private_subnets=private_subnets,
        public_subnets=public_subnets,
        role_arn=str(role["Arn"]),
    )


async def start(
    state_dir: Path,
    *,
    region: str = "eu-central-1",
    cluster_name: str = "vk-fargate",
    detach: bool = False,
    timeout: float = 60.0,
    layout: Layout | None = None,
) -> DevAws:
    """Start moto's server on a free loopback port, wait for it, seed it (``layout``:
    the VPC's CIDRs, by default ``Layout()``).

    The log goes to ``state_dir/moto.log``. A port taken between picking and binding
    makes the server exit; that is retried with another port.
    """
    log = state_dir / LOG_NAME
    for attempt in range(3):
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        process = spawn(port, log, detach=detach)
        try:
            await wait_ready(process, url, log, timeout)
            aws = session.AwsSettings(
                enabled=True, region=region, endpoint_url=url, cluster_name=cluster_name
            )
            layout = layout or Layout()
            world = await asyncio.to_thread(_seed, aws, layout)
            return DevAws(world=world, process=process, log=log, layout=layout)
        except errors.AwsError:
            exited_by_itself = process.poll() is not None  # e.g. the port was taken
            stop(process.pid, child=process)
            if not exited_by_itself or attempt == 2:
                raise
        except BaseException:
            stop(process.pid, child=process)
            raise
    raise AssertionError("unreachable")


def stop(pid: int, *, grace: float = 10.0, child: subprocess.Popen[bytes] | None = None) -> None:
    """SIGTERM the server's process group, SIGKILL it after ``grace`` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if child is not None and child.poll() is not None:
            break
        if child is None and not Path(f"/proc/{pid}").exists():
            break
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    if child is not None:
        child.wait()
