"""Pod volumes in the real fleetd (process runtime, real runc): files volumes laid out
as the kubelet's atomic writer does and swapped by PUT .../volumes/{name}, emptyDirs
on disk and in memory, subPath, read-only mounts, pending volumes, the disk size
limit's eviction, write-only contents, a restart of fleetd, and nothing left after a
delete."""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests import waiting
from tests.fleetd import helpers
from vk_fargate import errors
from vk_fargate.devcluster import fleet as devfleet
from vk_fargate.devcluster import processes
from vk_fargate.devcluster import registry as devregistry
from vk_fargate.fleet import client, models

pytestmark = pytest.mark.e2e


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def files(*items: tuple[str, str, int | None], **fields: Any) -> dict[str, Any]:
    return {
        "items": [{"path": p, "content": b64(c), "mode": m} for p, c, m in items],
        **fields,
    }


async def put_files(url: str, token: str, vm_id: str, volume: str, body: Any) -> int:
    """PUT a volume's files; the status (the text of an error goes to the assertion)."""
    async with (
        aiohttp.ClientSession(url, headers={"Authorization": f"Bearer {token}"}) as http,
        http.put(f"/v1/microvms/{vm_id}/volumes/{volume}", json=body) as answer,
    ):
        return answer.status


async def logs(api: client.FleetClient, vm_id: str, name: str) -> str:
    return b"".join([chunk async for chunk in api.logs(vm_id, name)]).decode()


async def says(api: client.FleetClient, vm_id: str, name: str, text: str) -> str:
    async def found() -> str | None:
        out = await logs(api, vm_id, name)
        return out if text in out else None

    return await waiting.until(found, timeout=60, what=f"{text!r} in {name}'s log")


def mounts_of(vm_id: str) -> list[str]:
    return [line for line in Path("/proc/mounts").read_text().splitlines() if vm_id in line]


async def test_a_files_volume_is_read_swapped_at_once_and_a_sub_path_keeps_its_file(
    fleet: devfleet.Fleet, fleet_client: client.FleetClient
) -> None:
    vm_id = helpers.new_id()
    config = files(("a.txt", "one", None), ("dir/b.txt", "bee", 0o600), default_mode=0o640)
    loop = (
        "stat -L -c 'mode %a %n' /cfg/a.txt /cfg/dir/b.txt; touch /cfg/new || echo cfg is ro; "
        'while true; do echo "now $(cat /cfg/a.txt) sub $(cat /one.txt) '
        "ls $(ls /cfg | tr '\\n' ,)\"; sleep 0.2; done"
    )
    app = helpers.shell(
        "app",
        loop,
        volume_mounts=[
            {"name": "config", "mount_path": "/cfg"},
            {"name": "config", "mount_path": "/one.txt", "sub_path": "a.txt"},
        ],
    )
    spec = helpers.spec(app, volumes=[{"name": "config", "files": config}])
    created = await fleet_client.put_microvm(vm_id, spec)
    assert [i.content for i in created.spec.volumes[0].files.items] == ["", ""]  # type: ignore[union-attr]
    first = await says(fleet_client, vm_id, "app", "now one sub one ls a.txt,dir,")
    assert "mode 640 /cfg/a.txt" in first and "mode 600 /cfg/dir/b.txt" in first
    assert "cfg is ro" in first  # files volumes are bound read-only, as the kubelet does
    folder = fleet.config.parent / "state" / "microvms" / vm_id / "volumes" / "config"
    data = str((folder / "..data").readlink())
    assert data.startswith("..") and (folder / data / "dir" / "b.txt").is_file()
    assert str((folder / "a.txt").readlink()) == "..data/a.txt"

    # The same spec with other contents is the same spec: 200, nothing changes.
    again = files(("a.txt", "other", None), ("dir/b.txt", "bee", 0o600), default_mode=0o640)
    same = spec.model_copy(
        update={"volumes": [models.Volume.model_validate({"name": "config", "files": again})]}
    )
    assert (await fleet_client.put_microvm(vm_id, same)).spec == created.spec
    fewer = spec.model_copy(update={"volumes": []})
    with pytest.raises(errors.InvalidSpec):
        await fleet_client.put_microvm(vm_id, fewer)  # its mounts would name no volume
    moved = [c.model_copy(update={"volume_mounts": c.volume_mounts[:1]}) for c in spec.containers]
    with pytest.raises(errors.Conflict, match=r"changed: containers\[app\]\.volume_mounts"):
        await fleet_client.put_microvm(vm_id, spec.model_copy(update={"containers": moved}))

    update = files(("a.txt", "two", None), ("c.txt", "sea", None))
    assert await put_files(fleet.url, fleet.token, vm_id, "config", update) == 204
    await says(fleet_client, vm_id, "app", "now two sub one ls a.txt,c.txt,")
    held = {p.name for p in folder.iterdir() if p.name.startswith("..")}
    assert held == {"..data", str((folder / "..data").readlink())}  # the old set is gone
    vm = await fleet_client.get_microvm(vm_id)
    assert [(i.path, i.content) for i in vm.spec.volumes[0].files.items] == [  # type: ignore[union-attr]
        ("a.txt", ""),
        ("c.txt", ""),
    ]
    await fleet_client.delete_microvm(vm_id, grace_seconds=0)


