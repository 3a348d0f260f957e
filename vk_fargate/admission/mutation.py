"""What the admission webhooks answer: pure functions from an AdmissionReview to the reply.

``review`` is EKS's Fargate mutating webhook (``fargate-facts.md`` §2): a Pod being
created that a profile selects gets ``schedulerName: fargate-scheduler`` and the label
``eks.amazonaws.com/fargate-profile: <profile>``, as one JSONPatch; every other request
(another kind or operation, no matching profile, a pod opted out or owned by a
DaemonSet) is allowed unchanged. Matching happens only here, at creation: pods that
exist are never moved. ``validate_profile`` refuses an 11th FargateProfile.

Invariants: every answer allows the pod (the webhook never blocks a workload, it only
steers it); a patch only ever *adds* members, each to an object the pod is known to have
(or creates that object), so the API server can always apply it. Input that is not an
AdmissionReview v1 request raises ``MalformedReview`` (a ``ValueError``) with a message
that says what is wrong; nothing else is raised, whatever the input.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from vk_fargate import errors
from vk_fargate.fargate import profiles

JSON = dict[str, Any]
API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"
SCHEDULER = "fargate-scheduler"
PROFILE_GROUP = "fargate.vk-fargate.io"  # the CRD's (k8s/fargateprofile-crd.yaml)
PROFILE_KIND = "FargateProfile"
POD_KIND = ("", "v1", "Pod")
SHOWN_CHARS = 60  # how much of a bad value an error message quotes


class MalformedReview(errors.VkFargateError, ValueError):
    """The input is not an AdmissionReview v1 request this webhook can answer."""


def _show(value: object) -> str:
    """A bad value for a message: short, and never a walk through a nested structure."""
    if isinstance(value, dict):
        return f"an object (of {len(value)} members)"
    if isinstance(value, list):
        return f"an array (of {len(value)} items)"
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."


def _request(admission_review: object) -> tuple[JSON, str, str]:
    """The review's request, its uid and operation, or ``MalformedReview``."""
    if not isinstance(admission_review, dict):
        raise MalformedReview(
            f"an AdmissionReview must be a JSON object, not {_show(admission_review)}"
        )
    api_version, kind = admission_review.get("apiVersion"), admission_review.get("kind")
    if api_version != API_VERSION or kind != KIND:
        raise MalformedReview(
            f"expected apiVersion {API_VERSION!r} and kind {KIND!r}, "
            f"got {_show(api_version)} and {_show(kind)}"
        )
    request = admission_review.get("request")
    if not isinstance(request, dict):
        raise MalformedReview("the AdmissionReview has no request object")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise MalformedReview(f"request.uid must be a non-empty string, not {_show(uid)}")
    operation = request.get("operation")
    if not isinstance(operation, str):
        raise MalformedReview(f"request.operation must be a string, not {_show(operation)}")
    return request, uid, operation


def _kind(request: JSON) -> tuple[str, str, str]:
    """(group, version, kind) of the object under review; empty for a subresource."""
    kind = request.get("kind")
    if not isinstance(kind, dict):
        raise MalformedReview(
            f"request.kind must be a {{group, version, kind}} object, not {_show(kind)}"
        )
    group, version, name = kind.get("group", ""), kind.get("version"), kind.get("kind")
    if not (isinstance(group, str) and isinstance(version, str) and isinstance(name, str)):
        raise MalformedReview(f"request.kind must hold strings, not {_show(kind)}")
    sub_resource = request.get("subResource", "")
    if not isinstance(sub_resource, str):
        raise MalformedReview(f"request.subResource must be a string, not {_show(sub_resource)}")
    return (group, version, name) if not sub_resource else ("", "", "")


def _string_map(meta: JSON, field: str) -> None:
    value = meta.get(field)
    if value is None:
        return
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise MalformedReview(f"metadata.{field} must map strings to strings, not {_show(value)}")


def _pod(request: JSON) -> tuple[JSON, JSON]:
    """The pod under review and its metadata (``{}`` when it has none), checked for shape."""
    pod = request.get("object")
    if not isinstance(pod, dict):
        raise MalformedReview(f"request.object must be the Pod being created, not {_show(pod)}")
    meta = pod.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        raise MalformedReview(f"the Pod's metadata must be an object, not {_show(meta)}")
    meta = meta or {}
    _string_map(meta, "labels")
    _string_map(meta, "annotations")
    owners = meta.get("ownerReferences")
    if owners is not None and not (
        isinstance(owners, list) and all(isinstance(o, dict) for o in owners)
    ):
        raise MalformedReview(
            f"metadata.ownerReferences must be a list of objects, not {_show(owners)}"
        )
    spec = pod.get("spec")
    if spec is not None and not isinstance(spec, dict):
        raise MalformedReview(f"the Pod's spec must be an object, not {_show(spec)}")
    return pod, meta


