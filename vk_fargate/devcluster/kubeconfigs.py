"""Self-contained kubeconfig documents (certificates embedded, no file references),
so a kubeconfig keeps working when copied and says exactly who it authenticates as.
"""

from __future__ import annotations

import base64
from typing import Any

from vk_fargate import pki

CLUSTER_NAME = "vk-fargate-dev"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def render(*, server: str, ca_cert: bytes, client: pki.KeyPair, user: str) -> dict[str, Any]:
    """A kubeconfig with one cluster, one user and one current context."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CLUSTER_NAME,
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_cert)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": _b64(client.cert),
                    "client-key-data": _b64(client.key),
                },
            }
        ],
        "contexts": [{"name": CLUSTER_NAME, "context": {"cluster": CLUSTER_NAME, "user": user}}],
        "current-context": CLUSTER_NAME,
    }
