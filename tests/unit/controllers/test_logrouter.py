"""The log router's pure parts (timestamps, line splitting) and the aws-auth verdict on a
node, with plain values."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from vk_fargate import world
from vk_fargate.controllers import awsauth, logrouter
from vk_fargate.fargate import nodes as fargate_nodes
from vk_fargate.fargate import profiles

ROLE = "arn:aws:iam::123456789012:role/AmazonEKSFargatePodExecutionRole"


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("1970-01-01T00:00:00Z", 0),
        ("1970-01-01T00:00:01.5Z", 1_500_000_000),
        ("1970-01-01T00:00:01.000000001Z", 1_000_000_001),
        ("2026-11-27T20:00:00.123456000Z", 1_795_809_600_123_456_000),
    ],
)
def test_nanos_reads_rfc3339_with_up_to_nine_digits(stamp: str, expected: int) -> None:
    assert logrouter.nanos(stamp) == expected


def test_nanos_agrees_with_datetime() -> None:
    moment = datetime.datetime(2026, 11, 27, 20, 0, 0, 654321, tzinfo=datetime.UTC)
    stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"
    assert logrouter.nanos(stamp) // 1000 == int(moment.timestamp() * 1_000_000)


@pytest.mark.parametrize("stamp", ["", "hello", "2026-13-01T00:00:00Z"])
def test_nanos_refuses_what_is_not_a_timestamp(stamp: str) -> None:
    with pytest.raises(ValueError):
        logrouter.nanos(stamp)


def test_lines_split_across_chunks_are_joined() -> None:
    lines, rest = logrouter.split_lines(b"one\ntw")
    assert (lines, rest) == (["one"], b"tw")
    lines, rest = logrouter.split_lines(rest + "o \u00e9\n\nthree".encode())
    assert (lines, rest) == (["two \u00e9", ""], b"three")


def _state(labels: dict[str, str]) -> tuple[world.World, dict[str, Any]]:
    state = world.World()
    state.pod_cache.store(
        {
            "metadata": {"uid": "u1", "namespace": "web", "name": "p", "labels": labels},
            "spec": {"schedulerName": "fargate-scheduler"},
        }
    )
    node = {"metadata": {"name": "n", "annotations": {fargate_nodes.POD_UID_ANNOTATION: "u1"}}}
    return state, node


def _auth(state: world.World, role: str = ROLE) -> awsauth.AwsAuth:
    profile = profiles.Profile.model_validate(
        {"name": "fp", "selectors": [{"namespace": "web"}], "podExecutionRoleARN": role}
    )
    return awsauth.AwsAuth(None, state, lambda name: profile if name == "fp" else None)  # type: ignore[arg-type]


MAPPED = {
    "mapRoles": f"- rolearn: {ROLE}\n  username: system:node:{{{{SessionName}}}}\n"
    "  groups:\n  - system:bootstrappers\n  - system:nodes\n  - system:node-proxier\n"
}


def test_nothing_is_said_before_aws_auth_was_read() -> None:
    state, node = _state({profiles.PROFILE_LABEL: "fp"})
    assert _auth(state).problem(node) is None


def test_a_mapped_role_makes_no_problem() -> None:
    state, node = _state({profiles.PROFILE_LABEL: "fp"})
    auth = _auth(state)
    auth.observe(MAPPED)
    assert auth.problem(node) is None


@pytest.mark.parametrize("data", [None, {}, {"mapRoles": "- rolearn: arn:aws:iam::1:role/x\n"}])
def test_an_unmapped_role_names_the_role_the_configmap_and_the_group(
    data: dict[str, str] | None,
) -> None:
    state, node = _state({profiles.PROFILE_LABEL: "fp"})
    auth = _auth(state)
    auth.observe(data)
    problem = auth.problem(node)
    assert problem is not None
    assert ROLE in problem and "kube-system/aws-auth" in problem and "system:nodes" in problem
    assert ("(absent)" in problem) == (data is None)


def test_the_verdict_follows_the_configmap() -> None:
    state, node = _state({profiles.PROFILE_LABEL: "fp"})
    auth = _auth(state)
    auth.observe({})
    assert auth.problem(node) is not None
    auth.observe(MAPPED)
    assert auth.problem(node) is None


@pytest.mark.parametrize(("labels", "role"), [({}, ROLE), ({profiles.PROFILE_LABEL: "fp"}, "")])
def test_pods_without_a_profile_or_role_are_not_judged(labels: dict[str, str], role: str) -> None:
    state, node = _state(labels)
    auth = _auth(state, role)
    auth.observe({})
    assert auth.problem(node) is None


def test_lines_sharing_a_timestamp_are_all_fresh_once() -> None:
    seen = logrouter.Seen()
    assert [seen.fresh(t) for t in (5, 5, 5, 7)] == [True, True, True, True]
    seen.new_read()  # a re-read from timestamp 7 repeats 7, then goes on
    assert [seen.fresh(t) for t in (7, 7, 8)] == [False, True, True]


def test_a_reread_skips_what_was_yielded_and_nothing_else() -> None:
    seen = logrouter.Seen()
    assert [seen.fresh(t) for t in (1, 2, 2)] == [True, True, True]
    seen.new_read()  # from timestamp 2: both lines at 2 again, then a third one at 2
    assert [seen.fresh(t) for t in (2, 2, 2, 3)] == [False, False, True, True]
    seen.new_read()
    assert [seen.fresh(t) for t in (1, 3, 4)] == [False, False, True]
