"""The fleet client's retries, against a small in-process fleet that fails on purpose:
each call retries on its own, however many run at once."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from vk_fargate import errors
from vk_fargate.fleet import client as fleet_api
from vk_fargate.fleet import models


@pytest.fixture
async def flaky() -> AsyncIterator[str]:
    """A fleet answering 503 to the first two lists of each label selector, then an
    empty list, each after a moment (so that calls overlap)."""
    tries: collections.Counter[str] = collections.Counter()

    async def list_microvms(request: web.Request) -> web.Response:
        selector = request.query["label_selector"]
        tries[selector] += 1
        await asyncio.sleep(0.01 * (tries[selector] % 3))
        if tries[selector] <= 2:
            return web.Response(status=503, text="busy")
        return web.json_response({"items": [], "cursor": 7})

    app = web.Application()
    app.router.add_get("/v1/microvms", list_microvms)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_concurrent_calls_retry_each_on_their_own(
    flaky: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fleet_api, "RETRY_MAX", 0.01)
    async with fleet_api.FleetClient(flaky, "token", attempts=3) as fleet:
        calls = [fleet.list_microvms({"pod": f"pod-{i}"}) for i in range(20)]
        answers = await asyncio.gather(*calls, return_exceptions=True)
    assert [getattr(a, "cursor", a) for a in answers] == [7] * 20


async def test_a_volume_put_sends_the_files_and_takes_the_empty_answer() -> None:
    """``PUT /v1/microvms/{id}/volumes/{volume}`` answers 204 without a body; a 409
    comes back as ``Conflict``."""
    seen: list[tuple[str, str, object]] = []

    async def put_volume(request: web.Request) -> web.Response:
        seen.append((request.match_info["vm"], request.match_info["volume"], await request.json()))
        if request.match_info["volume"] == "scratch":
            error = {"fault_message": "an empty_dir volume", "code": "Conflict"}
            return web.json_response(error, status=409)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_put("/v1/microvms/{vm}/volumes/{volume}", put_volume)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    files = models.FileSet(items=[models.VolumeFile(path="a.conf", content="eD0x", mode=0o600)])
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        async with fleet_api.FleetClient(url, "token") as fleet:
            assert await fleet.put_volume("vm-1", "cfg", files) is None
            with pytest.raises(errors.Conflict):
                await fleet.put_volume("vm-1", "scratch", files)
    finally:
        await runner.cleanup()
    item = {"path": "a.conf", "content": "eD0x", "mode": 0o600}
    assert seen[0] == ("vm-1", "cfg", {"default_mode": 420, "items": [item], "pending": False})
