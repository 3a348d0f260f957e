"""The API client reads the environment once, at connect, never per request."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vk_fargate.k8s import client

SERVER = "https://127.0.0.1:6443"


def _kubeconfig(tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "c", "cluster": {"server": SERVER, "insecure-skip-tls-verify": True}}
        ],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path.write_text(yaml.safe_dump(document))
    return path


async def test_no_netrc_or_proxy_lookups_per_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    api = await client.connect(_kubeconfig(tmp_path))
    try:
        assert api.rest_client.pool_manager.trust_env is False
        assert api.rest_client.proxy is None
    finally:
        await api.close()


async def test_the_environment_proxy_is_kept_unless_no_proxy_exempts_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    api = await client.connect(_kubeconfig(tmp_path))
    try:
        assert api.rest_client.proxy == "http://proxy.example:3128"
    finally:
        await api.close()
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    api = await client.connect(_kubeconfig(tmp_path))
    try:
        assert api.rest_client.proxy is None
    finally:
        await api.close()