async def test_empty_dirs_shared_in_memory_read_only_and_by_sub_path(
    fleet: devfleet.Fleet, fleet_client: client.FleetClient
) -> None:
    vm_id = helpers.new_id()
    init = helpers.shell(
        "init",
        "echo from-init > /work/hello",
        image="busybox",
        volume_mounts=[{"name": "work", "mount_path": "/work"}],
    )
    app = helpers.shell(
        "app",
        "cat /work/hello; grep ' /mem ' /proc/mounts; echo x > /mem/f && echo mem ok; "
        "touch /ro/x || echo ro refused; echo deep > /sub/f && echo sub ok; exec sleep 300",
        volume_mounts=[
            {"name": "work", "mount_path": "/work"},
            {"name": "mem", "mount_path": "/mem"},
            {"name": "work", "mount_path": "/ro", "read_only": True},
            {"name": "work", "mount_path": "/sub", "sub_path": "made/here"},
        ],
    )
    spec = helpers.spec(
        app,
        init_containers=[init],
        volumes=[
            {"name": "work", "empty_dir": {}},
            {"name": "mem", "empty_dir": {"medium": "Memory", "size_limit_mib": 64}},
        ],
    )
    await fleet_client.put_microvm(vm_id, spec)
    out = await says(fleet_client, vm_id, "app", "sub ok")
    assert "from-init" in out
    assert "tmpfs /mem tmpfs" in out and "size=65536k" in out
    assert "mem ok" in out and "ro refused" in out
    work = fleet.config.parent / "state" / "microvms" / vm_id / "volumes" / "work"
    assert (work / "made" / "here" / "f").read_text() == "deep\n"
    assert (work / "made" / "here").stat().st_mode & 0o777 == 0o777  # the volume's mode
    await fleet_client.delete_microvm(vm_id, grace_seconds=0)
    await waiting.until(lambda: helpers.forgotten(fleet_client, vm_id), what="the purge")
    assert not work.exists() and mounts_of(vm_id) == []


async def test_a_link_a_container_plants_does_not_lead_a_sub_path_out_of_its_volume(
    fleet: devfleet.Fleet, fleet_client: client.FleetClient
) -> None:
    """CVE-2017-1002101's case: a symlink to the host's /etc in an emptyDir, then a
    container mounting it as subPath gets a folder of the volume, not the host's."""
    vm_id = helpers.new_id()
    init = helpers.shell(
        "plant",
        "ln -s /etc /work/esc && ln -s ../../../../../../etc /work/up",
        image="busybox",
        volume_mounts=[{"name": "work", "mount_path": "/work"}],
    )
    app = helpers.shell(
        "app",
        "for d in /x /y; do test -e $d/hostname && echo $d leaked || echo $d contained; done; "
        "exec sleep 300",
        volume_mounts=[
            {"name": "work", "mount_path": "/x", "sub_path": "esc"},
            {"name": "work", "mount_path": "/y", "sub_path": "up/ssl"},
        ],
    )
    spec = helpers.spec(app, init_containers=[init], volumes=[{"name": "work", "empty_dir": {}}])
    await fleet_client.put_microvm(vm_id, spec)
    out = await says(fleet_client, vm_id, "app", "/y ")
    assert "/x contained" in out and "/y contained" in out, out
    work = fleet.config.parent / "state" / "microvms" / vm_id / "volumes" / "work"
    assert (work / "etc").is_dir() and (work / "etc" / "ssl").is_dir()  # made inside it
    await fleet_client.delete_microvm(vm_id, grace_seconds=0)


