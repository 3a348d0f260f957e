"""Pulls as a host's image service makes them, counted in a real registry's access log:
twenty microVMs of one new image download each blob once, an image sharing its base
layer downloads only what it does not share, and a rebuilt tag is pulled anew."""

from __future__ import annotations

import asyncio
import collections
import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests import waiting
from tests.fleetd import helpers
from vk_fargate import settings
from vk_fargate.devcluster import fleet as devfleet
from vk_fargate.devcluster import images
from vk_fargate.devcluster import registry as devregistry
from vk_fargate.fleet import client

pytestmark = pytest.mark.e2e
BLOB_GET = re.compile(
    r'"GET /v2/(?P<repo>[^ ]+)/blobs/(?P<digest>sha256:[0-9a-f]{64}) HTTP/[0-9.]+" 200'
)


def blob_gets(registry: devregistry.Registry) -> collections.Counter[tuple[str, str]]:
    found = (m.group("repo", "digest") for m in BLOB_GET.finditer(registry.log.read_text()))
    return collections.Counter(found)


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[tuple[devregistry.Registry, devfleet.Fleet]]:
    registry = await devregistry.start_filled(
        tmp_path / "registry", settings.load().cache, log_level="info"
    )
    try:
        fleet = await devfleet.start(tmp_path / "fleet", registry=registry.host)
        try:
            yield registry, fleet
        finally:
            fleet.stop()
    finally:
        registry.stop()


async def _run(api: client.FleetClient, image: str, count: int, **container: object) -> list[str]:
    ids = [helpers.new_id() for _ in range(count)]
    spec = helpers.spec({"name": "app", "image": image, **container})
    await asyncio.gather(*(api.put_microvm(i, spec) for i in ids))
    for vm_id in ids:
        await helpers.until_vm(
            api, vm_id, lambda v: helpers.container(v, "app").state == "running", timeout=120
        )
    return ids


async def test_one_download_per_blob_and_shared_layers_are_not_downloaded_again(
    stack: tuple[devregistry.Registry, devfleet.Fleet], tmp_path: Path
) -> None:
    registry, fleet = stack
    async with client.FleetClient(fleet.url, fleet.token) as api:
        ids = await _run(api, "nginx", 20)
        nginx = {d: n for (repo, d), n in blob_gets(registry).items() if repo == "library/nginx"}
        assert len(nginx) == 3 and set(nginx.values()) == {1}, nginx  # config + 2 layers
        # One unpacked copy; each container's root an overlay over it.
        state = tmp_path / "fleet" / "state"
        assert len(list((state / "images" / "unpacked").iterdir())) == 1
        if os.geteuid() == 0:
            roots = [state / "microvms" / i / "bundles" / "app" / "rootfs" for i in ids]
            assert all(os.path.ismount(root) for root in roots)
        await _run(api, "busybox", 1, args=["sleep", "300"])
        busybox = {d for (repo, d), _ in blob_gets(registry).items() if repo == "library/busybox"}
        assert len(busybox) == 1, "only busybox's config: its one layer is nginx's base"
        assert not busybox & set(nginx)


async def test_a_rebuilt_tag_serves_its_new_page(
    stack: tuple[devregistry.Registry, devfleet.Fleet], tmp_path: Path
) -> None:
    """The page comes from the image's files: change it in a new build of the tag."""
    registry, fleet = stack
    async with client.FleetClient(fleet.url, fleet.token) as api:
        assert "<title>Welcome to nginx!</title>" in await _page(api)
        layout = tmp_path / "layout"
        shutil.copytree(images.build(settings.load().cache), layout)
        page = tmp_path / "layer" / "usr" / "share" / "nginx" / "html"
        page.mkdir(parents=True)
        (page / "index.html").write_text("<h1>rebuilt</h1>\n")
        for argv in (
            ["umoci", "insert", "--image", f"{layout}:nginx", str(tmp_path / "layer"), "/"],
            ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:nginx",
             f"docker://{registry.host}/library/nginx:latest"],
        ):  # fmt: skip
            done = await asyncio.create_subprocess_exec(*argv)
            assert await asyncio.wait_for(done.wait(), 120) == 0
        # The host has the old nginx:latest; Always (the default for :latest) asks again.
        assert await _page(api, image_pull_policy="Always") == "<h1>rebuilt</h1>\n"


async def _page(api: client.FleetClient, **container: object) -> str:
    """The page a new nginx microVM serves on its pod IP."""
    (vm_id,) = await _run(api, "nginx", 1, **container)
    ip = (await api.get_microvm(vm_id)).status.private_ip
    assert ip is not None and helpers.route_via_bridge(ip), f"{ip} is not on fleetd's bridge"

    async def served() -> str:
        proc = await asyncio.create_subprocess_exec(
            "curl", "-s", "--max-time", "3", f"http://{ip}/", stdout=asyncio.subprocess.PIPE
        )
        out, _ = await proc.communicate()
        return out.decode()

    return await waiting.until(served, what=f"nginx's page on {ip}")


async def test_over_the_budget_unused_images_go_least_recently_used_first(
    tmp_path: Path,
) -> None:
    registry = await devregistry.start_filled(tmp_path / "registry", settings.load().cache)
    fleet = await devfleet.start(tmp_path / "fleet", registry=registry.host, image_budget_mib=4)
    blobs = tmp_path / "fleet" / "state" / "images" / "layout" / "blobs" / "sha256"
    try:
        async with client.FleetClient(fleet.url, fleet.token) as api:
            (keeper,) = await _run(api, "busybox", 1, args=["sleep", "300"])
            (web,) = await _run(api, "nginx", 1)
            with_nginx = {p.name for p in blobs.iterdir()}
            await api.delete_microvm(web, grace_seconds=0)
            await waiting.until(lambda: helpers.forgotten(api, web), what="nginx's microVM gone")
            # One more image: the store (busybox + nginx + this) is over 4 MiB, and nginx,
            # used by no microVM now, goes; busybox, still running, stays.
            await _run(api, "busybox:nonroot", 1, args=["sleep", "300"])

            async def collected() -> bool:  # nginx's own layer, config and manifest
                return len(with_nginx - {p.name for p in blobs.iterdir()}) >= 3

            await waiting.until(collected, what="nginx's own blobs collected")
            assert sum(p.stat().st_size for p in blobs.iterdir()) <= 4 * 2**20
            vm = await api.get_microvm(keeper)
            assert helpers.container(vm, "app").state == "running"
            # nginx can be had again: pulled anew.
            await _run(api, "nginx", 1)
    finally:
        fleet.stop()
        registry.stop()
