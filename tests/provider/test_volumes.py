"""Pod volumes through the real provider, fleetd and runc, read from inside the
container (its log prints what it sees): configMap, secret, downwardAPI, projected
with the ServiceAccount token, emptyDir shared with an init container; a ConfigMap edit
reaching a running pod; a missing ConfigMap holding the pod in ContainerCreating with
the kubelet's FailedMount until it exists."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from kubernetes_asyncio import client as k8s

from tests import waiting
from tests.provider import conftest

pytestmark = pytest.mark.e2e


def looping(script: str) -> list[str]:
    """``sh -c`` printing ``script``'s output every second, framed, for the log to show."""
    return ["sh", "-c", f"while true; do echo '<<'; {script}; echo '>>'; sleep 1; done"]


async def last_frame(core: k8s.CoreV1Api, ns: str, name: str) -> str | None:
    """What the looping container printed last, once it has printed a whole frame."""
    try:
        log = str(await core.read_namespaced_pod_log(name, ns))
    except k8s.ApiException:
        return None
    frames = [f.split(">>")[0] for f in log.split("<<\n")[1:] if ">>" in f]
    return frames[-1] if frames else None


def volume_pod(
    name: str, script: str, volumes: list[dict[str, Any]], mounts: list[dict[str, Any]], **spec: Any
) -> dict[str, Any]:
    container = {
        "name": "app",
        "image": "busybox",
        "command": looping(script),
        "volumeMounts": mounts,
    }
    return conftest.pod(name, container, volumes=volumes, **spec)


async def test_config_map_files_follow_an_edit_within_90_seconds(
    api: k8s.ApiClient, provider: conftest.Provider
) -> None:
    core = k8s.CoreV1Api(api)
    ns = await conftest.namespace(api, "vol-cm")
    await core.create_namespaced_config_map(
        ns, {"metadata": {"name": "app"}, "data": {"greeting": "hello", "other": "x"}}
    )
    volumes = [
        {
            "name": "config",
            "configMap": {
                "name": "app",
                "items": [{"key": "greeting", "path": "conf/greeting", "mode": 0o600}],
            },
        }
    ]
    mounts = [{"name": "config", "mountPath": "/etc/app", "readOnly": True}]
    script = "; ".join(
        [
            "cat /etc/app/conf/greeting",
            "echo",
            "stat -L -c %a /etc/app/conf/greeting",
            "ls /etc/app",
            "touch /etc/app/new 2>&1 | grep -o 'Read-only file system'",
        ]
    )
    await core.create_namespaced_pod(ns, volume_pod("cm", script, volumes, mounts))

    first = await waiting.until(
        lambda: last_frame(core, ns, "cm"), timeout=120, what="a first frame"
    )
    assert first.split("\n")[:4] == ["hello", "600", "conf", "Read-only file system"], first

    await core.patch_namespaced_config_map("app", ns, {"data": {"greeting": "bonjour"}})

    async def updated() -> str | None:
        frame = await last_frame(core, ns, "cm")
        return frame if frame and frame.startswith("bonjour") else None

    await waiting.until(updated, timeout=90, what="the edit inside the pod")
    await core.delete_namespace(ns)


