"""Pushing the local busybox image to a registry under another name, as a user
publishing an image the cluster is already waiting for."""

from __future__ import annotations

import asyncio

from vk_fargate import settings
from vk_fargate.devcluster import images


async def push_busybox(registry: str, image: str) -> None:
    """Push the local busybox image to ``registry`` (host:port) as ``image``."""
    layout = images.build(settings.load().cache)
    push = await asyncio.create_subprocess_exec(
        "skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:busybox",
        f"docker://{registry}/{image}",
    )  # fmt: skip
    assert await asyncio.wait_for(push.wait(), 120) == 0
