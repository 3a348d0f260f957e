"""The daemon's Service tables (``services``) with the host's commands recorded instead
of run: what is kept, refused, routed and written into which namespace, how often."""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path

import pytest

from vk_fargate import errors
from vk_fargate.fargate import nodes as fargate_nodes
from vk_fargate.fleet import models
from vk_fargate.fleetd import network, services, store

SUBNET = ipaddress.IPv4Network("192.168.20.0/24")
TABLE = models.ServiceTable.model_validate(
    {
        "service_cidrs": ["10.96.0.0/24"],
        "ports": [{"name": "default/web:http", "cluster_ip": "10.96.0.50", "port": 80,
                   "endpoints": ["192.168.20.5:80"]}],
    }
)  # fmt: skip


class Host:
    """The host's commands, recorded: the routes made and each namespace's writes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, netns: Path) -> None:
        self.routes: set[str] = set()
        self.writes: list[tuple[str, str]] = []
        self.failing: set[str] = set()
        self.running = 0
        self.most_at_once = 0
        self.foreign: str | None = None
        self.delay = 0.01  # seconds one iptables-restore takes
        netns.mkdir()
        monkeypatch.setattr(network, "netns_path", lambda key: str(netns / key))
        monkeypatch.setattr(network, "apply_rules", self.apply)
        monkeypatch.setattr(network, "foreign_route", lambda cidr, ours: self.foreign)
        monkeypatch.setattr(network, "add_unreachable", self.routes.add)
        monkeypatch.setattr(network, "remove_unreachable", self.routes.discard)

    async def apply(self, key: str, text: str) -> None:
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        await asyncio.sleep(self.delay)
        self.running -= 1
        if key in self.failing:
            raise errors.VkFargateError(f"iptables-restore failed in {key}")
        self.writes.append((key, text))


def target(netns: Path, n: int, cluster: str = "c1") -> services.Target:
    key = f"k{n}"
    (netns / key).touch()  # the namespace exists
    spec = models.MicroVMSpec.model_validate(
        {"vcpu_millis": 250, "mem_mib": 512, "labels": {fargate_nodes.CLUSTER_LABEL: cluster},
         "containers": [{"name": "app", "image": "busybox"}]}
    )  # fmt: skip
    now = models.now()
    status = models.MicroVMStatus(state="running", created_at=now, updated_at=now)
    return services.Target(key, models.MicroVM(id=f"vm{n}", spec=spec, status=status), "192.0.2.1")


def make(db: store.Store, mode: network.Mode = "netns") -> services.Services:
    return services.Services(db, networking=mode, subnets={"subnet-a": SUBNET})


@pytest.fixture
def db(tmp_path: Path) -> store.Store:
    return store.Store(tmp_path / "fleet.db")


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Host:
    return Host(monkeypatch, tmp_path / "netns")


async def test_a_table_is_kept_routed_and_written_once_per_namespace(
    db: store.Store, host: Host, tmp_path: Path
) -> None:
    table = make(db)
    targets = [target(tmp_path / "netns", n) for n in range(20)]
    assert await table.put("c1", TABLE, lambda: targets) == TABLE
    assert host.routes == {"10.96.0.0/24"}
    assert sorted(k for k, _ in host.writes) == sorted(t.key for t in targets)
    assert all("10.96.0.50/32" in text for _, text in host.writes)
    assert 1 < host.most_at_once <= services.PARALLEL
    await table.put("c1", TABLE, lambda: targets)  # the same again: nothing written
    assert len(host.writes) == 20
    assert make(db).get("c1") == TABLE  # a restarted daemon has it
    assert make(db).get("c2") == models.ServiceTable()


async def test_a_restart_rewrites_only_the_namespaces_without_their_rules(
    db: store.Store, host: Host, tmp_path: Path
) -> None:
    targets = [target(tmp_path / "netns", n) for n in range(3)]
    await make(db).put("c1", TABLE, lambda: targets)
    host.writes.clear()
    gone = target(tmp_path / "netns", 9)
    db.put_doc(services.RULES + gone.key, {"digest": "of a namespace gone meanwhile"})
    again = make(db)  # the daemon restarted
    await again.restore(targets[:2])
    assert host.writes == []
    assert set(db.docs(services.RULES)) == {"k0", "k1"}  # k2 and k9 not among the survivors
    await again.program(targets[2], fresh=True)  # provisioned again: its namespace is new
    assert [k for k, _ in host.writes] == ["k2"]


async def test_one_namespace_failing_leaves_the_others_programmed(
    db: store.Store, host: Host, tmp_path: Path
) -> None:
    targets = [target(tmp_path / "netns", n) for n in range(3)]
    host.failing = {"k1"}
    await make(db).put("c1", TABLE, lambda: targets)
    assert sorted(k for k, _ in host.writes) == ["k0", "k2"]


async def test_a_namespace_not_made_yet_is_left_to_its_provisioning(
    db: store.Store, host: Host, tmp_path: Path
) -> None:
    early = target(tmp_path / "netns", 0)
    (tmp_path / "netns" / early.key).unlink()
    table = make(db)
    await table.put("c1", TABLE, lambda: [early])
    assert host.writes == []
    await table.program(early, fresh=True)  # as ``provision`` calls it
    assert [k for k, _ in host.writes] == ["k0"]


async def test_a_new_namespace_without_routes_or_table_is_not_written(
    db: store.Store, host: Host, tmp_path: Path
) -> None:
    await make(db).program(target(tmp_path / "netns", 0, cluster="none"), fresh=True)
    assert host.writes == []


async def test_ranges_no_table_lists_any_more_are_unrouted(
    db: store.Store, host: Host, tmp_path: Path
) -> None:
    table = make(db)
    await table.put("c1", TABLE, list)
    other = TABLE.model_copy(update={"service_cidrs": ["10.96.0.0/24", "10.100.0.0/16"]})
    await table.put("c2", other, list)
    assert host.routes == {"10.96.0.0/24", "10.100.0.0/16"}
    await table.put("c2", models.ServiceTable(), list)
    assert host.routes == {"10.96.0.0/24"}  # c1 still lists it
    host.routes.clear()  # a reboot of the host
    await make(db).restore([])
    assert host.routes == {"10.96.0.0/24"}
    await make(db).close(remove_routes=True)
    assert host.routes == set()


@pytest.mark.parametrize("cidr", ["192.168.0.0/16", "192.168.20.128/25"])
async def test_a_range_overlapping_a_subnet_of_the_fleet_is_a_conflict_and_not_kept(
    db: store.Store, host: Host, cidr: str
) -> None:
    table = make(db)
    with pytest.raises(errors.Conflict, match="subnet-a"):
        await table.put("c1", models.ServiceTable(service_cidrs=[cidr]), list)
    assert table.get("c1") == models.ServiceTable()
    assert host.routes == set()


async def test_a_range_overlapping_a_route_of_the_host_is_a_conflict(
    db: store.Store, host: Host
) -> None:
    host.foreign = "route to 10.96.0.0/12 (eth1)"
    with pytest.raises(errors.Conflict, match="eth1"):
        await make(db).put("c1", TABLE, list)


async def test_without_root_tables_are_kept_and_nothing_is_programmed(
    db: store.Store, host: Host, tmp_path: Path
) -> None:
    table = make(db, "nominal")
    assert await table.put("c1", TABLE, lambda: [target(tmp_path / "netns", 0)]) == TABLE
    assert table.get("c1") == TABLE
    assert host.routes == set() and host.writes == []


async def test_a_put_waits_for_its_namespaces_only_so_long_the_rest_goes_on(
    db: store.Store, host: Host, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services, "PUT_WAIT", 0.05)
    host.delay = 0.04  # 40 namespaces, 8 at a time: 0.2 s
    targets = [target(tmp_path / "netns", n) for n in range(40)]
    table = make(db)
    began = asyncio.get_running_loop().time()
    await table.put("c1", TABLE, lambda: targets)
    assert asyncio.get_running_loop().time() - began < 0.15
    assert len(host.writes) < 40
    while len(host.writes) < 40:
        await asyncio.sleep(0.01)
    await table.close(remove_routes=False)


async def test_tables_put_during_a_pass_are_written_together_by_the_next(
    db: store.Store, host: Host, tmp_path: Path
) -> None:
    host.delay = 0.02
    targets = [target(tmp_path / "netns", n) for n in range(8)]
    table = make(db)
    versions = [
        TABLE.model_copy(update={"ports": [TABLE.ports[0].model_copy(update={"port": 80 + n})]})
        for n in range(6)
    ]
    await asyncio.gather(*(table.put("c1", v, lambda: targets) for v in versions))
    written = [text for key, text in host.writes if key == "k0"]
    assert 1 <= len(written) <= 2, len(written)  # not one write per put
    assert "--dport 85 " in written[-1]  # the last table put
    assert all(text == written[-1] for key, text in host.writes[-8:])
