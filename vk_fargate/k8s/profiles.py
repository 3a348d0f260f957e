"""FargateProfile custom resources: install the CRD, create, list, delete, patch status."""

from __future__ import annotations

import asyncio
import logging
from importlib import resources
from typing import Any

import yaml

from vk_fargate import errors
from vk_fargate.k8s import kube

log = logging.getLogger(__name__)
GROUP, VERSION, PLURAL = "fargate.vk-fargate.io", "v1", "fargateprofiles"
API_VERSION = f"{GROUP}/{VERSION}"
PATH = f"/apis/{API_VERSION}/{PLURAL}"
CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
FINALIZER = "fargate.vk-fargate.io/stop-pods"
SERVED_WAIT = 30.0  # seconds a just-installed CRD may take to be served


def crd() -> dict[str, Any]:
    text = resources.files("vk_fargate.k8s").joinpath("fargateprofile-crd.yaml").read_text()
    document: dict[str, Any] = yaml.safe_load(text)
    return document


async def served(api: kube.Kube) -> bool:
    """Whether the API server serves FargateProfiles (the CRD is installed and ready: a
    new one answers 404, then 429 while its storage initializes)."""
    try:
        await api.get(PATH, limit=1)
    except errors.KubeError as exc:
        if exc.not_found or exc.status == 429:
            return False
        raise
    return True


async def _until_served(api: kube.Kube, timeout: float = SERVED_WAIT) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await served(api):
        if asyncio.get_running_loop().time() > deadline:
            late = f"{PATH} is not served {timeout:.0f}s after its CRD was installed"
            raise errors.KubeError(504, "Timeout", late)
        await asyncio.sleep(0.2)


async def ensure_crd(api: kube.Kube) -> bool:
    """Install the CRD when missing; whether FargateProfiles are served (False: the
    provider may neither see nor install them, and uses its profiles file alone)."""
    document = crd()
    name = document["metadata"]["name"]
    try:
        installed = await api.get(f"{CRD_PATH}/{name}")
    except errors.KubeError as exc:
        if not exc.not_found:
            if exc.status == 403:  # least privilege (Helm installs the CRD): is it served?
                if await served(api):
                    return True
                log.warning("%s is not installed and may not be installed by us", name)
                return False
            raise
        try:
            await api.create(CRD_PATH, document)
        except errors.KubeError as again:
            if again.status == 403:
                log.warning("may not install %s; profiles come from the config file only", name)
                return False
            if not again.conflict:
                raise
        await _until_served(api)  # so a create right after does not meet a 404 or 429
        return True
    if installed["spec"]["versions"] != document["spec"]["versions"]:
        await _upgrade(api, name, document)
    return True


async def _upgrade(api: kube.Kube, name: str, document: dict[str, Any]) -> None:
    """An older vk-fargate installed the CRD: bring its schema up to this version's
    (unknown status fields would otherwise be pruned silently)."""
    try:
        await api.patch(
            f"{CRD_PATH}/{name}",
            {"spec": {"versions": document["spec"]["versions"]}},
            kind=kube.MERGE_PATCH,
        )
        log.info("updated %s to this version's schema", name)
    except errors.KubeError as exc:
        if exc.status != 403:
            raise
        log.warning("%s is outdated and may not be updated by us: %s", name, exc.message)


def body(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "FargateProfile",
        "metadata": {"name": name},
        "spec": spec,
    }


async def create(api: kube.Kube, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return await api.create(PATH, body(name, spec))


async def get(api: kube.Kube, name: str) -> dict[str, Any]:
    return await api.get(f"{PATH}/{name}")


async def list_all(api: kube.Kube) -> list[dict[str, Any]]:
    return list((await api.get(PATH)).get("items") or [])


async def delete(api: kube.Kube, name: str) -> None:
    await api.delete(f"{PATH}/{name}")


async def set_status(
    api: kube.Kube,
    name: str,
    status: str,
    message: str = "",
    conditions: list[dict[str, Any]] | None = None,
) -> None:
    """Set the profile's state and message (and its conditions, when given: all of them)."""
    body: dict[str, Any] = {"status": status, "message": message}
    if conditions is not None:
        body["conditions"] = conditions
    await api.patch(f"{PATH}/{name}/status", {"status": body}, kind=kube.MERGE_PATCH)


async def set_finalizers(api: kube.Kube, obj: dict[str, Any], finalizers: list[str]) -> None:
    meta = obj["metadata"]
    patch = {"metadata": {"finalizers": finalizers, "resourceVersion": meta["resourceVersion"]}}
    await api.patch(f"{PATH}/{meta['name']}", patch, kind=kube.MERGE_PATCH)
