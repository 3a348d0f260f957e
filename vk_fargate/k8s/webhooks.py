"""Mutating and validating webhook configurations: create-or-replace, and delete.

Registration must be idempotent (every provider start registers again, possibly with a
new CA bundle) and safe against a concurrent writer: an existing object is replaced
with a PUT carrying the resourceVersion just read, and a conflict (someone wrote in
between, or deleted it) starts over from the create. An unchanged object PUT again is
a no-op for the API server (no new resourceVersion).
"""

from __future__ import annotations

import copy

from vk_fargate import errors
from vk_fargate.k8s import kube

GROUP_PATH = "/apis/admissionregistration.k8s.io/v1"
COLLECTIONS = {
    "MutatingWebhookConfiguration": f"{GROUP_PATH}/mutatingwebhookconfigurations",
    "ValidatingWebhookConfiguration": f"{GROUP_PATH}/validatingwebhookconfigurations",
}
ATTEMPTS = 5  # each lost race costs one round; five in a row means something is fighting us


def path(kind: str, name: str = "") -> str:
    """The collection of ``kind`` (one of ``COLLECTIONS``), or the object ``name`` in it."""
    try:
        collection = COLLECTIONS[kind]
    except KeyError:
        raise errors.ConfigError(f"not a webhook configuration kind: {kind!r}") from None
    return f"{collection}/{name}" if name else collection


async def apply(api: kube.Kube, document: kube.JSON) -> kube.JSON:
    """Create ``document``, or replace the object of its name with it; returns what is stored."""
    kind, name = document["kind"], document["metadata"]["name"]
    for _ in range(ATTEMPTS):
        try:
            return await api.create(path(kind), document)
        except errors.KubeError as exc:
            if not exc.conflict:  # 409 here: it already exists
                raise
        try:
            current = await api.get(path(kind, name))
        except errors.KubeError as exc:
            if exc.not_found:  # deleted since: create it again
                continue
            raise
        body = copy.deepcopy(document)
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        try:
            return await api.request("PUT", path(kind, name), body=body)
        except errors.KubeError as exc:
            if not (exc.conflict or exc.not_found):  # changed or deleted since: again
                raise
    raise errors.KubeError(
        409, "Conflict", f"{kind} {name} kept changing while it was being registered"
    )


async def get(api: kube.Kube, kind: str, name: str) -> kube.JSON | None:
    """The stored object, or None."""
    try:
        return await api.get(path(kind, name))
    except errors.KubeError as exc:
        if exc.not_found:
            return None
        raise


async def delete(api: kube.Kube, kind: str, name: str) -> None:
    """Delete the configuration; gone already is fine."""
    try:
        await api.delete(path(kind, name))
    except errors.KubeError as exc:
        if not exc.not_found:
            raise
