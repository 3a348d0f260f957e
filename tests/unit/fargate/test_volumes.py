"""The pure translation of pod volumes (``fargate.volumes``): plain pod specs and
sources in, the fleet's volumes and mounts (or the kubelet's FailedMount text) out."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from vk_fargate.fargate import dns, environment, microvms, mounts, sizing, validation, volumes
from vk_fargate.fleet import models

JSON = dict[str, Any]
SIZE = sizing.Size(1000, 2048, 20)


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def pod(*vols: JSON, at: list[JSON] | None = None, env: list[JSON] | None = None) -> JSON:
    container: JSON = {"name": "app", "image": "busybox", "volumeMounts": at or []}
    container["env"] = env or []
    container["resources"] = {"limits": {"memory": "256Mi", "cpu": "500m"}}
    return {
        "metadata": {
            "name": "web-1",
            "namespace": "shop",
            "uid": "uid-1",
            "labels": {"tier": "web", "app": 'say "hi"'},
            "annotations": {"note": "a\nb"},
        },
        "spec": {"containers": [container], "volumes": list(vols)},
    }


def sources(
    config_maps: dict[str, JSON | None] | None = None,
    secrets: dict[str, JSON | None] | None = None,
    tokens: dict[volumes.TokenKey, str] | None = None,
    token_error: str = "no token",
) -> volumes.Sources:
    return volumes.Sources(config_maps or {}, secrets or {}, tokens or {}, SIZE, token_error)


def contents(fileset: models.FileSet) -> dict[str, tuple[str, int | None]]:
    return {f.path: (base64.b64decode(f.content).decode(), f.mode) for f in fileset.items}


def only(result: volumes.Result) -> models.FileSet:
    [volume] = result.volumes
    assert volume.files is not None
    return volume.files


CFG = {"data": {"a.conf": "x=1", "b": "2"}, "binaryData": {"blob": b64(b"\x00\x01")}}


def test_configmap_all_keys_with_binary_data_and_default_mode() -> None:
    volume = {"name": "cfg", "configMap": {"name": "app-config", "defaultMode": 0o400}}
    files = only(volumes.resolve(pod(volume), sources({"app-config": CFG})))
    assert files.default_mode == 0o400
    assert [f.path for f in files.items] == ["a.conf", "b", "blob"]
    assert base64.b64decode(files.items[2].content) == b"\x00\x01"
    assert not files.pending


def test_configmap_items_with_paths_and_modes() -> None:
    items = [{"key": "a.conf", "path": "conf/app.conf", "mode": 0o600}, {"key": "b", "path": "b"}]
    volume = {"name": "cfg", "configMap": {"name": "app-config", "items": items}}
    files = only(volumes.resolve(pod(volume), sources({"app-config": CFG})))
    assert files.default_mode == 0o644
    assert contents(files) == {"conf/app.conf": ("x=1", 0o600), "b": ("2", None)}


def test_a_missing_configmap_is_pending_with_the_kubelets_message() -> None:
    volume = {"name": "cfg", "configMap": {"name": "app-config"}}
    result = volumes.resolve(pod(volume), sources({"app-config": None}))
    assert only(result).pending
    assert result.failures == {
        "cfg": 'MountVolume.SetUp failed for volume "cfg" : configmap "app-config" not found'
    }


def test_a_missing_key_is_the_kubelets_message_unless_optional() -> None:
    items = [{"key": "nope", "path": "n"}, {"key": "b", "path": "b"}]
    volume: JSON = {"name": "cfg", "configMap": {"name": "app-config", "items": items}}
    result = volumes.resolve(pod(volume), sources({"app-config": CFG}))
    assert result.failures["cfg"].endswith(" : configmap references non-existent config key: nope")
    volume["configMap"]["optional"] = True
    result = volumes.resolve(pod(volume), sources({"app-config": CFG}))
    assert not result.failures
    assert contents(only(result)) == {"b": ("2", None)}


def test_an_optional_missing_source_is_an_empty_volume() -> None:
    volume = {"name": "s", "secret": {"secretName": "creds", "optional": True}}
    result = volumes.resolve(pod(volume), sources(secrets={"creds": None}))
    assert not result.failures
    assert only(result).items == [] and not only(result).pending


def test_secret_values_are_decoded_keys_and_missing_ones_named() -> None:
    secret = {"data": {"user": b64("admin"), "pass": b64("s3cret")}}
    volume: JSON = {"name": "s", "secret": {"secretName": "creds"}}
    files = only(volumes.resolve(pod(volume), sources(secrets={"creds": secret})))
    assert contents(files) == {"pass": ("s3cret", None), "user": ("admin", None)}
    volume["secret"]["items"] = [{"key": "token", "path": "t"}]
    result = volumes.resolve(pod(volume), sources(secrets={"creds": secret}))
    assert result.failures == {
        "s": 'MountVolume.SetUp failed for volume "s" : references non-existent secret key: token'
    }
    result = volumes.resolve(pod(volume), sources(secrets={"creds": None}))
    assert result.failures["s"].endswith(' : secret "creds" not found')


def test_downward_api_files_in_the_kubelets_formats() -> None:
    items = [
        {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
        {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}},
        {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
        {"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}},
        {"path": "uid", "fieldRef": {"fieldPath": "metadata.uid"}},
        {"path": "tier", "fieldRef": {"fieldPath": "metadata.labels['tier']"}, "mode": 0o400},
        {
            "path": "mem",
            "resourceFieldRef": {
                "containerName": "app",
                "resource": "limits.memory",
                "divisor": "1Mi",
            },
        },
        {"path": "cpu", "resourceFieldRef": {"containerName": "app", "resource": "limits.cpu"}},
    ]
    files = only(volumes.resolve(pod({"name": "info", "downwardAPI": {"items": items}}), sources()))
    assert contents(files) == {
        "labels": ('app="say \\"hi\\""\ntier="web"', None),
        "annotations": ('note="a\\nb"', None),
        "name": ("web-1", None),
        "ns": ("shop", None),
        "uid": ("uid-1", None),
        "tier": ("web", 0o400),
        "mem": ("256", None),
        "cpu": ("1", None),  # 500m rounded up to whole cores, as the kubelet does
    }


def test_the_service_account_admission_volume() -> None:
    """``kube-api-access-*``, as the ServiceAccount admission plugin adds it."""
    volume = {
        "name": "kube-api-access-x7k2p",
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {
                    "configMap": {
                        "name": "kube-root-ca.crt",
                        "items": [{"key": "ca.crt", "path": "ca.crt"}],
                    }
                },
                {
                    "downwardAPI": {
                        "items": [
                            {"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}
                        ]
                    }
                },
            ],
        },
    }
    the_pod = pod(volume)
    refs = volumes.references(the_pod)
    assert refs.config_maps == {"kube-root-ca.crt"} and refs.tokens == {("", 3607)}
    found = sources({"kube-root-ca.crt": {"data": {"ca.crt": "PEM"}}}, tokens={("", 3607): "jwt"})
    files = only(volumes.resolve(the_pod, found))
    assert contents(files) == {
        "ca.crt": ("PEM", None),
        "namespace": ("shop", None),
        "token": ("jwt", None),
    }
    # Without its token nor its ConfigMap: both named, as Go's aggregate error.
    result = volumes.resolve(the_pod, sources({}, token_error='serviceaccounts "x" not found'))
    assert result.failures[volume["name"]] == (
        f'MountVolume.SetUp failed for volume "{volume["name"]}" : [failed to fetch token: '
        'serviceaccounts "x" not found, configmap "kube-root-ca.crt" not found]'
    )


def test_projected_token_audience_and_expiration_default() -> None:
    token = {"serviceAccountToken": {"audience": "vault", "path": "vault-token"}}
    volume = {"name": "t", "projected": {"sources": [token]}}
    assert volumes.references(pod(volume)).tokens == {("vault", 3600)}


def test_empty_dir_medium_and_size_limit_in_mib_rounded_up() -> None:
    vols = [
        {"name": "scratch", "emptyDir": {}},
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "1500k"}},
    ]
    result = volumes.resolve(pod(*vols), sources())
    assert [v.empty_dir for v in result.volumes] == [
        models.EmptyDir(),
        models.EmptyDir(medium="Memory", size_limit_mib=2),
    ]


def test_mounts_with_sub_path_expr_from_the_environment() -> None:
    env = [models.EnvVar(name="POD", value="web-1")]
    container = {
        "volumeMounts": [
            {"name": "cfg", "mountPath": "/etc/app", "readOnly": True},
            {"name": "data", "mountPath": "/data", "subPathExpr": "logs/$(POD)"},
            {"name": "cfg", "mountPath": "/etc/one", "subPath": "a.conf"},
        ]
    }
    assert mounts.mounts(container, env) == [
        models.VolumeMount(name="cfg", mount_path="/etc/app", read_only=True),
        models.VolumeMount(name="data", mount_path="/data", sub_path="logs/web-1"),
        models.VolumeMount(name="cfg", mount_path="/etc/one", sub_path="a.conf"),
    ]
    container = {"volumeMounts": [{"name": "d", "mountPath": "/d", "subPathExpr": "$(NOPE)/x"}]}
    with pytest.raises(environment.ConfigError, match="missing value for NOPE"):
        mounts.mounts(container, env)


def test_the_microvm_spec_carries_volumes_and_mounts() -> None:
    volume = {"name": "cfg", "configMap": {"name": "app-config"}}
    the_pod = pod(volume, at=[{"name": "cfg", "mountPath": "/etc/app"}])
    empty = environment.Sources({}, {}, [], [], "node", SIZE)
    spec = microvms.spec(
        the_pod,
        size=SIZE,
        profile="p",
        cluster="c",
        sources=empty,
        pull_secrets=[],
        names=dns.names(the_pod, dns.Cluster()),
        mounted=volumes.resolve(the_pod, sources({"app-config": None})),
    )
    assert spec.volumes[0].files is not None and spec.volumes[0].files.pending
    # read-only as the kubelet mounts a configMap volume, though the mount did not say
    assert spec.containers[0].volume_mounts == [
        models.VolumeMount(name="cfg", mount_path="/etc/app", read_only=True)
    ]


def test_mount_propagation_is_refused_and_node_volumes_are_not_carried() -> None:
    listed = [{"name": "d", "mountPath": "/d", "mountPropagation": "HostToContainer"}]
    spec = pod({"name": "d", "emptyDir": {}}, at=listed)["spec"]
    assert validation.refusal(spec) == (
        "Pod not supported on Fargate: fields not supported: MountPropagation"
    )
    listed[0]["mountPropagation"] = "None"
    assert validation.refusal(spec) is None
    claim = {"name": "data", "persistentVolumeClaim": {"claimName": "c"}}
    assert volumes.unsupported({"volumes": [claim]}) == (
        "volumes not supported by vk-fargate yet: data: persistentVolumeClaim"
    )
    assert volumes.unsupported(pod({"name": "d", "emptyDir": {}})["spec"]) is None


def test_go_quote() -> None:
    assert volumes.go_quote('a"b\\c\n\x01é') == '"a\\"b\\\\c\\n\\x01é"'


def test_a_key_the_atomic_writer_cannot_write_fails_the_mount() -> None:
    volume = {"name": "cfg", "configMap": {"name": "c"}}
    result = volumes.resolve(pod(volume), sources({"c": {"data": {"..data": "x"}}}))
    assert "must be a relative path without '..'" in result.failures["cfg"]
