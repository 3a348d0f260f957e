"""A Fargate pod talks to the API server as its ServiceAccount: ``kubectl`` inside the
pod (in-cluster config: ``KUBERNETES_SERVICE_HOST``, the projected token and
``ca.crt``) lists the pods of its namespace, refused until RBAC allows it, then
allowed; all through the ``kubernetes`` Service's cluster IP, relayed by fleetd."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from kubernetes_asyncio import client as k8s

from tests import waiting
from tests.provider import conftest
from vk_fargate import settings
from vk_fargate.devcluster import binaries, images
from vk_fargate.devcluster import registry as devregistry

pytestmark = pytest.mark.e2e


async def _run(*argv: str) -> None:
    proc = await asyncio.create_subprocess_exec(*argv)
    assert await asyncio.wait_for(proc.wait(), 300) == 0, argv


async def push_kubectl_image(registry: str, image: str, work: Path) -> None:
    """busybox with this machine's (static) kubectl in /bin, pushed as ``image``."""
    layout = work / "layout"
    shutil.copytree(images.build(settings.load().cache), layout)
    layer = work / "layer" / "bin"
    layer.mkdir(parents=True)
    shutil.copy2(binaries.kubectl_path(), layer / "kubectl")
    await _run("umoci", "insert", "--image", f"{layout}:busybox", str(layer.parent), "/")
    await _run(
        "skopeo", "copy", "--quiet", "--dest-tls-verify=false",
        f"oci:{layout}:busybox", f"docker://{registry}/{image}",
    )  # fmt: skip


async def test_a_pod_lists_pods_with_its_own_token_as_rbac_allows(
    api: k8s.ApiClient,
    provider: conftest.Provider,
    registry: devregistry.Registry,
    tmp_path: Path,
) -> None:
    core = k8s.CoreV1Api(api)
    ns = await conftest.namespace(api, "incluster")
    image = f"tools/kubectl-{ns}:1"
    await push_kubectl_image(registry.host, image, tmp_path)
    script = (
        "while true; do echo '<<'; kubectl get pods -o name 2>&1; "
        "echo host=$KUBERNETES_SERVICE_HOST; echo '>>'; sleep 1; done"
    )
    container = {"name": "app", "image": image, "command": ["sh", "-c", script]}
    await core.create_namespaced_pod(ns, conftest.pod("lister", container))

    async def frame(wanted: str) -> str | None:
        try:
            log = str(await core.read_namespaced_pod_log("lister", ns))
        except k8s.ApiException:
            return None
        frames = [f.split(">>")[0] for f in log.split("<<\n")[1:] if ">>" in f]
        return frames[-1] if frames and wanted in frames[-1] else None

    refused = await waiting.until(lambda: frame("Forbidden"), timeout=180, what="a refusal")
    assert f'User "system:serviceaccount:{ns}:default" cannot list resource "pods"' in refused
    assert "host=10." in refused, refused  # the Service's cluster IP, not the host's

    rbac = k8s.RbacAuthorizationV1Api(api)
    rule = {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}
    await rbac.create_namespaced_role(ns, {"metadata": {"name": "pod-reader"}, "rules": [rule]})
    await rbac.create_namespaced_role_binding(
        ns,
        {
            "metadata": {"name": "pod-reader"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "pod-reader",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": ns}],
        },
    )
    seen: list[str] = []

    async def listed_pods() -> str | None:
        found = await frame("")
        seen[:] = [found or ""]
        return found if found and "pod/lister" in found else None

    try:
        listed = await waiting.until(listed_pods, timeout=90, what="the pod list")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the pod's last frame: {seen}") from None
    assert "Forbidden" not in listed
    await core.delete_namespace(ns)
