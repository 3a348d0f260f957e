"""The fleet API contract, against the real daemon on loopback (process runtime)."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
import yarl

from tests.fleetd import helpers
from vk_fargate import errors
from vk_fargate.devcluster import fleet as devfleet
from vk_fargate.fleet import client


async def test_create_get_list_delete(fleet_client: client.FleetClient) -> None:
    vm_id = helpers.new_id()
    spec = helpers.spec(helpers.shell("app", "echo up; sleep 300"), labels={"cluster": "c1"})
    created = await fleet_client.put_microvm(vm_id, spec)
    assert created.id == vm_id
    assert created.status.state in ("pending", "provisioning")
    assert created.status.private_ip and created.status.host and created.status.zone

    running = await helpers.until_vm(
        fleet_client,
        vm_id,
        lambda v: v.status.state == "running" and helpers.container(v, "app").state == "running",
    )
    app = helpers.container(running, "app")
    assert app.container_id and app.container_id.startswith("vkfargate://")
    assert app.started_at is not None

    listed = await fleet_client.list_microvms({"cluster": "c1"})
    assert vm_id in [v.id for v in listed.items]
    assert vm_id not in [
        v.id for v in (await fleet_client.list_microvms({"cluster": "nope"})).items
    ]

    deleted = await fleet_client.delete_microvm(vm_id, grace_seconds=5)
    assert deleted.status.state == "stopping"

    from tests import waiting

    await waiting.until(
        lambda: helpers.forgotten(fleet_client, vm_id), what="the microVM to be forgotten"
    )
    with pytest.raises(errors.NotFound):
        await fleet_client.delete_microvm(vm_id)


async def test_create_is_idempotent_and_a_different_spec_conflicts(
    fleet_client: client.FleetClient,
) -> None:
    vm_id = helpers.new_id()
    spec = helpers.spec(helpers.shell("app", "sleep 300"))
    first = await fleet_client.put_microvm(vm_id, spec)
    again = await fleet_client.put_microvm(vm_id, spec)
    assert again.status.private_ip == first.status.private_ip
    assert len([v for v in (await fleet_client.list_microvms()).items if v.id == vm_id]) == 1
    other = spec.model_copy(update={"vcpu_millis": 500})
    with pytest.raises(errors.Conflict):
        await fleet_client.put_microvm(vm_id, other)
    await fleet_client.delete_microvm(vm_id, grace_seconds=0)


async def test_bad_requests_get_clear_4xx(fleet: devfleet.Fleet) -> None:
    auth = {"Authorization": f"Bearer {fleet.token}"}
    async with aiohttp.ClientSession(fleet.url) as http:
        async with http.get("/v1/microvms") as r:
            assert r.status == 401
            assert (await r.json())["code"] == "Unauthorized"
        async with http.get("/v1/microvms", headers={"Authorization": "Bearer wrong"}) as r:
            assert r.status == 401
        # Hostile headers and bodies get 4xx, never a 500 (each was a 500 before).
        assert await _raw_status(fleet.url, b"Authorization: Bearer t\xf6ken") == 401
        for bad in (b"[" * 100_000 + b"]" * 100_000, b'{"vcpu_millis": 1' + b"0" * 5000 + b"}"):
            async with http.put("/v1/microvms/x1", data=bad, headers=auth) as r:
                assert r.status == 400, await r.text()
                assert (await r.json())["code"] == "BadRequest"
        lower = {"Authorization": f"bearer {fleet.token}"}
        async with http.get("/v1/microvms", headers=lower) as r:
            assert r.status == 200, "the auth scheme is case-insensitive"
        async with http.put("/v1/microvms/x1", data=b"{not json", headers=auth) as r:
            assert r.status == 400
            assert (await r.json())["code"] == "BadRequest"
        body = {"vcpu_millis": 100, "mem_mib": 512, "containers": [{"name": "a", "image": "b"}]}
        async with http.put("/v1/microvms/x1", json=body, headers=auth) as r:
            assert r.status == 422
            error = await r.json()
            assert error["code"] == "InvalidSpec"
            assert error["field"] == "vcpu_millis"
        async with http.put(
            "/v1/microvms/x1", json={**body, "vcpu_millis": 250, "containers": []}, headers=auth
        ) as r:
            assert r.status == 422
            assert (await r.json())["field"] == "containers"
        # What a host would struggle with or exec(2) refuse, refused up front.
        app = {"name": "a", "image": "b"}
        for field, change in (
            ("containers", {"containers": [{"name": f"c{n}", "image": "b"} for n in range(5000)]}),
            ("containers.0.env", {"containers": [{**app, "env": [{"name": "A"}] * 20_000}]}),
            ("containers.0.working_dir", {"containers": [{**app, "working_dir": "../../etc"}]}),
        ):
            spec = {**body, "vcpu_millis": 250, **change}
            async with http.put("/v1/microvms/x1", json=spec, headers=auth) as r:
                assert r.status == 422, await r.text()
                assert (await r.json())["field"] == field
        async with http.get("/v1/microvms/does-not-exist", headers=auth) as r:
            assert r.status == 404
        async with http.get("/v1/microvms/bad%20id!", headers=auth) as r:
            assert r.status == 400
        async with http.get("/v1/events?since=abc", headers=auth) as r:
            assert r.status == 400
        async with http.get("/healthz") as r:
            assert r.status == 200


async def _raw_status(url: str, header: bytes) -> int:
    """The status of a GET /v1/microvms carrying ``header`` as raw bytes (aiohttp's
    client would encode a str header as UTF-8; a hostile client need not)."""
    address = yarl.URL(url)
    reader, writer = await asyncio.open_connection(address.host, address.port)
    try:
        writer.write(b"GET /v1/microvms HTTP/1.1\r\nHost: fleet\r\n" + header)
        writer.write(b"\r\nConnection: close\r\n\r\n")
        status_line = await asyncio.wait_for(reader.readline(), 60)
    finally:
        writer.close()
    return int(status_line.split()[1])