async def test_a_container_given_a_new_image_in_place_keeps_its_volumes(
    fleet: devfleet.Fleet, fleet_client: client.FleetClient
) -> None:
    vm_id = helpers.new_id()
    app = helpers.shell(
        "app",
        'echo "run $(cat /cfg/k) $(cat /one)"; exec sleep 300',
        volume_mounts=[
            {"name": "cfg", "mount_path": "/cfg"},
            {"name": "cfg", "mount_path": "/one", "sub_path": "k"},
        ],
    )
    spec = helpers.spec(app, volumes=[{"name": "cfg", "files": files(("k", "first", None))}])
    spec = spec.model_copy(update={"termination_grace_seconds": 1})
    await fleet_client.put_microvm(vm_id, spec)
    await says(fleet_client, vm_id, "app", "run first first")
    assert (
        await put_files(fleet.url, fleet.token, vm_id, "cfg", files(("k", "second", None))) == 204
    )
    rolled = [c.model_copy(update={"image": "busybox:latest"}) for c in spec.containers]
    await fleet_client.put_microvm(vm_id, spec.model_copy(update={"containers": rolled}))
    await helpers.until_vm(
        fleet_client,
        vm_id,
        lambda v: (
            helpers.container(v, "app").restart_count == 1
            and helpers.container(v, "app").state == "running"
        ),
        what="app restarted from its new image",
    )
    # The new instance binds the volume again, its subPath resolved anew at its start.
    await says(fleet_client, vm_id, "app", "run second second")
    await fleet_client.delete_microvm(vm_id, grace_seconds=0)


async def test_a_pending_volume_holds_the_pod_in_container_creating_until_its_files_come(
    fleet: devfleet.Fleet, fleet_client: client.FleetClient
) -> None:
    vm_id = helpers.new_id()
    init = helpers.shell("init", "echo init ran", image="busybox")
    app = helpers.shell(
        "app",
        "cat /cfg/key; echo; exec sleep 300",
        volume_mounts=[{"name": "cfg", "mount_path": "/cfg"}],
    )
    side = helpers.shell("side", "echo side up; exec sleep 300")  # mounts nothing: waits too
    spec = helpers.spec(
        app,
        side,
        init_containers=[init],
        volumes=[{"name": "cfg", "files": {"pending": True}}, {"name": "tmp", "empty_dir": {}}],
    )
    await fleet_client.put_microvm(vm_id, spec)
    vm = await helpers.until_vm(
        fleet_client,
        vm_id,
        lambda v: helpers.container(v, "app").reason == "ContainerCreating",
        what="ContainerCreating",
    )
    assert vm.status.state == "provisioning"
    assert {helpers.container(vm, n).reason for n in ("init", "app", "side")} == {
        "ContainerCreating"
    }
    assert all(c.state == "waiting" for c in [*vm.status.init_containers, *vm.status.containers])

    url, token = fleet.url, fleet.token
    assert await put_files(url, token, vm_id, "nope", files()) == 404
    assert await put_files(url, token, "no-such-vm", "cfg", files()) == 404
    assert await put_files(url, token, vm_id, "tmp", files()) == 409
    assert await put_files(url, token, vm_id, "cfg", {"items": [{"path": "k"}], "x": 1}) == 422
    assert await put_files(url, token, vm_id, "cfg", {"items": [{"path": "../k"}]}) == 422
    bad = {"items": [{"path": "key", "content": "not base64!"}]}
    assert await put_files(url, token, vm_id, "cfg", bad) == 422
    assert helpers.container(await fleet_client.get_microvm(vm_id), "app").state == "waiting"

    assert await put_files(url, token, vm_id, "cfg", files(("key", "value-1", None))) == 204
    await says(fleet_client, vm_id, "app", "value-1")
    await says(fleet_client, vm_id, "init", "init ran")
    await says(fleet_client, vm_id, "side", "side up")
    await fleet_client.delete_microvm(vm_id, grace_seconds=3)
    assert await put_files(url, token, vm_id, "cfg", files(("key", "v2", None))) == 409
    await fleet_client.delete_microvm(vm_id, grace_seconds=0)


