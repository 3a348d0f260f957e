"""Pods run from real images pulled from the local registry, as the kubelet runs them:
Kubernetes' command/args rules over the image's Entrypoint and Cmd, the image's
root filesystem (never the host's), imageID, and the kubelet's pull events and errors.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client as k8s

from tests import conftest as root_conftest
from tests import kubectl as kubectl_runner
from tests import pushing, waiting
from tests.provider import conftest
from vk_fargate.devcluster import cluster
from vk_fargate.devcluster import fleet as devfleet
from vk_fargate.devcluster import registry as devregistry

pytestmark = pytest.mark.e2e


async def _pod(core: k8s.CoreV1Api, ns: str, manifest: dict[str, Any]) -> None:
    await core.create_namespaced_pod(ns, manifest)


async def _status(core: k8s.CoreV1Api, ns: str, name: str) -> k8s.V1ContainerStatus | None:
    pod = await core.read_namespaced_pod(name, ns)
    statuses = pod.status.container_statuses or []
    return statuses[0] if statuses else None


async def _events(core: k8s.CoreV1Api, ns: str, name: str) -> list[tuple[str, str]]:
    found = await core.list_namespaced_event(ns, field_selector=f"involvedObject.name={name}")
    return [(e.reason, e.message) for e in found.items]


async def _events_with(
    core: k8s.CoreV1Api, ns: str, name: str, *wanted: tuple[str, str]
) -> list[tuple[str, str]]:
    """The pod's events once each (reason, message prefix) of ``wanted`` is among them:
    the provider records events just after the status patch a test waits for."""

    async def seen() -> list[tuple[str, str]] | None:
        events = await _events(core, ns, name)
        ok = all(any(r == w and m.startswith(p) for r, m in events) for w, p in wanted)
        return events if ok else None

    return await waiting.until(seen, what=f"events {wanted} of {name}")


async def _log(core: k8s.CoreV1Api, ns: str, name: str) -> str:
    return str(await core.read_namespaced_pod_log(name, ns))


async def test_busybox_with_args_only_runs_them_in_the_images_root(
    api: k8s.ApiClient, provider: conftest.Provider, local_cluster: cluster.Cluster
) -> None:
    """`kubectl run w --image=busybox -- sh -c ...` sets only args: they replace Cmd.
    The container finds none of the host's secrets: not the dev cluster's CA key, not
    the host's programs."""
    core = k8s.CoreV1Api(api)
    ns = await conftest.namespace(api, "images")
    ca_key = local_cluster.layout.pem("ca.key")
    assert ca_key.exists()
    script = f"head -c 30 {ca_key} 2>&1; echo sbin=$(ls /usr/sbin | wc -l); hostname; sleep 3600"
    manifest = conftest.pod("w", {"name": "w", "image": "busybox", "args": ["sh", "-c", script]})
    await _pod(core, ns, manifest)

    async def running() -> k8s.V1ContainerStatus | None:
        status = await _status(core, ns, "w")
        return status if status is not None and status.state.running else None

    status = await waiting.until(running, timeout=120, what="the busybox pod Running")
    assert status.image_id.startswith("docker.io/library/busybox@sha256:")

    async def logged() -> str:
        text = await _log(core, ns, "w")
        return text if "\nw\n" in text else ""

    out = await waiting.until(logged, what="the pod's output")
    assert "No such file or directory" in out and "PRIVATE KEY" not in out
    assert "sbin=0\n" in out  # the image's /usr/sbin is empty; the host's is not
    await _events_with(core, ns, "w", ("Pulled", ""), ("Started", "Started container w"))
    await core.delete_namespace(ns)


