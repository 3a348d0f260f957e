"""Tests of sidecars on their way from a pod to the fleet's spec: init containers with
restart_policy Always, in their place; an image change of theirs applied in place."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from vk_fargate.fargate import dns, environment, microvms, podupdate, sizing
from vk_fargate.fleet import models

SIZE = sizing.Size(1000, 2048, 20)


def the_pod() -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
        "spec": {
            "restartPolicy": "Never",
            "initContainers": [
                {"name": "a", "image": "busybox"},
                {"name": "s", "image": "busybox", "restartPolicy": "Always"},
                {"name": "b", "image": "busybox"},
            ],
            "containers": [{"name": "job", "image": "busybox"}],
        },
    }


def test_the_fleet_gets_sidecars_in_their_place_among_the_init_containers() -> None:
    spec = microvms.spec(
        the_pod(),
        size=SIZE,
        profile="p",
        cluster="c",
        sources=environment.Sources({}, {}, [], [], "node", SIZE),
        pull_secrets=[],
        names=dns.names(the_pod(), dns.Cluster()),
    )
    init = [(c.name, c.restart_policy) for c in spec.init_containers]
    assert init == [("a", None), ("s", "Always"), ("b", None)]
    assert [c.name for c in spec.containers] == ["job"]
    assert spec.restart_policy == "Never"


def test_only_init_containers_can_be_sidecars() -> None:
    with pytest.raises(pydantic.ValidationError, match="restart_policy is for init containers"):
        models.MicroVMSpec(
            vcpu_millis=250,
            mem_mib=512,
            containers=[models.Container(name="app", image="i", restart_policy="Always")],
        )


def test_a_sidecars_new_image_is_an_image_change() -> None:
    vm_spec = models.MicroVMSpec(
        vcpu_millis=250,
        mem_mib=512,
        init_containers=[
            models.Container(name="a", image="busybox"),
            models.Container(name="s", image="busybox", restart_policy="Always"),
        ],
        containers=[models.Container(name="job", image="busybox")],
    )
    spec = the_pod()["spec"]
    spec["initContainers"][1]["image"] = "busybox:2"
    spec["initContainers"][0]["image"] = "busybox:2"  # ran to completion: not again
    assert podupdate.changed_images(spec, vm_spec) == ["s"]
