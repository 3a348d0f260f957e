"""Which spec changes fleetd takes in place (images) and how it names the rest."""

from __future__ import annotations

from typing import Any

from tests.fleetd import helpers
from vk_fargate.fleetd import specdiff


def spec(**app: Any) -> Any:
    return helpers.spec(
        {"name": "web", "image": "nginx", **app},
        helpers.shell("side", "sleep 300"),
        init_containers=[{"name": "setup", "image": "busybox", "command": ["true"]}],
    )


def test_image_fields_change_in_place() -> None:
    base = spec()
    new = spec(image="nginx:1.27", image_pull_policy="Always", pull_credentials="u:p")
    init = base.init_containers[0].model_copy(update={"image": "busybox:1.36"})
    new = new.model_copy(update={"init_containers": [init]})
    assert specdiff.refused(base, new) == []
    assert specdiff.refused(base, base) == []


def test_every_other_difference_is_named() -> None:
    base = spec()
    new = spec(env=[{"name": "A", "value": "1"}], command=["nginx"], image="nginx:2")
    new = new.model_copy(update={"vcpu_millis": 500, "labels": {"pod": "x"}})
    assert specdiff.refused(base, new) == [
        "vcpu_millis",
        "labels",
        "containers[web].command",
        "containers[web].env",
    ]
    fewer = base.model_copy(update={"containers": base.containers[:1]})
    assert specdiff.refused(base, fewer) == ["containers"]
    swapped = base.model_copy(update={"containers": base.containers[::-1]})
    assert specdiff.refused(base, swapped) == ["containers"]
    no_init = base.model_copy(update={"init_containers": []})
    assert specdiff.refused(base, no_init) == ["init_containers"]


def test_files_of_volumes_do_not_count_other_volume_changes_do() -> None:
    def with_volumes(*volumes: dict[str, Any], mounts: int = 1) -> Any:
        return helpers.spec(
            {"name": "web", "volume_mounts": [{"name": "cfg", "mount_path": "/cfg"}][:mounts]},
            volumes=list(volumes),
        )

    cfg = {"name": "cfg", "files": {"items": [{"path": "a", "content": "YQ=="}]}}
    other = {"name": "cfg", "files": {"items": [{"path": "b", "mode": 0o600}], "pending": True}}
    assert specdiff.refused(with_volumes(cfg), with_volumes(other)) == []
    scratch = {"name": "scratch", "empty_dir": {}}
    assert specdiff.refused(with_volumes(cfg), with_volumes(cfg, scratch)) == ["volumes"]
    assert specdiff.refused(with_volumes(cfg), with_volumes(cfg, mounts=0)) == [
        "containers[web].volume_mounts"
    ]
    as_dir = {"name": "cfg", "empty_dir": {}}
    assert specdiff.refused(with_volumes(cfg), with_volumes(as_dir)) == ["volumes"]
