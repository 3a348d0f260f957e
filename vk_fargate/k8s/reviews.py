"""TokenReview and SubjectAccessReview: asking the API server who a caller is and what
it may do.

A kubelet does not judge credentials itself: bearer tokens are sent to the API server
(TokenReview) and every decision is the cluster's RBAC (SubjectAccessReview), so the
virtual kubelet honours exactly the permissions ``kubectl auth can-i`` reports.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from vk_fargate.k8s import kube

TOKEN_REVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"
ACCESS_REVIEWS = "/apis/authorization.k8s.io/v1/subjectaccessreviews"

Extra = tuple[tuple[str, tuple[str, ...]], ...]


@dataclasses.dataclass(frozen=True)
class Identity:
    """An authenticated caller. Hashable, so decisions about it can be cached.

    ``extra`` is the user's extra attributes as sorted ``(key, values)`` pairs.
    """

    user: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: Extra = ()

    @staticmethod
    def sorted_extra(extra: Mapping[str, Any] | None) -> Extra:
        """``{"k": ["v"]}`` as the hashable pairs ``extra`` holds."""
        return tuple(
            sorted((str(k), tuple(str(v) for v in vs or ())) for k, vs in (extra or {}).items())
        )


async def token_review(api: kube.Kube, token: str) -> Identity | None:
    """Who ``token`` belongs to, or None when the API server does not accept it.

    API errors (unreachable, 5xx, forbidden to create reviews) raise ``errors.KubeError``:
    not knowing is not the same as being refused.
    """
    review = await api.create(
        TOKEN_REVIEWS,
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token},
        },
    )
    status = review.get("status") or {}
    user = status.get("user") or {}
    if not status.get("authenticated") or not user.get("username"):
        return None
    return Identity(
        user=str(user["username"]),
        groups=tuple(str(g) for g in user.get("groups") or ()),
        uid=str(user.get("uid") or ""),
        extra=Identity.sorted_extra(user.get("extra")),
    )


async def access_review(
    api: kube.Kube,
    identity: Identity,
    *,
    verb: str,
    resource: str,
    subresource: str = "",
    name: str = "",
    namespace: str = "",
    group: str = "",
) -> bool:
    """Whether the cluster's authorizers allow ``identity`` to ``verb`` the resource.

    An empty ``name`` asks about every object of the resource (RBAC rules restricted by
    ``resourceNames`` then do not match).
    """
    attributes = {
        "verb": verb,
        "group": group,
        "resource": resource,
        "subresource": subresource,
        "name": name,
        "namespace": namespace,
    }
    spec: kube.JSON = {
        "resourceAttributes": {k: v for k, v in attributes.items() if v},
        "user": identity.user,
        "groups": list(identity.groups),
    }
    if identity.uid:
        spec["uid"] = identity.uid
    if identity.extra:
        spec["extra"] = {k: list(vs) for k, vs in identity.extra}
    review = await api.create(
        ACCESS_REVIEWS,
        {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec},
    )
    status = review.get("status") or {}
    return bool(status.get("allowed")) and not status.get("denied")
