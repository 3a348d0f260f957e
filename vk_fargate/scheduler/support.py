"""What of a pod vk-fargate runs: the refusal of a pod it cannot run (Fargate's own,
in EKS's words, then vk-fargate's: volumes and fields it cannot honour), and the
warnings a placed pod gets for what it runs without (pod fields, ``fargate.podfields``;
securityContext fields, ``fargate.security``), each said once, when the pod is placed,
so that nothing is ignored without a word."""

from __future__ import annotations

from vk_fargate.fargate import podfields, security, validation, volumes
from vk_fargate.k8s import events, kube


def refusal(spec: kube.JSON) -> str | None:
    """Why the pod cannot run here (the ``FailedScheduling`` message), or None."""
    refused = validation.refusal(spec)
    if refused is not None:
        return refused
    unmountable = volumes.unsupported(spec)
    if unmountable is not None:
        return validation.PREFIX + unmountable
    impossible = podfields.refused(spec)
    if impossible:
        return validation.PREFIX + "fields not supported: " + ", ".join(impossible)
    return None


async def warn(recorder: events.Recorder, pod: kube.JSON, *, component: str) -> None:
    spec = pod.get("spec") or {}
    unapplied = podfields.not_applied(spec)
    if unapplied:
        await recorder.record(
            pod,
            "PodFieldsNotApplied",
            "vk-fargate does not apply these pod fields yet; the pod runs without them: "
            + "; ".join(unapplied),
            warning=True,
            component=component,
        )
    ignored = security.not_applied(spec)
    if ignored:
        await recorder.record(
            pod,
            "SecurityContextNotApplied",
            "vk-fargate does not apply these securityContext fields yet; the pod runs "
            f"without them: {', '.join(ignored)}",
            warning=True,
            component=component,
        )
