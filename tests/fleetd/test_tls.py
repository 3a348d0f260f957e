"""The fleet client against a real fleetd served over TLS on loopback: it trusts the
fleet's private CA when given its bundle, and refuses (at once, not after retries) a
certificate it cannot verify, on plain calls and on the event stream alike."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fleetd import helpers
from vk_fargate import errors, pki
from vk_fargate.devcluster import fleet as devfleet
from vk_fargate.fleet import client


@pytest.fixture(scope="module")
def fleet_ca() -> pki.KeyPair:
    return pki.new_ca("vk-fargate-test-fleet-ca")


@pytest.fixture(scope="module")
async def tls_fleet(
    tmp_path_factory: pytest.TempPathFactory, fleet_ca: pki.KeyPair
) -> AsyncIterator[devfleet.Fleet]:
    serving = pki.issue(fleet_ca, "fleetd", hosts=("127.0.0.1",), server=True)
    running = await devfleet.start(tmp_path_factory.mktemp("tls-fleet"), tls=serving)
    try:
        yield running
    finally:
        running.stop()


def ca_file(tmp_path: Path, ca: pki.KeyPair) -> Path:
    path = tmp_path / "fleet-ca.crt"
    path.write_bytes(ca.cert)
    return path


async def test_the_client_trusts_the_fleet_through_its_ca_bundle(
    tls_fleet: devfleet.Fleet, fleet_ca: pki.KeyPair, tmp_path: Path
) -> None:
    assert tls_fleet.url.startswith("https://127.0.0.1:")
    context = client.trusting(ca_file(tmp_path, fleet_ca))
    async with client.FleetClient(tls_fleet.url, tls_fleet.token, ssl_context=context) as fleet:
        assert {h.id for h in await fleet.hosts()} == {"metal-a", "metal-b"}
        vm_id = helpers.new_id()
        placed = await fleet.put_microvm(vm_id, helpers.spec(helpers.shell("app", "sleep 300")))
        async with asyncio.timeout(10):
            async for event in fleet.events(0):  # the stream runs over TLS too
                if event.microvm is not None and event.microvm.id == vm_id:
                    break
        await fleet.delete_microvm(placed.id, grace_seconds=0)


@pytest.mark.parametrize("trust", ["system CAs", "another CA"])
async def test_an_untrusted_fleet_certificate_fails_at_once_and_says_why(
    tls_fleet: devfleet.Fleet, tmp_path: Path, trust: str
) -> None:
    context = None if trust == "system CAs" else client.trusting(ca_file(tmp_path, pki.new_ca()))
    async with client.FleetClient(tls_fleet.url, tls_fleet.token, ssl_context=context) as fleet:
        with pytest.raises(errors.FleetError) as caught:
            await fleet.hosts()
        assert not isinstance(caught.value, errors.FleetUnavailable)  # not retried
        assert "certificate is not trusted" in str(caught.value)
        assert "VK_FARGATE_FLEET_CA_FILE" in str(caught.value)
        # The event stream gives up too, rather than reconnecting forever.
        events = fleet.events(0)
        try:
            with pytest.raises(errors.FleetError, match="certificate is not trusted"):
                await asyncio.wait_for(anext(events), 10)
        finally:
            await events.aclose()


@pytest.mark.parametrize("content", [None, b"", b"not a certificate\n"])
def test_an_unusable_ca_bundle_is_a_config_error(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "ca.crt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(errors.ConfigError, match=f"cannot load the fleet CA bundle {path}"):
        client.trusting(path)
