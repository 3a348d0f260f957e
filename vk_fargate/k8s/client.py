"""Connecting to an API server: from a kubeconfig file, or in-cluster.

Returns a kubernetes_asyncio ``ApiClient``; callers own it and close it. Its aiohttp
session would read ``~/.netrc`` and the proxy variables on every request, each in a
thread (a third of the provider's CPU in a 300-pod burst); the proxy the environment
names for the API server is looked up once here instead, and netrc not at all (the
client authenticates with the kubeconfig's credentials).
"""

from __future__ import annotations

import os
import urllib.parse
import urllib.request
from pathlib import Path

from kubernetes_asyncio import client, config

from vk_fargate import errors

ApiClient = client.ApiClient


async def connect(kubeconfig: Path | None = None) -> client.ApiClient:
    """An API client from ``kubeconfig``, else ``$KUBECONFIG``, else in-cluster config."""
    configuration = client.Configuration()
    path = kubeconfig or (Path(os.environ["KUBECONFIG"]) if os.environ.get("KUBECONFIG") else None)
    try:
        if path is not None:
            await config.load_kube_config(config_file=str(path), client_configuration=configuration)
        else:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except (config.ConfigException, OSError) as exc:
        where = path or "the in-cluster service account"
        raise errors.ConfigError(f"cannot load Kubernetes credentials from {where}: {exc}") from exc
    configuration.proxy = configuration.proxy or _env_proxy(str(configuration.host))
    api = client.ApiClient(configuration)
    api.rest_client.pool_manager._trust_env = False  # read once above; see the docstring
    return api


def _env_proxy(server: str) -> str | None:
    """The proxy ``HTTPS_PROXY``/``HTTP_PROXY`` name for ``server``, unless ``NO_PROXY``
    exempts it (as client-go's ProxyFromEnvironment)."""
    url = urllib.parse.urlsplit(server)
    proxy = urllib.request.getproxies().get(url.scheme)
    if not proxy or urllib.request.proxy_bypass(url.hostname or ""):
        return None
    return proxy
