"""The fleet's volume fields refuse what the kubelet's validation refuses."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from vk_fargate.fleet import models


def spec(volumes: list[dict[str, Any]], mounts: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "vcpu_millis": 250,
        "mem_mib": 512,
        "volumes": volumes,
        "containers": [{"name": "app", "image": "busybox", "volume_mounts": mounts}],
    }


CONFIG = {"name": "config", "files": {"items": [{"path": "app.conf", "content": "eA=="}]}}


def test_a_mounted_files_volume_is_accepted() -> None:
    parsed = models.MicroVMSpec.model_validate(
        spec([CONFIG], [{"name": "config", "mount_path": "/etc/app", "read_only": True}])
    )
    assert parsed.volumes[0].files is not None
    assert parsed.volumes[0].files.default_mode == 0o644
    assert parsed.containers[0].volume_mounts[0].read_only


@pytest.mark.parametrize(
    ("volumes", "mounts", "message"),
    [
        ([CONFIG], [{"name": "other", "mount_path": "/x"}], "names no volume"),
        ([CONFIG, CONFIG], [], "volume names must be unique"),
        ([{"name": "both", "empty_dir": {}, "files": {}}], [], "exactly one of"),
        ([{"name": "none"}], [], "exactly one of"),
        (
            [CONFIG],
            [{"name": "config", "mount_path": "/a"}, {"name": "config", "mount_path": "/a"}],
            "used twice",
        ),
        ([CONFIG], [{"name": "config", "mount_path": "/a/../etc"}], "must not contain '..'"),
        ([CONFIG], [{"name": "config", "mount_path": "relative"}], "should match pattern"),
        ([CONFIG], [{"name": "config", "mount_path": "/a", "sub_path": "../x"}], "without '..'"),
        ([{"name": "f", "files": {"items": [{"path": "/abs"}]}}], [], "without '..'"),
        ([{"name": "f", "files": {"items": [{"path": "..data"}]}}], [], "without '..'"),
        ([{"name": "f", "files": {"items": [{"path": "a", "mode": 0o1000}]}}], [], "less than"),
    ],
)
def test_bad_volumes_are_refused(
    volumes: list[dict[str, Any]], mounts: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        models.MicroVMSpec.model_validate(spec(volumes, mounts))


def test_file_content_stays_out_of_reprs() -> None:
    file = models.VolumeFile(path="token", content="c2VjcmV0")
    assert "c2VjcmV0" not in repr(file)