async def test_file_contents_are_write_only_and_gone_with_the_microvm(
    fleet: devfleet.Fleet, fleet_client: client.FleetClient
) -> None:
    """Contents reach the container, but no answer, event or stored row; once the
    microVM is deleted nothing of them stays and no mount is left."""
    vm_id = helpers.new_id()
    marker = f"s3cret-{helpers.new_id()}"
    later = f"l4ter-{helpers.new_id()}"
    events_from = (await fleet_client.list_microvms()).cursor
    app = helpers.shell(
        "app",
        "while true; do sha256sum /secret/token; sleep 0.2; done",
        volume_mounts=[{"name": "secret", "mount_path": "/secret"}],
    )
    spec = helpers.spec(app, volumes=[{"name": "secret", "files": files(("token", marker, 0o400))}])
    await fleet_client.put_microvm(vm_id, spec)
    await says(fleet_client, vm_id, "app", hashlib.sha256(marker.encode()).hexdigest())
    assert (
        await put_files(fleet.url, fleet.token, vm_id, "secret", files(("token", later, None)))
        == 204
    )
    await says(fleet_client, vm_id, "app", hashlib.sha256(later.encode()).hexdigest())
    state = fleet.config.parent / "state"
    folder = state / "microvms" / vm_id / "volumes" / "secret"
    assert any(f"{folder} tmpfs" in line for line in mounts_of(vm_id)), mounts_of(vm_id)
    listed = (await fleet_client.list_microvms()).model_dump_json()
    assert marker not in listed and later not in listed

    def holding() -> list[str]:
        return [
            str(f)
            for f in state.rglob("*")
            if f.is_file()
            and not f.is_symlink()
            and not f.is_relative_to(folder)
            and (marker.encode() in f.read_bytes() or later.encode() in f.read_bytes())
        ]

    assert holding() == []  # the database, its log, spec.json: none holds them
    await fleet_client.delete_microvm(vm_id, grace_seconds=0)
    async for event in fleet_client.events(events_from):
        assert marker not in event.model_dump_json() and later not in event.model_dump_json()
        if event.type == "deleted" and event.microvm_id == vm_id:
            break
    assert not folder.exists() and mounts_of(vm_id) == [] and holding() == []


async def test_a_disk_empty_dir_over_its_size_limit_evicts_the_pod(
    tmp_path: Path, registry: devregistry.Registry
) -> None:
    """As the kubelet's eviction manager: containers killed at once, the microVM failed,
    Evicted, with its message, even when fleetd dies as it evicts."""
    config = devfleet.write_config(
        tmp_path, port=processes.free_ports(1)[0], registry=registry.host
    )
    document = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**document, "volume_check_seconds": 0.5}))
    fleet_proc = await devfleet.start(tmp_path, config=config)
    try:
        async with client.FleetClient(fleet_proc.url, fleet_proc.token) as api:
            vm_id = helpers.new_id()
            app = helpers.shell(
                "app",
                "dd if=/dev/zero of=/scratch/big bs=1024 count=2048 && echo written; "
                "exec sleep 300",
                volume_mounts=[{"name": "scratch", "mount_path": "/scratch"}],
            )
            spec = helpers.spec(
                app, volumes=[{"name": "scratch", "empty_dir": {"size_limit_mib": 1}}]
            )
            cursor = (await api.list_microvms()).cursor
            await api.put_microvm(vm_id, spec)
            async for event in api.events(cursor):  # the eviction is decided: fleetd dies
                if event.microvm is not None and event.microvm.status.reason == "Evicted":
                    break
        os.kill(fleet_proc.process.pid, signal.SIGKILL)
        fleet_proc.process.wait()
        fleet_proc = await devfleet.start(tmp_path, config=config)
        async with client.FleetClient(fleet_proc.url, fleet_proc.token) as api:
            vm = await helpers.until_vm(
                api, vm_id, lambda v: v.status.state == "failed", what="the eviction"
            )
            assert vm.status.reason == "Evicted"
            assert vm.status.message == (
                'Usage of EmptyDir volume "scratch" exceeds the limit "1Mi". '
            )
            await api.delete_microvm(vm_id, grace_seconds=0)
    finally:
        fleet_proc.stop()


