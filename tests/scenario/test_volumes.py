"""Pod volumes at the backend seam: the real API server (ConfigMaps, the TokenRequest
API, the ServiceAccount admission plugin's ``kube-api-access-*`` volume), the real
scheduler and volume sync, the in-memory fleet recording each volume put.

As the kubelet: a missing ConfigMap leaves the pod bound and waiting with
``FailedMount`` warnings until it exists, then its files are put; an edit of the
ConfigMap and a change of the pod's labels reach the running pod (only the volume
that changed is put again); a token is asked for again after 80% of its life. The
volume resync is 1 s here (30 s by default)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes_asyncio import client as k8s

from tests import waiting
from tests.provider import conftest as provider_conftest
from tests.scenario import conftest, fakebackend, test_races, test_updates
from vk_fargate import app
from vk_fargate.devcluster import cluster
from vk_fargate.fleet import models
from vk_fargate.k8s import kube

pytestmark = pytest.mark.e2e
JSON = dict[str, Any]


@pytest.fixture(scope="module")
async def provider(
    local_cluster: cluster.Cluster,
    api: k8s.ApiClient,
    fake: fakebackend.FakeMicroVMs,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[app.Provider]:
    home = tmp_path_factory.mktemp("scenario-volumes")
    cfg = conftest.scenario_settings(local_cluster, home, volume_resync_seconds=1.0)
    running = app.Provider(cfg, kube.Kube(api), fakebackend.implements(fake))
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


def files_of(fileset: models.FileSet) -> dict[str, bytes]:
    return {f.path: base64.b64decode(f.content) for f in fileset.items}


def puts(fake: fakebackend.FakeMicroVMs, uid: str, volume: str) -> list[dict[str, bytes]]:
    return [files_of(f) for vm, name, f in fake.volume_puts if vm == uid and name == volume]


def mounting(name: str, *volumes: JSON) -> JSON:
    pod = test_races.sleeper(name, volumes=list(volumes))
    pod["spec"]["containers"][0]["volumeMounts"] = [
        {"name": v["name"], "mountPath": f"/mnt/{v['name']}"} for v in volumes
    ]
    return pod


def claims(token: bytes) -> JSON:
    payload = token.split(b".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + b"=" * (-len(payload) % 4))))


async def test_a_missing_configmap_fails_the_mount_until_it_exists(
    api: k8s.ApiClient, provider: app.Provider, fake: fakebackend.FakeMicroVMs
) -> None:
    core = k8s.CoreV1Api(api)
    ns = await provider_conftest.namespace(api, "volmissing")
    pod = mounting("web", {"name": "cfg", "configMap": {"name": "app-config"}})
    uid = (await core.create_namespaced_pod(ns, pod)).metadata.uid
    message = 'MountVolume.SetUp failed for volume "cfg" : configmap "app-config" not found'

    async def failed_mount() -> bool:
        said = await test_updates.events_of(api, ns, uid)
        return ("Warning", "FailedMount", message) in said

    await waiting.until(failed_mount, timeout=30, what="a FailedMount event")
    bound = await core.read_namespaced_pod("web", ns)
    assert bound.spec.node_name  # bound and waiting, as on a kubelet
    given = {v.name: v for v in fake.given[uid].volumes}
    assert given["cfg"].files is not None and given["cfg"].files.pending
    assert puts(fake, uid, "cfg") == []
    # The admission plugin's volume was resolved at placement: token, CA, namespace.
    [access] = [v for v in given.values() if v.name.startswith("kube-api-access-")]
    assert access.files is not None and not access.files.pending
    resolved = files_of(access.files)
    assert sorted(resolved) == ["ca.crt", "namespace", "token"]
    assert resolved["namespace"] == ns.encode()
    assert claims(resolved["token"])["kubernetes.io"]["pod"] == {"name": "web", "uid": uid}

    body = {"metadata": {"name": "app-config"}, "data": {"app.conf": "color=blue"}}
    await core.create_namespaced_config_map(ns, body)

    async def put() -> bool:
        return puts(fake, uid, "cfg") == [{"app.conf": b"color=blue"}]

    await waiting.until(put, timeout=30, what="the volume's files to be put")


async def test_configmap_edits_and_label_changes_reach_the_running_pod(
    api: k8s.ApiClient, provider: app.Provider, fake: fakebackend.FakeMicroVMs
) -> None:
    core = k8s.CoreV1Api(api)
    ns = await provider_conftest.namespace(api, "volupdate")
    body = {"metadata": {"name": "settings"}, "data": {"greeting": "hello"}}
    await core.create_namespaced_config_map(ns, body)
    labels = {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}
    pod = mounting(
        "web",
        {"name": "cfg", "configMap": {"name": "settings"}},
        {"name": "info", "downwardAPI": {"items": [labels]}},
    )
    uid = (await core.create_namespaced_pod(ns, pod)).metadata.uid
    await test_races.running(api, ns, "web")
    given = {v.name: v.files for v in fake.given[uid].volumes}
    assert given["cfg"] is not None and files_of(given["cfg"]) == {"greeting": b"hello"}

    await core.patch_namespaced_config_map("settings", ns, {"data": {"greeting": "bye"}})

    async def edited() -> bool:
        return puts(fake, uid, "cfg") == [{"greeting": b"bye"}]

    await waiting.until(edited, timeout=30, what="the edited ConfigMap to be put")
    await core.patch_namespaced_pod("web", ns, {"metadata": {"labels": {"tier": "front"}}})

    async def relabelled() -> bool:
        return any(b'tier="front"' in p["labels"] for p in puts(fake, uid, "info"))

    await waiting.until(relabelled, timeout=30, what="the new labels to be put")
    # The ConfigMap's volume was looked at in the same pass: unchanged, not put again.
    assert puts(fake, uid, "cfg") == [{"greeting": b"bye"}]


async def test_an_immutable_configmap_is_read_once(
    api: k8s.ApiClient, provider: app.Provider, fake: fakebackend.FakeMicroVMs
) -> None:
    """Recreated with other data, an immutable ConfigMap's volume stays as it was, and
    the mutable one beside it follows its edit (the kubelet stops watching immutable
    objects)."""
    core = k8s.CoreV1Api(api)
    ns = await provider_conftest.namespace(api, "volimmutable")
    fixed = {"metadata": {"name": "fixed"}, "data": {"v": "1"}, "immutable": True}
    await core.create_namespaced_config_map(ns, fixed)
    await core.create_namespaced_config_map(ns, {"metadata": {"name": "live"}, "data": {"v": "1"}})
    pod = mounting(
        "web",
        {"name": "fixed", "configMap": {"name": "fixed"}},
        {"name": "live", "configMap": {"name": "live"}},
    )
    uid = (await core.create_namespaced_pod(ns, pod)).metadata.uid
    await test_races.running(api, ns, "web")

    async def synced_once() -> bool:  # the first resync after binding read it
        return provider.volumes.immutable(uid) == {("configMap", "fixed")}

    await waiting.until(synced_once, timeout=30, what="the first volume sync")
    await core.delete_namespaced_config_map("fixed", ns)
    await core.create_namespaced_config_map(ns, {**fixed, "data": {"v": "2"}})
    await core.patch_namespaced_config_map("live", ns, {"data": {"v": "2"}})

    async def live_put() -> bool:
        return puts(fake, uid, "live") == [{"v": b"2"}]

    await waiting.until(live_put, timeout=30, what="the mutable ConfigMap's edit to be put")
    assert puts(fake, uid, "fixed") == []


async def test_a_token_is_asked_for_again_after_80_percent_of_its_life(
    api: k8s.ApiClient, provider: app.Provider, fake: fakebackend.FakeMicroVMs
) -> None:
    core = k8s.CoreV1Api(api)
    ns = await provider_conftest.namespace(api, "voltoken")
    token = {"audience": "vault", "expirationSeconds": 600, "path": "vault-token"}
    pod = mounting(
        "web",
        {"name": "tok", "projected": {"sources": [{"serviceAccountToken": token}]}},
    )
    uid = (await core.create_namespaced_pod(ns, pod)).metadata.uid
    await test_races.running(api, ns, "web")
    first = fake.given[uid].volumes[0]
    assert first.name == "tok" and first.files is not None
    issued = claims(files_of(first.files)["vault-token"])
    assert issued["aud"] == ["vault"] and issued["exp"] - issued["iat"] == 600
    assert puts(fake, uid, "tok") == []
    # 500 s later by the tokens' clock: past 80% of 600 s.
    provider.scheduler.tokens.clock = lambda: time.time() + 500

    async def rotated() -> list[dict[str, bytes]] | None:
        return puts(fake, uid, "tok") or None

    [renewed] = await waiting.until(rotated, timeout=30, what="a new token to be put")
    assert claims(renewed["vault-token"])["kubernetes.io"]["pod"]["uid"] == uid
    assert renewed["vault-token"] != files_of(first.files)["vault-token"]
