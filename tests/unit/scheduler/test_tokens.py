"""When the volumes' ServiceAccount tokens are asked for again (``sources.Tokens``): at
80% of the life the API server gave, at most 24 h, once per pod in between; a refusal
is the API server's reason. A stand-in API answers TokenRequests (plain values)."""

from __future__ import annotations

import datetime
from typing import Any

from vk_fargate import errors
from vk_fargate.scheduler import sources

JSON = dict[str, Any]
NOW = 1_800_000_000.0
POD = {"metadata": {"name": "web", "namespace": "shop", "uid": "u1"}, "spec": {}}


class TokenApi:
    """Answers each TokenRequest with a numbered token valid for ``life`` seconds."""

    def __init__(self, life: float) -> None:
        self.life = life
        self.asked: list[tuple[str, JSON]] = []
        self.refuse: errors.KubeError | None = None

    async def create(self, path: str, body: JSON) -> JSON:
        self.asked.append((path, body))
        if self.refuse is not None:
            raise self.refuse
        expires = datetime.datetime.fromtimestamp(NOW + self.life, datetime.UTC)
        stamp = expires.strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"status": {"token": f"t{len(self.asked)}", "expirationTimestamp": stamp}}


async def test_a_token_is_kept_until_80_percent_of_its_life() -> None:
    api = TokenApi(life=600)
    clock = [NOW]
    tokens = sources.Tokens(clock=lambda: clock[0])
    key = ("vault", 600)
    assert await tokens.get(api, POD, frozenset({key})) == ({key: "t1"}, "")
    path, body = api.asked[0]
    assert path == "/api/v1/namespaces/shop/serviceaccounts/default/token"
    assert body["spec"]["audiences"] == ["vault"]
    assert body["spec"]["expirationSeconds"] == 600
    assert body["spec"]["boundObjectRef"] == {
        "apiVersion": "v1",
        "kind": "Pod",
        "name": "web",
        "uid": "u1",
    }
    assert tokens.due("u1") == 480
    clock[0] = NOW + 479
    assert (await tokens.get(api, POD, frozenset({key})))[0] == {key: "t1"}
    clock[0] = NOW + 480
    assert (await tokens.get(api, POD, frozenset({key})))[0] == {key: "t2"}


async def test_a_long_lived_token_is_renewed_daily() -> None:
    """The admission plugin's 3607 s token, extended by the API server to a year."""
    tokens = sources.Tokens(clock=lambda: NOW)
    await tokens.get(TokenApi(life=365 * 86400), POD, frozenset({("", 3607)}))
    assert tokens.due("u1") == 86400


async def test_a_refused_token_is_absent_with_the_reason() -> None:
    api = TokenApi(life=600)
    api.refuse = errors.KubeError(404, "NotFound", 'serviceaccounts "default" not found')
    tokens = sources.Tokens(clock=lambda: NOW)
    found = await tokens.get(api, POD, frozenset({("", 3600)}))
    assert found == ({}, 'serviceaccounts "default" not found')
    assert tokens.due("u1") is None