async def test_pull_failures_say_why_in_the_kubelets_words(
    api: k8s.ApiClient, provider: conftest.Provider, kubeconfig: Path
) -> None:
    core = k8s.CoreV1Api(api)
    ns = await conftest.namespace(api, "images")
    missing = conftest.pod("missing", {"name": "app", "image": "myorg/api:1.4"})
    never = conftest.pod(
        "never", {"name": "app", "image": "myorg/other:2", "imagePullPolicy": "Never"}
    )
    for manifest in (missing, never):
        await _pod(core, ns, manifest)

    async def waiting_reason(name: str) -> str | None:
        status = await _status(core, ns, name)
        waiting_state = status.state.waiting if status is not None else None
        if waiting_state is None or waiting_state.reason == "ContainerCreating":
            return None
        return f"{waiting_state.reason}: {waiting_state.message}"

    # The status alternates between ErrImagePull and ImagePullBackOff as pulls are
    # retried; the events keep the registry's reason.
    events = await _events_with(
        core,
        ns,
        "missing",
        ("Failed", 'Failed to pull image "myorg/api:1.4": failed to pull and unpack image'),
        ("Failed", "Error: ErrImagePull"),
    )
    failure = next(m for r, m in events if m.startswith("Failed to pull image"))
    assert "not found" in failure or "unknown" in failure, failure
    never_pull = await waiting.until(
        lambda: waiting_reason("never"), timeout=120, what="ErrImageNeverPull"
    )
    assert never_pull == (
        'ErrImageNeverPull: Container image "myorg/other:2" is not present with pull policy '
        "of Never"
    )
    code, out, _err = await kubectl_runner.run_async(
        kubeconfig, "-n", ns, "describe", "pod", "never"
    )
    assert code == 0 and "ErrImageNeverPull" in out.decode()
    await core.delete_namespace(ns)


async def test_security_context_users_read_only_root_seccomp_and_run_as_non_root(
    api: k8s.ApiClient, provider: conftest.Provider
) -> None:
    core = k8s.CoreV1Api(api)
    ns = await conftest.namespace(api, "secctx")
    report = (
        "grep Seccomp: /proc/self/status; unshare -U true 2>&1 && echo userns-made; "
        "echo uid=$(id -u) gid=$(id -g); touch /probe 2>&1 || true; sleep 3600"
    )

    def shell(name: str, image: str, **context: Any) -> dict[str, Any]:
        container: dict[str, Any] = {"name": "app", "image": image, "args": ["sh", "-c", report]}
        if context:
            container["securityContext"] = context
        return conftest.pod(name, container)

    pods = {
        "image-user": shell("image-user", "busybox:nonroot"),
        "run-as": shell("run-as", "busybox", runAsUser=2000, runAsGroup=3000),
        "read-only": shell("read-only", "busybox", readOnlyRootFilesystem=True),
        "non-root": shell("non-root", "busybox", runAsNonRoot=True),
        "seccomp": shell("seccomp", "busybox"),
    }
    pods["seccomp"]["spec"]["securityContext"] = {"seccompProfile": {"type": "RuntimeDefault"}}
    for manifest in pods.values():
        await _pod(core, ns, manifest)

    async def output(name: str) -> str:
        text = await _log(core, ns, name)
        return text if "uid=" in text else ""

    image_user = await waiting.until(lambda: output("image-user"), timeout=120, what="USER 1000")
    assert "uid=1000 gid=1000" in image_user
    assert "Permission denied" in image_user  # / belongs to root
    run_as = await waiting.until(lambda: output("run-as"), timeout=120, what="runAsUser")
    assert "uid=2000 gid=3000" in run_as
    read_only = await waiting.until(lambda: output("read-only"), timeout=120, what="read-only")
    assert "uid=0" in read_only and "Read-only file system" in read_only
    assert "Seccomp:\t0" in read_only  # Kubernetes' default: Unconfined
    assert "userns-made" in read_only  # a user namespace needs no capability...
    confined = await waiting.until(lambda: output("seccomp"), timeout=120, what="seccomp")
    assert "Seccomp:\t2" in confined, confined  # a filter, inherited from the pod
    # ... but RuntimeDefault refuses unshare(CLONE_NEWUSER), as Docker's default does.
    assert "unshare(0x10000000): Operation not permitted" in confined, confined
    assert "userns-made" not in confined

    async def refused() -> str | None:
        status = await _status(core, ns, "non-root")
        state = status.state.waiting if status is not None else None
        if state is None or state.reason != "CreateContainerConfigError":
            return None
        return str(state.message)

    message = await waiting.until(refused, timeout=120, what="runAsNonRoot refused")
    assert message.startswith("container has runAsNonRoot and image will run as root (pod: ")
    assert message.endswith(", container: app)")
    await _events_with(core, ns, "non-root", ("Failed", f"Error: {message}"))
    await core.delete_namespace(ns)