async def test_secret_downward_api_and_shared_empty_dir(
    api: k8s.ApiClient, provider: conftest.Provider
) -> None:
    core = k8s.CoreV1Api(api)
    ns = await conftest.namespace(api, "vol-mix")
    secret = base64.b64encode(b"s3cr3t").decode()
    await core.create_namespaced_secret(
        ns, {"metadata": {"name": "db"}, "data": {"password": secret}}
    )
    volumes = [
        {"name": "db", "secret": {"secretName": "db", "defaultMode": 0o400}},
        {
            "name": "info",
            "downwardAPI": {
                "items": [
                    {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                    {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                ]
            },
        },
        {"name": "scratch", "emptyDir": {}},
    ]
    mounts = [
        {"name": "db", "mountPath": "/secrets"},
        {"name": "info", "mountPath": "/info"},
        {"name": "scratch", "mountPath": "/scratch"},
    ]
    init = {
        "name": "seed",
        "image": "busybox",
        "command": ["sh", "-c", "echo seeded > /scratch/from-init"],
        "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
    }
    script = "; ".join(
        [
            "cat /secrets/password",
            "echo",
            "stat -L -c %a /secrets/password",
            "cat /info/name",
            "echo",
            "cat /scratch/from-init",
            "grep tier /info/labels",
        ]
    )
    body = volume_pod("mix", script, volumes, mounts, initContainers=[init])
    body["metadata"]["labels"]["tier"] = "one"
    await core.create_namespaced_pod(ns, body)

    frame = await waiting.until(lambda: last_frame(core, ns, "mix"), timeout=120, what="a frame")
    lines = frame.split("\n")
    assert lines[:5] == ["s3cr3t", "400", "mix", "seeded", 'tier="one"'], frame

    await core.patch_namespaced_pod("mix", ns, {"metadata": {"labels": {"tier": "two"}}})

    async def relabelled() -> str | None:
        frame = await last_frame(core, ns, "mix")
        return frame if frame and 'tier="two"' in frame else None

    await waiting.until(relabelled, timeout=90, what="the new label inside the pod")
    await core.delete_namespace(ns)


async def test_the_service_account_token_authenticates_as_the_pods_account(
    api: k8s.ApiClient, provider: conftest.Provider
) -> None:
    """The projected ``kube-api-access-*`` volume the ServiceAccount admission plugin
    adds: a token bound to the pod, the cluster CA and the namespace."""
    core = k8s.CoreV1Api(api)
    ns = await conftest.namespace(api, "vol-sa")
    where = "/var/run/secrets/kubernetes.io/serviceaccount"
    script = f"cat {where}/namespace; echo; cat {where}/token; echo; "
    script += f"grep -c 'BEGIN CERTIFICATE' {where}/ca.crt"
    container = {"name": "app", "image": "busybox", "command": looping(script)}
    await core.create_namespaced_pod(ns, conftest.pod("sa", container))

    frame = await waiting.until(lambda: last_frame(core, ns, "sa"), timeout=120, what="a frame")
    namespace, token, certificates = frame.split("\n")[:3]
    assert namespace == ns and int(certificates) >= 1, frame
    review = await k8s.AuthenticationV1Api(api).create_token_review({"spec": {"token": token}})
    assert review.status.authenticated, review.status.error
    assert review.status.user.username == f"system:serviceaccount:{ns}:default"
    pod = await core.read_namespaced_pod("sa", ns)
    claims = review.status.user.extra or {}
    assert claims.get("authentication.kubernetes.io/pod-uid") == [pod.metadata.uid], json.dumps(
        claims
    )
    await core.delete_namespace(ns)


async def test_a_missing_config_map_holds_the_pod_until_it_exists(
    api: k8s.ApiClient, provider: conftest.Provider
) -> None:
    core = k8s.CoreV1Api(api)
    ns = await conftest.namespace(api, "vol-missing")
    volumes = [{"name": "config", "configMap": {"name": "late"}}]
    mounts = [{"name": "config", "mountPath": "/etc/late"}]
    await core.create_namespaced_pod(ns, volume_pod("late", "cat /etc/late/k", volumes, mounts))

    async def failed_mount() -> str | None:
        found = await core.list_namespaced_event(ns, field_selector="involvedObject.name=late")
        messages = [e.message for e in found.items if e.reason == "FailedMount"]
        return messages[0] if messages else None

    message = await waiting.until(failed_mount, timeout=120, what="FailedMount")
    assert message == 'MountVolume.SetUp failed for volume "config" : configmap "late" not found'
    pod = await core.read_namespaced_pod("late", ns)
    waiting_state = pod.status.container_statuses[0].state.waiting
    assert waiting_state is not None and waiting_state.reason == "ContainerCreating"

    await core.create_namespaced_config_map(
        ns, {"metadata": {"name": "late"}, "data": {"k": "here"}}
    )

    async def shown() -> str | None:
        frame = await last_frame(core, ns, "late")
        return frame if frame and frame.startswith("here") else None

    await waiting.until(shown, timeout=120, what="the pod to start once the ConfigMap exists")
    await core.delete_namespace(ns)
