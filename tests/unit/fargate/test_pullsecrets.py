"""Tests of fargate.pullsecrets: Docker config secrets of both kinds, keys matched to
the image's registry, bad data ignored."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from vk_fargate.fargate import pullsecrets


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def config_json(auths: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": b64(json.dumps({"auths": auths}))},
    }


def dockercfg(auths: dict[str, Any]) -> dict[str, Any]:
    return {"type": "kubernetes.io/dockercfg", "data": {".dockercfg": b64(json.dumps(auths))}}


@pytest.mark.parametrize(
    ("key", "registry"),
    [
        ("https://index.docker.io/v1/", "docker.io"),
        ("docker.io", "docker.io"),
        ("registry-1.docker.io", "docker.io"),
        ("127.0.0.1:5000", "127.0.0.1:5000"),
        ("http://127.0.0.1:5000/v2/", "127.0.0.1:5000"),
        ("Quay.IO", "quay.io"),
    ],
)
def test_keys_name_registries_as_dockers_config_does(key: str, registry: str) -> None:
    assert pullsecrets.registry_of(key) == registry


def test_both_secret_types_with_auth_or_username_and_password() -> None:
    one = config_json({"https://index.docker.io/v1/": {"auth": b64("me:pw")}})
    two = dockercfg({"quay.io": {"username": "bot", "password": "token"}})
    assert pullsecrets.entries(one) == {"docker.io": "me:pw"}
    assert pullsecrets.entries(two) == {"quay.io": "bot:token"}
    assert pullsecrets.credentials("nginx", [two, one]) == "me:pw"
    assert pullsecrets.credentials("quay.io/org/app:1", [one, two]) == "bot:token"
    assert pullsecrets.credentials("ghcr.io/x/y", [one, two]) is None


@pytest.mark.parametrize(
    "secret",
    [
        {"type": "Opaque", "data": {"x": b64("{}")}},
        {"type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": "%%%"}},
        {"type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": b64("[]")}},
        config_json({"docker.io": {"auth": b64("no-colon")}}),
        config_json({"docker.io": "not an object"}),
        {"type": "kubernetes.io/dockercfg"},
    ],
)
def test_bad_or_foreign_secrets_give_nothing_and_never_raise(secret: dict[str, Any]) -> None:
    assert pullsecrets.entries(secret) == {}


def test_an_invalid_image_name_has_no_credentials() -> None:
    one = config_json({"docker.io": {"auth": b64("me:pw")}})
    assert pullsecrets.credentials("Not Valid", [one]) is None