async def test_a_pull_that_failed_is_retried_with_back_off_until_the_image_exists(
    api: k8s.ApiClient, provider: conftest.Provider, registry: devregistry.Registry
) -> None:
    """ErrImagePull, then ImagePullBackOff, and Running once the image is pushed: a typo
    fixed in the registry (or a registry back from an outage) loses nothing."""
    core = k8s.CoreV1Api(api)
    ns = await conftest.namespace(api, "images")
    image = f"myorg/late-{ns}:1"
    await _pod(
        core, ns, conftest.pod("late", {"name": "app", "image": image, "args": ["sleep", "3600"]})
    )

    async def reason(wanted: str) -> bool:
        status = await _status(core, ns, "late")
        state = status.state.waiting if status is not None else None
        return state is not None and state.reason == wanted

    await waiting.until(lambda: reason("ImagePullBackOff"), timeout=60, what="ImagePullBackOff")
    await pushing.push_busybox(registry.host, image)

    async def running() -> bool:
        status = await _status(core, ns, "late")
        return status is not None and status.state.running is not None

    await waiting.until(running, timeout=120, what="Running once the image exists")

    await _events_with(
        core,
        ns,
        "late",
        ("Pulled", f'Successfully pulled image "{image}" in '),
        ("BackOff", f'Back-off pulling image "{image}"'),
        ("Failed", "Error: ImagePullBackOff"),
    )
    await core.delete_namespace(ns)


def _docker_config(host: str, user: str, password: str) -> dict[str, Any]:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    config = {"auths": {host: {"auth": auth}}}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "pull"},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": base64.b64encode(json.dumps(config).encode()).decode()},
    }


async def test_a_private_image_needs_its_pull_secret_which_fleetd_never_stores(
    api: k8s.ApiClient,
    provider: conftest.Provider,
    private_registry: devregistry.Registry,
    fleet: devfleet.Fleet,
) -> None:
    core = k8s.CoreV1Api(api)
    ns = await conftest.namespace(api, "private")
    image = f"{private_registry.host}/{root_conftest.PRIVATE_IMAGE}"
    app = {"name": "app", "image": image, "args": ["sleep", "3600"]}
    await _pod(core, ns, conftest.pod("anonymous", app))

    events = await _events_with(
        core, ns, "anonymous", ("Failed", f'Failed to pull image "{image}"')
    )
    failure = next(m for r, m in events if m.startswith("Failed to pull image")).lower()
    assert "unauthorized" in failure or "authentication required" in failure, failure

    password = root_conftest.PRIVATE_PASSWORD
    await core.create_namespaced_secret(
        ns, _docker_config(private_registry.host, root_conftest.PRIVATE_USER, password)
    )
    await _pod(core, ns, conftest.pod("with-secret", app, imagePullSecrets=[{"name": "pull"}]))

    async def running() -> bool:
        status = await _status(core, ns, "with-secret")
        return status is not None and status.state.running is not None

    await waiting.until(running, timeout=120, what="the private image Running with its secret")
    state_dir = fleet.config.parent
    leaked = [
        str(path)
        for path in state_dir.rglob("*")
        if path.is_file() and not path.is_symlink() and password.encode() in path.read_bytes()
    ]
    assert leaked == [], f"the pull password is in {leaked}"
    await core.delete_namespace(ns)
