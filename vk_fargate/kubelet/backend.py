"""The provider as the kubelet API sees it: pods and their nodes from the world view,
logs and resource readings from the fleet."""

from __future__ import annotations

from collections.abc import AsyncIterator

from vk_fargate import world
from vk_fargate.fargate import nodes as fargate_nodes
from vk_fargate.fleet import backend as fleet_backend
from vk_fargate.fleet import models
from vk_fargate.k8s import kube
from vk_fargate.kubelet import server


class Backend:
    """The provider as the kubelet API sees it."""

    def __init__(self, state: world.World, fleet: fleet_backend.MicroVMs) -> None:
        self.state = state
        self.fleet = fleet

    def pod(self, namespace: str, name: str) -> tuple[kube.JSON, str] | None:
        pod = self.state.pod_by_name(namespace, name)
        node = (pod.get("spec") or {}).get("nodeName") if pod else None
        return (pod, node) if pod is not None and node else None

    def pods(self) -> list[kube.JSON]:
        return [p for p in self.state.pods.values() if (p.get("spec") or {}).get("nodeName")]

    async def logs(
        self, pod: kube.JSON, container: str, options: server.LogOptions
    ) -> AsyncIterator[bytes]:
        since_time = options.since_time.isoformat() if options.since_time else None
        async for chunk in self.fleet.logs(
            pod["metadata"]["uid"],
            container,
            follow=options.follow,
            tail_lines=options.tail_lines,
            limit_bytes=options.limit_bytes,
            previous=options.previous,
            since_seconds=options.since_seconds,
            since_time=since_time,
            timestamps=options.timestamps,
        ):
            yield chunk

    async def open_exec(
        self, pod: kube.JSON, container: str, command: list[str], *, stdin: bool, tty: bool
    ) -> fleet_backend.Stream:
        uid = pod["metadata"]["uid"]
        return await self.fleet.open_exec(uid, container, command, stdin=stdin, tty=tty)

    async def open_attach(
        self, pod: kube.JSON, container: str, *, stdin: bool, tty: bool
    ) -> fleet_backend.Stream:
        uid = pod["metadata"]["uid"]
        return await self.fleet.open_attach(uid, container, stdin=stdin, tty=tty)

    async def open_port(self, pod: kube.JSON, port: int) -> fleet_backend.Stream:
        return await self.fleet.open_port(pod["metadata"]["uid"], port)

    def node_pod(self, node: str) -> tuple[kube.JSON, kube.JSON] | None:
        found = self.state.nodes.get(node)
        annotations = (found or {}).get("metadata", {}).get("annotations") or {}
        pod = self.state.pods.get(annotations.get(fargate_nodes.POD_UID_ANNOTATION) or "")
        return (found, pod) if found is not None and pod is not None else None

    async def stats(self, pod: kube.JSON) -> models.MicroVMStats:
        return await self.fleet.microvm_stats(pod["metadata"]["uid"])
