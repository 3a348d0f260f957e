"""Fargate profiles and which one a pod matches (``fargate-facts.md`` §2). Pure.

A selector matches a pod when its namespace matches (``*`` and ``?`` wildcards) and
the pod carries all its labels (wildcards in keys and values too); a profile matches
when any selector does. Of several matching profiles the first by name wins, unless
the pod's ``eks.amazonaws.com/fargate-profile`` label names one that matches; profiles
being created or deleted take no pods. The
annotation ``eks.amazonaws.com/compute-type: ec2`` and DaemonSet ownership keep a pod
off Fargate altogether.

``claimed`` is fargate-scheduler's side: a pod may reach it without the webhook (its
``schedulerName`` set by hand, or created while the webhook was down), so the profile
it runs under is checked again at placement, and a pre-set profile label is a claim to
verify, never a pass.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import pydantic

PROFILE_LABEL = "eks.amazonaws.com/fargate-profile"
COMPUTE_TYPE_ANNOTATION = "eks.amazonaws.com/compute-type"
MAX_PROFILES = 10
MAX_SELECTORS = 5
MAX_LABELS = 5
ProfileState = Literal["CREATING", "ACTIVE", "DELETING", "FAILED"]
SELECTING = ("ACTIVE", "FAILED")  # the states in which a profile takes pods


class Selector(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    namespace: str = pydantic.Field(min_length=1)
    labels: dict[str, str] = pydantic.Field(default_factory=dict, max_length=MAX_LABELS)


class Profile(pydantic.BaseModel):
    """A profile as the CRD (or the provider's config file) gives it."""

    model_config = pydantic.ConfigDict(extra="forbid", populate_by_name=True)

    name: str = pydantic.Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    pod_execution_role_arn: str = pydantic.Field(default="", alias="podExecutionRoleARN")
    subnets: list[str] = pydantic.Field(default_factory=list)
    selectors: list[Selector] = pydantic.Field(min_length=1, max_length=MAX_SELECTORS)
    status: ProfileState = "ACTIVE"
    message: str = ""
    # The message of a False ``VpcDnsReady`` condition: the VPC's DNS is off (AWS only).
    vpc_dns_problem: str = ""


def _glob(pattern: str, value: str) -> bool:
    """EKS wildcards: ``*`` any run of characters, ``?`` one; nothing else is special."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value) is not None


def selector_matches(selector: Selector, namespace: str, labels: dict[str, str]) -> bool:
    if not _glob(selector.namespace, namespace):
        return False
    for key, value in selector.labels.items():
        if not any(_glob(key, k) and _glob(value, v) for k, v in labels.items()):
            return False
    return True


def cluster_dns(pod: dict[str, Any]) -> bool:
    """Whether ``pod`` is one of the cluster's DNS servers (CoreDNS's ``k8s-app:
    kube-dns`` pods in kube-system), which a VPC without DNS keeps Pending on EKS."""
    meta = pod["metadata"]
    labels = meta.get("labels") or {}
    return meta.get("namespace") == "kube-system" and labels.get("k8s-app") == "kube-dns"


def matches(profile: Profile, namespace: str, labels: dict[str, str]) -> bool:
    return any(selector_matches(s, namespace, labels) for s in profile.selectors)


def excluded(pod: dict[str, Any]) -> bool:
    """Pods that never go to Fargate: opted out, or owned by a DaemonSet."""
    meta = pod.get("metadata") or {}
    if (meta.get("annotations") or {}).get(COMPUTE_TYPE_ANNOTATION) == "ec2":
        return True
    return any(o.get("kind") == "DaemonSet" for o in meta.get("ownerReferences") or [])


def choose(profiles: list[Profile], pod: dict[str, Any], namespace: str) -> Profile | None:
    """The profile that takes ``pod`` (in ``namespace``), or None."""
    if excluded(pod):
        return None
    labels: dict[str, str] = (pod.get("metadata") or {}).get("labels") or {}
    # A FAILED profile still takes its pods: fargate-scheduler refuses them, saying why,
    # where another scheduler would run them somewhere the user did not ask for.
    usable = sorted((p for p in profiles if p.status in SELECTING), key=lambda p: p.name)
    named = labels.get(PROFILE_LABEL)
    if named is not None:
        for profile in usable:
            if profile.name == named and matches(profile, namespace, labels):
                return profile
    for profile in usable:
        if matches(profile, namespace, labels):
            return profile
    return None


def _described(namespace: str, labels: dict[str, str]) -> str:
    shown = ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != PROFILE_LABEL)
    return f"namespace {namespace!r}" + (f" with labels {shown}" if shown else " (no labels)")


def claimed(profiles: list[Profile], pod: dict[str, Any], namespace: str) -> Profile | str:
    """The profile ``pod`` (sent to fargate-scheduler) runs under, or why it may not run.

    A pod naming a profile in its ``eks.amazonaws.com/fargate-profile`` label runs
    under that profile only if it exists, takes pods and selects the pod; a pod
    naming none runs under the profile the webhook would have chosen.
    """
    meta = pod.get("metadata") or {}
    if (meta.get("annotations") or {}).get(COMPUTE_TYPE_ANNOTATION) == "ec2":
        return f"the pod is annotated {COMPUTE_TYPE_ANNOTATION}: ec2"
    if any(o.get("kind") == "DaemonSet" for o in meta.get("ownerReferences") or []):
        return "DaemonSets are not supported on Fargate"
    labels: dict[str, str] = meta.get("labels") or {}
    named = labels.get(PROFILE_LABEL)
    if named is None:
        chosen = choose(profiles, pod, namespace)
        if chosen is None:
            return f"no Fargate profile selects pods in {_described(namespace, labels)}"
        return chosen
    profile = next((p for p in profiles if p.name == named), None)
    if profile is None:
        return f"fargate profile {named} (the pod's {PROFILE_LABEL} label) does not exist"
    if profile.status not in SELECTING:
        return f"fargate profile {named} is {profile.status} and takes no new pods"
    if not matches(profile, namespace, labels):
        return f"fargate profile {named} does not select pods in {_described(namespace, labels)}"
    return profile
