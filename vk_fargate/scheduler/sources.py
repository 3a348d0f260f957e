"""What a pod's microVM spec is built from, read from the cluster: the ConfigMaps and
Secrets its environment names (one GET each, together), its namespace's Services and
the ``kubernetes`` Service (from the services informer, never a LIST per pod), and its
image pull secrets. Handed to the pure translation (``fargate.microvms``) as values.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from vk_fargate import errors
from vk_fargate.fargate import environment, microvms, sizing
from vk_fargate.k8s import events, kube, pods

Services = Callable[[str], list[kube.JSON]]  # a namespace's Services, from a watch


async def environment_sources(
    api: kube.Kube, pod: kube.JSON, size: sizing.Size, *, services: Services, region: str
) -> environment.Sources:
    namespace = pod["metadata"]["namespace"]
    config_maps, secrets = microvms.references(pod)

    async def fetch(kind: str, name: str) -> tuple[str, kube.JSON | None]:
        try:
            if kind == "configMap":
                return name, await pods.config_map(api, namespace, name)
            return name, await pods.secret(api, namespace, name)
        except errors.KubeError as exc:
            if exc.not_found:
                return name, None
            raise

    maps = dict(await asyncio.gather(*(fetch("configMap", n) for n in config_maps)))
    found = dict(await asyncio.gather(*(fetch("secret", n) for n in secrets)))
    links = (pod.get("spec") or {}).get("enableServiceLinks", True)
    return environment.Sources(
        config_maps=maps,
        secrets=found,
        services=services(namespace) if links else [],
        master_services=[s for s in services("default") if s["metadata"]["name"] == "kubernetes"],
        node_name_template=microvms.node_name_template(region),
        size=size,
    )


async def pull_secrets(
    api: kube.Kube, recorder: events.Recorder, pod: kube.JSON
) -> list[kube.JSON]:
    """The pod's image pull secrets (the ServiceAccount's were copied in by its
    admission plugin); those missing are named in the kubelet's warning."""
    namespace = pod["metadata"]["namespace"]
    found, missing = [], []
    for ref in (pod.get("spec") or {}).get("imagePullSecrets") or []:
        try:
            found.append(await pods.secret(api, namespace, ref.get("name", "")))
        except errors.KubeError as exc:
            if not exc.not_found:
                raise
            missing.append(ref.get("name", ""))
    if missing:
        await recorder.record(
            pod,
            "FailedToRetrieveImagePullSecret",
            f"Unable to retrieve some image pull secrets ({', '.join(missing)}); "
            "attempting to pull the image may not succeed.",
            warning=True,
            component="kubelet",
        )
    return found
