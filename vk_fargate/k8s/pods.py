"""Pod operations the provider needs: bind, status patches, deletion, re-creation, and
the objects env and volumes read (ConfigMaps, Secrets, Services, ServiceAccount
tokens)."""

from __future__ import annotations

from vk_fargate import errors
from vk_fargate.k8s import kube


def path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{namespace}/pods/{name}"


async def bind(
    api: kube.Kube, pod: kube.JSON, node: str, annotations: dict[str, str] | None = None
) -> None:
    """Bind with a Binding, which also merges ``annotations`` into the pod in the same
    write (the API server copies a Binding's annotations); the response is read raw
    (the client's model parser raises a bogus ValueError on it)."""
    meta = pod["metadata"]
    binding_meta = {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]}
    if annotations:
        binding_meta["annotations"] = annotations
    body = {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": binding_meta,
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    }
    await api.create(path(meta["namespace"], meta["name"]) + "/binding", body)


async def patch_status(api: kube.Kube, pod: kube.JSON, status: kube.JSON) -> kube.JSON:
    """Strategic-merge the fields we own into ``status`` (others' fields survive)."""
    meta = pod["metadata"]
    body = {"metadata": {"uid": meta["uid"]}, "status": status}
    return await api.patch(path(meta["namespace"], meta["name"]) + "/status", body)


async def label(api: kube.Kube, pod: kube.JSON, labels: dict[str, str]) -> kube.JSON:
    """Merge ``labels`` into the pod, if it is still this UID."""
    meta = pod["metadata"]
    body = {"metadata": {"uid": meta["uid"], "labels": labels}}
    return await api.patch(path(meta["namespace"], meta["name"]), body, kind=kube.MERGE_PATCH)


async def delete_now(api: kube.Kube, pod: kube.JSON) -> None:
    """Delete with grace 0 and a UID precondition (never a same-named successor)."""
    meta = pod["metadata"]
    body = {
        "apiVersion": "v1",
        "kind": "DeleteOptions",
        "gracePeriodSeconds": 0,
        "preconditions": {"uid": meta["uid"]},
    }
    await api.delete(path(meta["namespace"], meta["name"]), body)


async def delete_unchanged(api: kube.Kube, pod: kube.JSON) -> bool:
    """Delete ``pod`` only as the caller saw it (its UID and resourceVersion): a pod bound
    or changed meanwhile is kept, and one already gone stays gone. Whether this call
    deleted it."""
    meta = pod["metadata"]
    body = {
        "apiVersion": "v1",
        "kind": "DeleteOptions",
        "preconditions": {"uid": meta["uid"], "resourceVersion": meta["resourceVersion"]},
    }
    try:
        await api.delete(path(meta["namespace"], meta["name"]), body)
    except errors.KubeError as exc:
        if exc.conflict or exc.not_found:
            return False
        raise
    return True


async def create(api: kube.Kube, pod: kube.JSON) -> kube.JSON:
    return await api.create(f"/api/v1/namespaces/{pod['metadata']['namespace']}/pods", pod)


async def evict(api: kube.Kube, pod: kube.JSON) -> None:
    """Ask for an eviction (PodDisruptionBudgets apply); KubeError 429 when refused."""
    meta = pod["metadata"]
    body = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
    }
    await api.create(path(meta["namespace"], meta["name"]) + "/eviction", body)


async def config_map(api: kube.Kube, namespace: str, name: str) -> kube.JSON:
    return await api.get(f"/api/v1/namespaces/{namespace}/configmaps/{name}")


async def secret(api: kube.Kube, namespace: str, name: str) -> kube.JSON:
    return await api.get(f"/api/v1/namespaces/{namespace}/secrets/{name}")


async def service_account_token(
    api: kube.Kube, pod: kube.JSON, *, audience: str, expiration_seconds: int
) -> kube.JSON:
    """A token of the pod's ServiceAccount bound to the pod (TokenRequest, as the
    kubelet's token manager asks: invalid once the pod is gone); its ``status``
    (``token``, ``expirationTimestamp``). ``audience`` "" is the API server's."""
    meta = pod["metadata"]
    account = (pod.get("spec") or {}).get("serviceAccountName") or "default"
    body = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {
            "audiences": [audience] if audience else [],
            "expirationSeconds": expiration_seconds,
            "boundObjectRef": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": meta["name"],
                "uid": meta["uid"],
            },
        },
    }
    path = f"/api/v1/namespaces/{meta['namespace']}/serviceaccounts/{account}/token"
    answer = await api.create(path, body)
    return dict(answer.get("status") or {})
