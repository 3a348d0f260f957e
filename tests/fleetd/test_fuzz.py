"""Property-based fuzzing of the real fleet daemon: every operation from openapi.yaml
(schemathesis), and the Authorization header and request bodies as raw bytes."""

from __future__ import annotations

import contextlib
import json
import socket
import urllib.parse
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

import hypothesis
import hypothesis.strategies as st
import pytest
import schemathesis
from schemathesis.specs.openapi import checks

from tests import waiting
from vk_fargate import errors
from vk_fargate.devcluster import fleet as devfleet
from vk_fargate.fleet import client, models

OPENAPI = resources.files("vk_fargate.fleet").joinpath("openapi.yaml")
# /v1/events is an endless stream; every other operation is fuzzed.
SCHEMA = schemathesis.openapi.from_path(str(OPENAPI)).exclude(operation_id="watchEvents")
MAX_EXAMPLES = 25  # per operation, on top of schemathesis's own coverage cases
LOGS = "GET /v1/microvms/{microvm_id}/containers/{container}/logs"
REQUEST_TIMEOUT = 15.0  # seconds; no answer of this API takes long unless it streams


def no_server_error(
    ctx: schemathesis.CheckContext, response: Any, case: schemathesis.Case[Any]
) -> None:
    """No 5xx, except the documented 503 InsufficientCapacity with its Retry-After."""
    if response.status_code < 500:
        return
    body = response.text
    documented = (
        response.status_code == 503
        and case.operation.label == "PUT /v1/microvms/{microvm_id}"
        and _code(body) == "InsufficientCapacity"
        and str(response.headers.get("retry-after", [""])[0]).isdigit()
    )
    if not documented:
        raise AssertionError(f"server error {response.status_code}: {body[:500]}")


def _follows(query: dict[str, Any]) -> bool:
    """Whether the daemon would read ``follow`` as true (it takes the first of repeats)."""
    value = query.get("follow")
    first = value[0] if isinstance(value, list) and value else value
    return str(first).lower() in ("true", "1")


def _code(body: str) -> str | None:
    try:
        document = json.loads(body)
    except ValueError:
        return None
    return document.get("code") if isinstance(document, dict) else None


CHECKS = [
    no_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
    checks.ignored_auth,
]


@pytest.fixture(scope="module", autouse=True)
async def _cleanup(fleet: devfleet.Fleet) -> AsyncIterator[None]:
    """Delete every microVM the fuzzer made and re-activate any host it drained."""
    async with client.FleetClient(fleet.url, fleet.token) as api:
        before = {vm.id for vm in (await api.list_microvms()).items}
        active = {h.id for h in await api.hosts() if h.state == "active"}
        yield
        made = [vm.id for vm in (await api.list_microvms()).items if vm.id not in before]
        for vm_id in made:
            with contextlib.suppress(errors.NotFound):  # the fuzzer deleted it already
                await api.delete_microvm(vm_id, grace_seconds=0)
        for host in await api.hosts():
            if host.id in active and host.state != "active":
                await api.host_action(host.id, models.HostAction(action_type="Activate"))

        async def all_gone() -> bool:
            left = {vm.id for vm in (await api.list_microvms()).items}
            return not left & set(made)

        await waiting.until(all_gone, timeout=60, what="the fuzzer's microVMs to be deleted")


@SCHEMA.parametrize()
@hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)
def test_api_conforms_to_its_schema(case: schemathesis.Case[Any], fleet: devfleet.Fleet) -> None:
    if case.operation.label == LOGS and _follows(case.query or {}):
        # follow streams until the container ends, which a fuzzed one may never do.
        case.query = {**(case.query or {}), "follow": "false"}
    case.call_and_validate(
        base_url=fleet.url,
        headers={"Authorization": f"Bearer {fleet.token}"},
        checks=CHECKS,
        timeout=REQUEST_TIMEOUT,
    )


def _raw(url: str, request: bytes) -> int:
    """The status the daemon answers to ``request`` (raw bytes: a hostile client need
    not encode as aiohttp's client would)."""
    address = urllib.parse.urlsplit(url)
    with socket.create_connection((address.hostname, address.port), timeout=30) as conn:
        conn.sendall(request)
        status_line = conn.makefile("rb").readline()
    return int(status_line.split()[1])


@hypothesis.given(value=st.binary(max_size=300).filter(lambda b: b"\r" not in b and b"\n" not in b))
@hypothesis.settings(max_examples=60, deadline=None, database=None)
def test_any_authorization_header_is_refused_never_a_server_error(
    value: bytes, fleet: devfleet.Fleet
) -> None:
    request = b"GET /v1/microvms HTTP/1.1\r\nHost: fleet\r\nAuthorization: " + value
    status = _raw(fleet.url, request + b"\r\nConnection: close\r\n\r\n")
    assert status in (400, 401), (value, status)


def _nested(depth: int, leaf: str, kind: str) -> str:
    return (
        ("[" * depth if kind == "list" else '{"a":' * depth)
        + leaf
        + ("]" * depth if kind == "list" else "}" * depth)
    )


@hypothesis.given(
    depth=st.integers(min_value=1, max_value=20_000),
    digits=st.integers(min_value=1, max_value=10_000),
    kind=st.sampled_from(["list", "object"]),
    padding=st.integers(min_value=0, max_value=3 * 1024 * 1024),
)
@hypothesis.settings(max_examples=40, deadline=None, database=None)
def test_any_body_size_depth_or_number_is_refused_never_a_server_error(
    depth: int, digits: int, kind: str, padding: int, fleet: devfleet.Fleet
) -> None:
    """Deep nesting, long integers and large bodies: a 4xx, never a 5xx."""
    body = _nested(depth, "9" * digits, kind).encode() + b" " * padding
    head = (
        f"PUT /v1/microvms/fuzz-body HTTP/1.1\r\nHost: fleet\r\n"
        f"Authorization: Bearer {fleet.token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    status = _raw(fleet.url, head + body)
    assert 400 <= status < 500, (depth, digits, kind, padding, status)
