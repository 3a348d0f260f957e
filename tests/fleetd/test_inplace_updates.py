"""A running microVM's container image changed in place, as a kubelet does when a
running pod's image changes: only that container restarts, from the new image; any
other change is a 409 naming it; the new spec outlives a restart of fleetd; a new image
that cannot be pulled leaves the container waiting in ErrImagePull/ImagePullBackOff."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from tests import pushing, waiting
from tests.fleetd import helpers
from vk_fargate import errors, settings
from vk_fargate.devcluster import fleet as devfleet
from vk_fargate.devcluster import images
from vk_fargate.devcluster import registry as devregistry
from vk_fargate.fleet import client, models

pytestmark = pytest.mark.e2e


async def push_saying(registry: str, tmp_path: Path, word: str) -> str:
    """A busybox image whose own command says ``word`` (and ``$TOKEN``) and sleeps,
    pushed; its name."""
    layout = tmp_path / f"layout-{word}"
    shutil.copytree(images.build(settings.load().cache), layout)
    image = f"myorg/say-{helpers.new_id()}:{word}"
    for argv in (
        ["umoci", "config", "--image", f"{layout}:busybox", "--tag", word,
         "--config.cmd", "sh", "--config.cmd", "-c",
         "--config.cmd", f"echo said {word} with $TOKEN; exec sleep 300"],
        ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:{word}",
         f"docker://{registry}/{image}"],
    ):  # fmt: skip
        done = await asyncio.create_subprocess_exec(*argv)
        assert await asyncio.wait_for(done.wait(), 120) == 0, argv
    return image


def two_containers(app_image: str, *command: str) -> models.MicroVMSpec:
    """``app`` of ``app_image`` (its own command unless ``command``) beside ``side``."""
    return helpers.spec(
        {"name": "app", "image": app_image, "command": list(command)},
        helpers.shell("side", "echo side up; exec sleep 300"),
        termination_grace_seconds=2,
    )


def with_image(spec: models.MicroVMSpec, name: str, image: str) -> models.MicroVMSpec:
    containers = [
        c.model_copy(update={"image": image}) if c.name == name else c for c in spec.containers
    ]
    return spec.model_copy(update={"containers": containers})


async def running(api: client.FleetClient, vm_id: str, restarts: int = 0) -> models.MicroVM:
    def ready(vm: models.MicroVM) -> bool:
        app = helpers.container(vm, "app")
        side = helpers.container(vm, "side")
        return app.state == "running" and app.restart_count == restarts and side.state == "running"

    return await helpers.until_vm(
        api, vm_id, ready, timeout=60, what=f"app running after {restarts} restarts"
    )


async def log_text(api: client.FleetClient, vm_id: str, name: str, **options: object) -> str:
    return b"".join([chunk async for chunk in api.logs(vm_id, name, **options)]).decode()


async def said(api: client.FleetClient, vm_id: str, word: str, **options: object) -> str:
    async def found() -> str | None:
        text = await log_text(api, vm_id, "app", **options)
        return text if f"said {word}" in text else None

    return await waiting.until(found, timeout=30, what=f"'said {word}' in app's log")


async def test_an_image_change_restarts_only_that_container_from_the_new_image(
    fleet_client: client.FleetClient, registry: devregistry.Registry, tmp_path: Path
) -> None:
    first = await push_saying(registry.host, tmp_path, "first")
    second = await push_saying(registry.host, tmp_path, "second")
    vm_id = helpers.new_id()
    spec = two_containers(first)
    await fleet_client.put_microvm(vm_id, spec)
    before = await running(fleet_client, vm_id)
    await said(fleet_client, vm_id, "first")

    updated = await fleet_client.put_microvm(vm_id, with_image(spec, "app", second))
    assert [c.image for c in updated.spec.containers] == [second, "busybox"]
    after = await running(fleet_client, vm_id, restarts=1)
    app, was = helpers.container(after, "app"), helpers.container(before, "app")
    assert app.container_id and app.container_id != was.container_id
    assert app.image_id and app.image_id != was.image_id
    assert app.last_termination is not None  # the old instance, stopped for the new one
    assert helpers.container(after, "side") == helpers.container(before, "side")  # untouched
    # The new image really runs: its own command says so; the previous instance said first.
    assert "said first" not in await said(fleet_client, vm_id, "second")
    assert "said first" in await log_text(fleet_client, vm_id, "app", previous=True)
    await fleet_client.delete_microvm(vm_id, grace_seconds=0)


async def test_a_change_other_than_images_is_a_409_naming_it(
    fleet_client: client.FleetClient,
) -> None:
    vm_id = helpers.new_id()
    spec = two_containers("busybox", "sleep", "300")
    await fleet_client.put_microvm(vm_id, spec)
    before = await running(fleet_client, vm_id)
    env = [models.EnvVar(name="MODE", value="new")]
    changed = spec.model_copy(
        update={
            "containers": [
                c.model_copy(update={"env": env, "image": "nginx"}) if c.name == "side" else c
                for c in spec.containers
            ],
            "mem_mib": 1024,
        }
    )
    with pytest.raises(errors.Conflict) as caught:
        await fleet_client.put_microvm(vm_id, changed)
    assert caught.value.message == (
        f"microVM {vm_id} is running; only container images can change in place "
        "(changed: mem_mib, containers[side].env)"
    )
    fewer = spec.model_copy(update={"containers": spec.containers[:1]})
    with pytest.raises(errors.Conflict, match=r"\(changed: containers\)"):
        await fleet_client.put_microvm(vm_id, fewer)
    vm = await fleet_client.get_microvm(vm_id)
    assert vm.spec == spec and helpers.container(vm, "side") == helpers.container(before, "side")
    # A microVM on its way out takes no change at all.
    await fleet_client.delete_microvm(vm_id, grace_seconds=30)
    with pytest.raises(errors.Conflict, match="is stopping; its spec can no longer change"):
        await fleet_client.put_microvm(vm_id, with_image(spec, "app", "nginx"))
    await fleet_client.delete_microvm(vm_id, grace_seconds=0)


async def test_the_same_image_change_twice_restarts_once(
    fleet: devfleet.Fleet, fleet_client: client.FleetClient
) -> None:
    vm_id = helpers.new_id()
    spec = two_containers("busybox", "sleep", "300")
    await fleet_client.put_microvm(vm_id, spec)
    await running(fleet_client, vm_id)
    new = with_image(spec, "app", "busybox:latest")  # another name: a change all the same
    auth = {"Authorization": f"Bearer {fleet.token}"}
    async with aiohttp.ClientSession(fleet.url, headers=auth) as http:
        async with http.put(f"/v1/microvms/{vm_id}", json=new.model_dump(mode="json")) as r:
            assert r.status == 200, await r.text()
            assert models.MicroVM.model_validate(await r.json()).spec == new
        once = await running(fleet_client, vm_id, restarts=1)
        async with http.put(f"/v1/microvms/{vm_id}", json=new.model_dump(mode="json")) as r:
            assert r.status == 200, await r.text()
    await asyncio.sleep(3)  # a restart would have begun by now
    still = await fleet_client.get_microvm(vm_id)
    assert helpers.container(still, "app") == helpers.container(once, "app")
    await fleet_client.delete_microvm(vm_id, grace_seconds=0)


async def test_the_new_image_outlives_a_restart_of_fleetd(
    tmp_path: Path, registry: devregistry.Registry
) -> None:
    first = await push_saying(registry.host, tmp_path, "first")
    second = await push_saying(registry.host, tmp_path, "second")
    vm_id = helpers.new_id()
    token = [models.EnvVar(name="TOKEN", value="s3cret", secret=True)]
    plain = two_containers(first)
    app, side = plain.containers
    spec = plain.model_copy(update={"containers": [app.model_copy(update={"env": token}), side]})
    bundles = tmp_path / "fleet" / "state" / "microvms" / vm_id / "bundles"
    fleet_proc = await devfleet.start(tmp_path / "fleet", registry=registry.host)
    try:
        async with client.FleetClient(fleet_proc.url, fleet_proc.token) as api:
            await api.put_microvm(vm_id, spec)
            await running(api, vm_id)
            await api.put_microvm(vm_id, with_image(spec, "app", second))
            before = await running(api, vm_id, restarts=1)
            # A fresh root filesystem of its own; the old one went with the old instance.
            held = sorted(p.name for p in bundles.iterdir())
            assert len(held) == 2 and held[0].startswith("app.") and held[1] == "side", held
        os.kill(fleet_proc.process.pid, signal.SIGKILL)
        fleet_proc.process.wait()

        fleet_proc = await devfleet.start(tmp_path / "fleet", config=fleet_proc.config)
        async with client.FleetClient(fleet_proc.url, fleet_proc.token) as api:
            vm = await api.get_microvm(vm_id)
            assert [c.image for c in vm.spec.containers] == [second, "busybox"]
            again = await api.put_microvm(vm_id, with_image(spec, "app", second))  # a no-op
            assert again.spec == vm.spec
            await asyncio.sleep(3)  # a roll back to the first image would have begun
            after = await running(api, vm_id, restarts=1)
            assert helpers.container(after, "app") == helpers.container(before, "app")
            await said(api, vm_id, "second with s3cret")
            # The restarted fleetd rolls too, secret values included.
            await api.put_microvm(vm_id, spec)
            await running(api, vm_id, restarts=2)
            await said(api, vm_id, "first with s3cret")
    finally:
        fleet_proc.stop()


async def test_a_new_image_that_cannot_be_pulled_stops_the_old_container_and_waits(
    fleet_client: client.FleetClient, registry: devregistry.Registry
) -> None:
    """As the kubelet: the old container is stopped, then the pull fails; the container
    waits in ErrImagePull, then ImagePullBackOff, and runs once the image exists."""
    late = f"myorg/late-{helpers.new_id()}:1"
    vm_id = helpers.new_id()
    spec = two_containers("busybox", "sleep", "300")
    await fleet_client.put_microvm(vm_id, spec)
    before = await running(fleet_client, vm_id)
    cursor = (await fleet_client.list_microvms()).cursor
    await fleet_client.put_microvm(vm_id, with_image(spec, "app", late))

    async def backing_off() -> models.MicroVM:
        reasons = []
        async for event in fleet_client.events(cursor):
            if event.microvm_id != vm_id or event.microvm is None:
                continue
            app = helpers.container(event.microvm, "app")
            if app.state == "waiting" and app.reason in ("ErrImagePull", "ImagePullBackOff"):
                reasons.append(app.reason)
            if "ImagePullBackOff" in reasons:
                assert reasons[0] == "ErrImagePull", reasons
                return event.microvm
        raise AssertionError("the event stream ended")

    vm = await asyncio.wait_for(backing_off(), 60)
    app = helpers.container(vm, "app")
    assert app.restart_count == 1 and app.last_termination is not None  # the old one stopped
    assert app.message == f'Back-off pulling image "{late}"'
    assert vm.status.state == "running"
    assert helpers.container(vm, "side") == helpers.container(before, "side")
    await pushing.push_busybox(registry.host, late)
    after = await running(fleet_client, vm_id, restarts=1)
    assert late.split(":")[0] in (helpers.container(after, "app").image_id or "")
    await fleet_client.delete_microvm(vm_id, grace_seconds=0)


async def test_a_microvm_waiting_for_a_bad_image_takes_a_good_one_at_once(
    tmp_path: Path, registry: devregistry.Registry
) -> None:
    """``kubectl set image`` on a pod stuck in ImagePullBackOff: the microVM, still
    provisioning, pulls the new image without waiting out its back-off (here 300 s)."""
    fleet_proc = await devfleet.start(tmp_path, registry=registry.host, backoff=(300.0, 300.0))
    try:
        async with client.FleetClient(fleet_proc.url, fleet_proc.token) as api:
            vm_id = helpers.new_id()
            spec = two_containers(f"myorg/typo-{helpers.new_id()}:1", "sleep", "300")
            await api.put_microvm(vm_id, spec)
            await helpers.until_vm(
                api,
                vm_id,
                lambda v: (
                    helpers.container(v, "app").reason in ("ErrImagePull", "ImagePullBackOff")
                ),
                what="the typo in ErrImagePull or ImagePullBackOff",
            )
            fixed = await api.put_microvm(vm_id, with_image(spec, "app", "busybox"))
            assert fixed.spec.containers[0].image == "busybox"
            vm = await running(api, vm_id)
            assert "library/busybox" in (helpers.container(vm, "app").image_id or "")
    finally:
        fleet_proc.stop()


async def test_a_microvm_host_refuses_an_image_change(
    tmp_path: Path, registry: devregistry.Registry
) -> None:
    """A QEMU guest boots its containers' root filesystems from its initramfs: it cannot
    take a new image in place, and says so (whether or not QEMU is installed here)."""
    host = {"id": "metal-vm", "zone": devfleet.ZONES[0], "vcpus": 4, "mem_mib": 8192}
    fleet_proc = await devfleet.start(
        tmp_path, hosts=[{**host, "runtime": "microvm"}], registry=registry.host
    )
    try:
        async with client.FleetClient(fleet_proc.url, fleet_proc.token) as api:
            vm_id = helpers.new_id()
            spec = two_containers("busybox", "sleep", "300")
            await api.put_microvm(vm_id, spec)
            with pytest.raises(errors.Conflict, match="runs on a microvm host"):
                await api.put_microvm(vm_id, with_image(spec, "app", "busybox:latest"))
            assert (await api.get_microvm(vm_id)).spec == spec
            await api.delete_microvm(vm_id, grace_seconds=0)
    finally:
        fleet_proc.stop()


async def test_a_sidecars_image_change_restarts_it_from_the_new_image(
    fleet_client: client.FleetClient, registry: devregistry.Registry, tmp_path: Path
) -> None:
    """A sidecar (an init container with restart_policy Always) runs for the microVM's
    life, so, as the kubelet, a new image restarts it; the app stays as it was."""
    first = await push_saying(registry.host, tmp_path, "first")
    second = await push_saying(registry.host, tmp_path, "second")
    vm_id = helpers.new_id()
    logs = models.Container(name="logs", image=first, restart_policy="Always")
    spec = helpers.spec(
        helpers.shell("app", "exec sleep 300"),
        init_containers=[logs.model_dump()],
        termination_grace_seconds=2,
    )

    def runs(restarts: int) -> Callable[[models.MicroVM], bool]:
        def check(vm: models.MicroVM) -> bool:
            side = helpers.container(vm, "logs")
            app = helpers.container(vm, "app")
            return side.state == app.state == "running" and side.restart_count == restarts

        return check

    await fleet_client.put_microvm(vm_id, spec)
    before = await helpers.until_vm(fleet_client, vm_id, runs(0), timeout=60)
    changed = spec.model_copy(
        update={"init_containers": [logs.model_copy(update={"image": second})]}
    )
    await fleet_client.put_microvm(vm_id, changed)
    after = await helpers.until_vm(fleet_client, vm_id, runs(1), timeout=60)
    side = helpers.container(after, "logs")
    assert side.image_id and side.image_id != helpers.container(before, "logs").image_id
    assert helpers.container(after, "app") == helpers.container(before, "app")  # untouched

    async def says_second() -> str | None:
        text = await log_text(fleet_client, vm_id, "logs")
        return text if "said second" in text else None

    await waiting.until(says_second, timeout=30, what="'said second' in the sidecar's log")
    await fleet_client.delete_microvm(vm_id, grace_seconds=0)
