"""Connecting to an API server: from a kubeconfig file, or in-cluster.

Returns a kubernetes_asyncio ``ApiClient``; callers own it and close it.
"""

from __future__ import annotations

import os
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
    return client.ApiClient(configuration)