def _namespace(request: JSON, meta: JSON) -> str:
    """Pods made by controllers often lack metadata.namespace; the request always says."""
    namespace = request.get("namespace") or meta.get("namespace")
    if not isinstance(namespace, str) or not namespace:
        raise MalformedReview(f"a Pod CREATE must name its namespace, not {_show(namespace)}")
    return namespace


def _escape(key: str) -> str:
    """A JSON Pointer token (RFC 6901): ``~`` is ``~0`` and ``/`` is ``~1``."""
    return key.replace("~", "~0").replace("/", "~1")


def pod_patch(pod: JSON, profile: str, scheduler: str = SCHEDULER) -> list[JSON]:
    """The JSONPatch sending ``pod`` to ``scheduler`` under ``profile``.

    ``add`` on an existing member replaces it, so one op covers a pod with or without
    the field; a missing (or null) parent object is added whole instead.
    """
    ops: list[JSON] = []
    spec = pod.get("spec")
    if isinstance(spec, dict):
        ops.append({"op": "add", "path": "/spec/schedulerName", "value": scheduler})
    else:
        ops.append({"op": "add", "path": "/spec", "value": {"schedulerName": scheduler}})
    meta = pod.get("metadata")
    labels = meta.get("labels") if isinstance(meta, dict) else None
    label = {profiles.PROFILE_LABEL: profile}
    if not isinstance(meta, dict):
        ops.append({"op": "add", "path": "/metadata", "value": {"labels": label}})
    elif not isinstance(labels, dict):
        ops.append({"op": "add", "path": "/metadata/labels", "value": label})
    else:
        path = "/metadata/labels/" + _escape(profiles.PROFILE_LABEL)
        ops.append({"op": "add", "path": path, "value": profile})
    return ops


def _reply(uid: str, *, patch: list[JSON] | None = None, denied: str | None = None) -> JSON:
    response: JSON = {"uid": uid, "allowed": denied is None}
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode("ascii")
    if denied is not None:
        # As a ResourceQuota refusal: 403 Forbidden, and a message the user reads.
        response["status"] = {
            "status": "Failure",
            "code": 403,
            "reason": "Forbidden",
            "message": denied,
        }
    return {"apiVersion": API_VERSION, "kind": KIND, "response": response}


def review(
    admission_review: object,
    profile_list: list[profiles.Profile],
    *,
    scheduler: str = SCHEDULER,
) -> JSON:
    """The mutating webhook's AdmissionReview response for ``admission_review``.

    Always allowed; a Pod CREATE that one of ``profile_list`` selects carries the patch.
    Raises ``MalformedReview`` for input that is not an AdmissionReview v1 request.
    """
    request, uid, operation = _request(admission_review)
    if operation != "CREATE" or _kind(request) != POD_KIND:
        return _reply(uid)
    pod, meta = _pod(request)
    chosen = profiles.choose(profile_list, pod, _namespace(request, meta))
    if chosen is None:
        return _reply(uid)
    return _reply(uid, patch=pod_patch(pod, chosen.name, scheduler))


def validate_profile(admission_review: object, existing_count: int) -> JSON:
    """The validating webhook's response: a FargateProfile CREATE beyond the limit is denied.

    ``existing_count`` is how many profiles the cluster has now. Two creations racing
    past the check together are both admitted; whoever reconciles profiles must still
    cope with more than ``profiles.MAX_PROFILES``.
    """
    request, uid, operation = _request(admission_review)
    group, _, kind = _kind(request)
    if operation != "CREATE" or (group, kind) != (PROFILE_GROUP, PROFILE_KIND):
        return _reply(uid)
    if existing_count >= profiles.MAX_PROFILES:
        return _reply(
            uid,
            denied=(
                f"a cluster can have at most {profiles.MAX_PROFILES} Fargate profiles "
                f"(it has {existing_count}); delete one before creating another"
            ),
        )
    return _reply(uid)
