"""`kubectl set image` on a running pod, through the real provider and fleetd: the
kubelet's in-place restart (Killing "definition changed", a real pull of the new image,
Started again, restartCount 1, a new container ID), and a refused field change said
plainly by the API server itself."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes_asyncio import client as k8s

from tests import kubectl as kubectl_runner
from tests import pushing, waiting
from tests.provider import conftest
from vk_fargate.devcluster import registry as devregistry

pytestmark = pytest.mark.e2e


async def test_set_image_restarts_the_container_from_the_new_image(
    api: k8s.ApiClient,
    provider: conftest.Provider,
    registry: devregistry.Registry,
    kubeconfig: Path,
) -> None:
    core = k8s.CoreV1Api(api)
    ns = await conftest.namespace(api, "setimage")
    new_image = f"myorg/web-{ns}:2"
    await pushing.push_busybox(registry.host, new_image)
    container = {"name": "web", "image": "busybox", "args": ["sleep", "3600"]}
    await core.create_namespaced_pod(ns, conftest.pod("web", container))

    async def status(image: str) -> k8s.V1ContainerStatus | None:
        """The container's status once it runs ``image`` (as its imageID names it)."""
        pod = await core.read_namespaced_pod("web", ns)
        found = (pod.status.container_statuses or [None])[0]
        running = found is not None and found.state.running is not None
        return found if running and f"{image}@sha256:" in (found.image_id or "") else None

    first = await waiting.until(lambda: status("busybox"), timeout=120, what="web Running")
    code, _out, err = await kubectl_runner.run_async(
        kubeconfig, "-n", ns, "set", "image", "pod/web", f"web={new_image}"
    )
    assert code == 0, err

    second = await waiting.until(
        lambda: status(f"myorg/web-{ns}"), timeout=120, what="web Running its new image"
    )
    assert second.restart_count == first.restart_count + 1
    assert second.container_id != first.container_id
    assert second.image == new_image
    assert second.last_state.terminated is not None

    async def said() -> list[k8s.CoreV1Event] | None:
        found = await core.list_namespaced_event(ns, field_selector="involvedObject.name=web")
        events = [(e.reason, e.message) for e in found.items]
        wanted = (
            ("Killing", "Container web definition changed, will be restarted"),
            ("Pulled", f'Successfully pulled image "{new_image}" in '),
        )
        ok = all(any(r == w and m.startswith(p) for r, m in events) for w, p in wanted)
        return list(found.items) if ok else None

    events = await waiting.until(said, what="the restart's events")
    started = [e.count or 1 for e in events if e.reason == "Started"]
    assert sum(started) == 2, [(e.reason, e.message, e.count) for e in events]

    # Anything but an image is refused by the API server itself, as for any pod.
    code, _out, err = await kubectl_runner.run_async(
        kubeconfig, "-n", ns, "set", "env", "pod/web", "A=1"
    )
    assert code != 0 and "Forbidden: pod updates may not change fields" in err
    await core.delete_namespace(ns)