async def test_volumes_outlive_a_restart_of_fleetd(
    tmp_path: Path, registry: devregistry.Registry
) -> None:
    vm_id = helpers.new_id()
    app = helpers.shell(
        "app",
        'echo kept > /mem/f; while true; do echo "now $(cat /cfg/k) $(cat /mem/f)"; '
        "sleep 0.2; done",
        volume_mounts=[
            {"name": "cfg", "mount_path": "/cfg"},
            {"name": "mem", "mount_path": "/mem"},
        ],
    )
    spec = helpers.spec(
        app,
        volumes=[
            {"name": "cfg", "files": files(("k", "before", None))},
            {"name": "mem", "empty_dir": {"medium": "Memory"}},
        ],
    )
    later_id = helpers.new_id()  # a pod still waiting for its files as fleetd dies
    later = helpers.spec(
        helpers.shell(
            "app",
            "cat /cfg/k; echo; exec sleep 300",
            volume_mounts=[{"name": "cfg", "mount_path": "/cfg"}],
        ),
        volumes=[{"name": "cfg", "files": {"pending": True}}],
    )
    fleet_proc = await devfleet.start(tmp_path / "fleet", registry=registry.host)
    try:
        async with client.FleetClient(fleet_proc.url, fleet_proc.token) as api:
            await api.put_microvm(vm_id, spec)
            await api.put_microvm(later_id, later)
            await says(api, vm_id, "app", "now before kept")
        os.kill(fleet_proc.process.pid, signal.SIGKILL)
        fleet_proc.process.wait()

        fleet_proc = await devfleet.start(tmp_path / "fleet", config=fleet_proc.config)
        async with client.FleetClient(fleet_proc.url, fleet_proc.token) as api:
            assert (await api.get_microvm(vm_id)).status.state == "running"
            url, token = fleet_proc.url, fleet_proc.token
            assert await put_files(url, token, vm_id, "cfg", files(("k", "after", None))) == 204
            await says(api, vm_id, "app", "now after kept")
            assert (await api.get_microvm(later_id)).status.state == "provisioning"
            assert await put_files(url, token, later_id, "cfg", files(("k", "came", None))) == 204
            await says(api, later_id, "app", "came")
            for done in (vm_id, later_id):
                await api.delete_microvm(done, grace_seconds=0)
                await waiting.until(
                    functools.partial(helpers.forgotten, api, done), what="the purge"
                )
                assert mounts_of(done) == []
    finally:
        fleet_proc.stop()


async def test_a_microvm_host_refuses_volumes(
    tmp_path: Path, registry: devregistry.Registry
) -> None:
    """A QEMU guest gets no pod volumes yet: a spec with some goes to process hosts
    only, and a fleet without any refuses it (422, which the provider turns into
    FailedScheduling), rather than run it without them."""
    host = {"id": "metal-vm", "zone": devfleet.ZONES[0], "vcpus": 4, "mem_mib": 8192}
    fleet_proc = await devfleet.start(
        tmp_path, hosts=[{**host, "runtime": "microvm"}], registry=registry.host
    )
    try:
        async with client.FleetClient(fleet_proc.url, fleet_proc.token) as api:
            spec = helpers.spec(
                helpers.shell("app", "sleep 300"), volumes=[{"name": "x", "empty_dir": {}}]
            )
            with pytest.raises(errors.InvalidSpec, match="volumes run on process hosts only"):
                await api.put_microvm(helpers.new_id(), spec)
            assert (await api.list_microvms()).items == []
    finally:
        fleet_proc.stop()
