"""The bounds on streaming sessions: per pod and per replica, each refusal naming its bound."""

from __future__ import annotations

import contextlib

import pytest

from vk_fargate import errors
from vk_fargate.kubelet import sessions


def test_a_pod_over_its_bound_is_refused_while_another_pod_is_not() -> None:
    bounds = sessions.Sessions(per_pod=2, total=10)
    with contextlib.ExitStack() as held:
        held.enter_context(bounds.hold("a", "exec", "exec in a"))
        held.enter_context(bounds.hold("a", "exec", "exec in a"))
        with pytest.raises(errors.TooManySessions, match="VK_FARGATE_STREAMS_PER_POD") as refused:
            held.enter_context(bounds.hold("a", "exec", "exec in a"))
        assert refused.value.status == 429
        assert refused.value.message.startswith("exec in a: the pod already has 2")
        held.enter_context(bounds.hold("b", "portforward", "port-forward to b"))
        assert (bounds.open("a"), bounds.open("b")) == (2, 1)
    assert (bounds.open("a"), bounds.open("b")) == (0, 0)  # every slot given back


def test_the_replica_bound_counts_every_pod() -> None:
    bounds = sessions.Sessions(per_pod=5, total=2)
    with (
        bounds.hold("a", "exec", "x"),
        bounds.hold("b", "exec", "y"),
        pytest.raises(errors.TooManySessions, match="VK_FARGATE_STREAMS_MAX"),
        bounds.hold("c", "exec", "z"),
    ):
        pass
    with bounds.hold("c", "exec", "z"):
        assert bounds.open("c") == 1


def test_a_session_that_fails_gives_its_slot_back() -> None:
    bounds = sessions.Sessions(per_pod=1, total=1)
    with pytest.raises(RuntimeError), bounds.hold("a", "exec", "x"):
        raise RuntimeError("the fleet refused")
    with bounds.hold("a", "exec", "x"):
        assert bounds.open("a") == 1
