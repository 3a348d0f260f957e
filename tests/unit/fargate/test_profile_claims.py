"""fargate-scheduler's check of the profile a pod runs under (``profiles.claimed``)."""

from __future__ import annotations

from typing import Any

import pytest

from vk_fargate.fargate import profiles

WEB = profiles.Profile(name="web", selectors=[{"namespace": "shop", "labels": {"tier": "web"}}])
ANY = profiles.Profile(name="any", selectors=[{"namespace": "shop"}])
GONE = profiles.Profile(name="gone", selectors=[{"namespace": "*"}], status="DELETING")
BROKEN = profiles.Profile(name="broken", selectors=[{"namespace": "rel"}], status="FAILED")
ALL = [WEB, ANY, GONE, BROKEN]


def _pod(labels: dict[str, str] | None = None, **meta: Any) -> dict[str, Any]:
    return {"metadata": {"labels": labels or {}, **meta}}


@pytest.mark.parametrize(
    ("namespace", "pod", "expected"),
    [
        ("shop", _pod({"tier": "web"}), "any"),  # the first by name, as the webhook chooses
        ("shop", _pod({"tier": "web", profiles.PROFILE_LABEL: "web"}), "web"),
        ("rel", _pod(), "broken"),  # FAILED still takes it: the scheduler says why
        (
            "default",
            _pod({"app": "x"}),
            "no Fargate profile selects pods in namespace 'default' with labels app=x",
        ),
        (
            "default",
            _pod({profiles.PROFILE_LABEL: "any"}),
            "fargate profile any does not select pods in namespace 'default' (no labels)",
        ),
        (  # the label names a profile that matches elsewhere only
            "shop",
            _pod({profiles.PROFILE_LABEL: "web"}),
            "fargate profile web does not select pods in namespace 'shop' (no labels)",
        ),
        (
            "shop",
            _pod({profiles.PROFILE_LABEL: "rel"}),
            "fargate profile rel (the pod's eks.amazonaws.com/fargate-profile label) "
            "does not exist",
        ),
        (
            "shop",
            _pod({profiles.PROFILE_LABEL: "gone"}),
            "fargate profile gone is DELETING and takes no new pods",
        ),
        (
            "shop",
            _pod(annotations={profiles.COMPUTE_TYPE_ANNOTATION: "ec2"}),
            "the pod is annotated eks.amazonaws.com/compute-type: ec2",
        ),
        (
            "shop",
            _pod(ownerReferences=[{"kind": "DaemonSet", "name": "agent"}]),
            "DaemonSets are not supported on Fargate",
        ),
    ],
)
def test_claimed(namespace: str, pod: dict[str, Any], expected: str) -> None:
    got = profiles.claimed(ALL, pod, namespace)
    assert (got if isinstance(got, str) else got.name) == expected


def test_no_profiles_at_all_refuses_every_pod() -> None:
    got = profiles.claimed([], _pod({"tier": "web"}), "shop")
    assert got == "no Fargate profile selects pods in namespace 'shop' with labels tier=web"
