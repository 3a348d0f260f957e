"""Registry credentials from a pod's image pull secrets, as the kubelet reads them. Pure.

``kubernetes.io/dockerconfigjson`` (``{"auths": {registry: ...}}``) and the older
``kubernetes.io/dockercfg`` (``{registry: ...}``); an entry has ``username`` and
``password`` or a base64 ``auth`` of ``user:password``. Keys name a registry as
Docker's config does (``https://index.docker.io/v1/``, ``docker.io``, ``host:port``),
matched against the registry of the image reference.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from vk_fargate.fleet import images

DOCKER_HUB = ("index.docker.io", "registry-1.docker.io", "docker.io")


def registry_of(key: str) -> str:
    """``https://index.docker.io/v1/`` -> ``docker.io``; ``http://h:5000/x`` -> ``h:5000``."""
    host = key.split("://", 1)[-1].split("/", 1)[0].lower()
    return "docker.io" if host in DOCKER_HUB else host


def entries(secret: dict[str, Any]) -> dict[str, str]:
    """``registry -> user:password`` of one Secret; nothing for other types or bad data."""
    data = secret.get("data") or {}
    try:
        if secret.get("type") == "kubernetes.io/dockerconfigjson":
            auths = json.loads(base64.b64decode(data.get(".dockerconfigjson", "")))["auths"]
        elif secret.get("type") == "kubernetes.io/dockercfg":
            auths = json.loads(base64.b64decode(data.get(".dockercfg", "")))
        else:
            return {}
    except (ValueError, KeyError, TypeError, binascii.Error):
        return {}
    found: dict[str, str] = {}
    for key, entry in (auths or {}).items():
        if not isinstance(entry, dict):
            continue
        pair = _pair(entry)
        if pair:
            found.setdefault(registry_of(key), pair)
    return found


def _pair(entry: dict[str, Any]) -> str | None:
    if entry.get("username") and entry.get("password"):
        return f"{entry['username']}:{entry['password']}"
    try:
        decoded = base64.b64decode(str(entry.get("auth", ""))).decode()
    except (ValueError, binascii.Error):
        return None
    return decoded if ":" in decoded else None


def credentials(image: str, secrets: list[dict[str, Any]]) -> str | None:
    """``user:password`` for ``image`` from the first secret naming its registry."""
    try:
        registry = images.parse(image).registry
    except images.InvalidImageName:
        return None
    for secret in secrets:
        found = entries(secret).get(registry)
        if found:
            return found
    return None
