"""The order in which a pod's native sidecars start and stop, as the kubelet runs
them (1.29+, ``kuberuntime_manager.go`` computeInitContainerActions and
``kuberuntime_termination_order.go``). Pure; the shim's runtime follows it.

A sidecar is an init container with ``restart_policy: Always``. It starts in its
place among the init containers, and the next init container waits until it has
started (its startup probe passed, if it has one). It is restarted whenever it exits,
whatever the pod's restart policy. At a stop, the app containers are stopped first;
then the sidecars, one after another, the last started first. When the app containers
have all ended for good (restart policy Never or OnFailure), the sidecars are stopped
the same way and the pod ends with the app containers' outcome.
Standard library only (the shim's contract).
"""

from __future__ import annotations

from collections.abc import Iterable


def stop_waves(apps: Iterable[str], sidecars: Iterable[str]) -> list[list[str]]:
    """What to stop, wave after wave: every app container at once, then each sidecar
    alone in reverse start order. A wave starts once the one before has ended (or the
    grace period is over)."""
    waves = [list(apps)]
    waves += [[name] for name in reversed(list(sidecars))]
    return [wave for wave in waves if wave]


def restarts(pod_policy: str, *, sidecar: bool, exit_code: int) -> bool:
    """Whether a container that exited with ``exit_code`` runs again: a sidecar always
    (its own policy is Always), an app container as the pod's policy says."""
    if sidecar or pod_policy == "Always":
        return True
    return pod_policy == "OnFailure" and exit_code != 0
