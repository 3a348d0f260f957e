"""Pods the webhook missed, and how each is put right. Pure.

The pod webhook is ``failurePolicy: Ignore`` (a provider outage must not block every
pod in the cluster), so a pod created while it does not answer keeps the scheduler it
was created with, although a Fargate profile selects it, and would stay Pending for
good: a pod's ``schedulerName`` cannot be changed. Such a pod is recognised by being
unbound and Pending while a profile that existed before it selects it (a pod created
before its profile was not missed: matching happens at creation only, as on EKS).

It is then created again, through the webhook: a pod with a controller is deleted, and
its controller makes a new one; a bare pod is replaced by the same pod, for
fargate-scheduler, under the profile the webhook would have chosen.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vk_fargate.fargate import profiles as fargate_profiles

JSON = dict[str, Any]
REPLACES_ANNOTATION = "fargate.vk-fargate.io/replaces"  # the UID of the pod replaced


def missed(
    pod: JSON,
    profile_list: list[fargate_profiles.Profile],
    created: Callable[[str], str | None],
) -> fargate_profiles.Profile | None:
    """The profile that should have taken ``pod``, if the webhook missed it.

    ``created(name)`` is when profile ``name`` was created (RFC 3339, as the API server
    writes it), or None for a profile that was always there (the provider's file).
    """
    meta, spec = pod["metadata"], pod.get("spec") or {}
    if meta.get("deletionTimestamp") or spec.get("nodeName"):
        return None
    if (pod.get("status") or {}).get("phase", "Pending") != "Pending":
        return None
    profile = fargate_profiles.choose(profile_list, pod, meta.get("namespace") or "")
    if profile is None:
        return None
    since = created(profile.name)
    # Timestamps have seconds only: a pod of the same second as its profile may have
    # raced the profile's arrival at the webhook, and is left as it is.
    if since is not None and not since < str(meta.get("creationTimestamp") or ""):
        return None
    return profile


def controller(pod: JSON) -> JSON | None:
    """The owner reference of the pod's controller (ReplicaSet, Job, ...), if any."""
    owners = pod["metadata"].get("ownerReferences") or []
    return next((o for o in owners if o.get("controller")), None)


def replacement(pod: JSON, profile: fargate_profiles.Profile, scheduler: str) -> JSON:
    """The bare ``pod`` as it should have been created: for ``scheduler``, labelled with
    ``profile``, and saying which pod it replaces."""
    meta = pod["metadata"]
    kept = ("name", "namespace", "labels", "annotations", "ownerReferences", "finalizers")
    metadata = {k: meta[k] for k in kept if meta.get(k)}
    metadata["labels"] = {
        **(meta.get("labels") or {}),
        fargate_profiles.PROFILE_LABEL: profile.name,
    }
    metadata["annotations"] = {**(meta.get("annotations") or {}), REPLACES_ANNOTATION: meta["uid"]}
    spec = {k: v for k, v in (pod.get("spec") or {}).items() if k != "nodeName"}
    spec["schedulerName"] = scheduler
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def why(pod: JSON, profile: fargate_profiles.Profile) -> str:
    """What happened to ``pod``, for the events that say so."""
    meta, spec = pod["metadata"], pod.get("spec") or {}
    return (
        f"pod {meta['name']} was created at {meta.get('creationTimestamp')} while the Fargate "
        f"admission webhook did not answer, so it went to {spec.get('schedulerName')} "
        f"although Fargate profile {profile.name} selects it"
    )
