"""Tests of ocispec (a container's runc spec from umoci's) and the kubelet's duration text."""

from __future__ import annotations

from typing import Any

from vk_fargate.controllers import pods
from vk_fargate.fleetd import ocispec

UMOCI: dict[str, Any] = {
    "ociVersion": "1.0.2",
    "process": {
        "terminal": True,
        "user": {"uid": 1000, "gid": 1000},
        "args": ["sh"],
        "env": ["PATH=/bin"],
        "cwd": "/",
        "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"]},
    },
    "root": {"path": "rootfs"},
    "hostname": "umoci-default",
    "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/etc/hosts", "type": "bind", "source": "/etc/hosts"},
    ],
    "linux": {"namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "mount"}]},
}


def container(**changes: Any) -> ocispec.Container:
    fields: dict[str, Any] = {
        "argv": ["nginx", "-g", "daemon off;"],
        "env": [("PATH", "/usr/bin"), ("MODE", "prod")],
        "cwd": "/srv",
        "hostname": "web-1",
        "netns": "/run/netns/vkf-1",
        "cgroups_path": None,
        "pod_files": {"/etc/hosts": "/vm/etc/hosts", "/etc/resolv.conf": "/vm/etc/resolv.conf"},
        **changes,
    }
    return ocispec.Container(**fields)


def test_the_pod_decides_command_env_cwd_and_hostname_the_image_its_user() -> None:
    spec = ocispec.spec(UMOCI, container())
    assert spec["process"]["args"] == ["nginx", "-g", "daemon off;"]
    assert spec["process"]["env"] == ["PATH=/usr/bin", "MODE=prod"]
    assert spec["process"]["cwd"] == "/srv"
    assert spec["process"]["terminal"] is False
    assert spec["process"]["user"] == {"uid": 1000, "gid": 1000}
    assert spec["hostname"] == "web-1"
    assert UMOCI["process"]["args"] == ["sh"], "the base is not changed"


def test_the_pods_network_namespace_is_joined_the_rest_are_the_containers_own() -> None:
    namespaces = ocispec.spec(UMOCI, container())["linux"]["namespaces"]
    assert {"type": "network", "path": "/run/netns/vkf-1"} in namespaces
    assert {"type": "pid"} in namespaces and {"type": "mount"} in namespaces
    assert len([n for n in namespaces if n["type"] == "network"]) == 1
    fresh = ocispec.spec(UMOCI, container(netns=None))["linux"]["namespaces"]
    assert {"type": "network"} in fresh


def test_pod_files_replace_the_images_and_caps_are_containerds_defaults() -> None:
    spec = ocispec.spec(UMOCI, container(cgroups_path="/vk-fargate/vm/container-web-0"))
    binds = {m["destination"]: m["source"] for m in spec["mounts"] if m["type"] == "bind"}
    assert binds == {"/etc/hosts": "/vm/etc/hosts", "/etc/resolv.conf": "/vm/etc/resolv.conf"}
    assert {"destination": "/proc", "type": "proc", "source": "proc"} in spec["mounts"]
    assert spec["process"]["capabilities"]["bounding"] == list(ocispec.DEFAULT_CAPABILITIES)
    assert "CAP_SYS_ADMIN" not in ocispec.DEFAULT_CAPABILITIES
    assert spec["linux"]["cgroupsPath"] == "/vk-fargate/vm/container-web-0"


def test_pull_durations_print_as_go_truncated_to_milliseconds() -> None:
    assert pods.go_duration(0.0004) == "0s"
    assert pods.go_duration(0.5234) == "523ms"
    assert pods.go_duration(1.2) == "1.2s"
    assert pods.go_duration(12.3456) == "12.345s"
    assert pods.go_duration(60.0) == "1m0s"
    assert pods.go_duration(123.004) == "2m3.004s"


def test_volumes_are_bound_after_the_pod_files_and_replace_them_at_their_paths() -> None:
    volumes = (("/data", "/vm/volumes/data", False), ("/etc/hosts", "/vm/volumes/h", True))
    spec = ocispec.spec(UMOCI, container(volumes=volumes))
    binds = [(m["destination"], m["source"], m["options"]) for m in spec["mounts"][1:]]
    assert binds == [
        ("/etc/resolv.conf", "/vm/etc/resolv.conf", ["rbind", "rprivate", "rw"]),
        ("/data", "/vm/volumes/data", ["rbind", "rprivate", "rw"]),
        ("/etc/hosts", "/vm/volumes/h", ["rbind", "rprivate", "ro"]),
    ]
