"""Telling the API server where the webhooks are: the Mutating- and
ValidatingWebhookConfiguration documents, and registering them idempotently.

The two webhooks fail differently on purpose. The pod mutation is ``failurePolicy:
Ignore``: it sees every pod created in the cluster, and a provider outage must not
block them all (a pod created meanwhile is simply not steered to Fargate). The profile
limit is ``Fail``: a profile admitted unchecked cannot be taken back, and profiles are
created rarely, by hand. Pods in the provider's own namespace are never sent (the
provider must be able to start while its webhook is down); the profile webhook has no
such exclusion, which would be a way around the limit. ``kube-system`` is sent, as on
EKS: a profile selecting ``kube-system`` ``k8s-app=kube-dns`` is how CoreDNS runs on a
Fargate-only cluster; its other pods pass unchanged (no profile selects them,
DaemonSet pods never go to Fargate, and ``Ignore`` lets them through an outage).

``caBundle`` is the serving certificate's PEM (self-signed, see ``kubelet/tls.py``):
the API server trusts exactly that certificate for this webhook.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Iterable

from vk_fargate import errors
from vk_fargate.admission import server
from vk_fargate.k8s import kube, webhooks
from vk_fargate.k8s import profiles as k8s_profiles

NAME = "vk-fargate"
PROVIDER_NAMESPACE = "vk-fargate-system"
POD_WEBHOOK = "pods.fargate.vk-fargate.io"  # webhook names must be fully qualified
PROFILE_WEBHOOK = "profiles.fargate.vk-fargate.io"
TIMEOUT_SECONDS = 5  # a pod creation waits at most this long for us (the API's max is 30)
MUTATING, VALIDATING = "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"
API_VERSION = "admissionregistration.k8s.io/v1"
LABELS = {"app.kubernetes.io/managed-by": "vk-fargate"}


@dataclasses.dataclass(frozen=True)
class UrlTarget:
    """The API server calls ``base`` (``https://host:port``) directly: development."""

    base: str


@dataclasses.dataclass(frozen=True)
class ServiceTarget:
    """The API server calls the webhook through a Service: in a cluster."""

    namespace: str
    name: str
    port: int = 443


Target = UrlTarget | ServiceTarget


def client_config(target: Target, path: str, ca_bundle: bytes) -> kube.JSON:
    """How the API server reaches ``path`` on ``target``, trusting only ``ca_bundle``."""
    config: kube.JSON = {"caBundle": base64.b64encode(ca_bundle).decode("ascii")}
    if isinstance(target, UrlTarget):
        if not target.base.startswith("https://"):
            raise errors.ConfigError(f"a webhook URL must be https://, not {target.base!r}")
        config["url"] = target.base.rstrip("/") + path
    else:
        config["service"] = {
            "namespace": target.namespace,
            "name": target.name,
            "path": path,
            "port": target.port,
        }
    return config


def _common(target: Target, path: str, ca_bundle: bytes) -> kube.JSON:
    return {
        "clientConfig": client_config(target, path, ca_bundle),
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        "timeoutSeconds": TIMEOUT_SECONDS,
        "matchPolicy": "Equivalent",
    }


def excluded_namespaces(provider_namespace: str = PROVIDER_NAMESPACE) -> list[str]:
    """The namespaces whose pods the API server never sends to the pod webhook: the
    provider's own, so it never places itself on Fargate. kube-system is not one: as
    on EKS, a profile may select its pods (CoreDNS's, ``k8s-app: kube-dns``); the
    webhook changes only pods a profile selects, and does not block the others
    (``failurePolicy: Ignore``)."""
    return [provider_namespace]


def mutating(
    *,
    target: Target,
    ca_bundle: bytes,
    provider_namespace: str = PROVIDER_NAMESPACE,
    name: str = NAME,
) -> kube.JSON:
    """The MutatingWebhookConfiguration that sends new pods to ``POST /mutate-pods``."""
    excluded = excluded_namespaces(provider_namespace)
    webhook = _common(target, server.MUTATE_PATH, ca_bundle) | {
        "name": POD_WEBHOOK,
        "rules": [
            {
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "operations": ["CREATE"],
                "resources": ["pods"],
                "scope": "Namespaced",
            }
        ],
        "namespaceSelector": {
            "matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": excluded}
            ]
        },
        "failurePolicy": "Ignore",
        "reinvocationPolicy": "Never",
    }
    return {
        "apiVersion": API_VERSION,
        "kind": MUTATING,
        "metadata": {"name": name, "labels": dict(LABELS)},
        "webhooks": [webhook],
    }


def validating(*, target: Target, ca_bundle: bytes, name: str = NAME) -> kube.JSON:
    """The ValidatingWebhookConfiguration that checks new profiles at ``/validate-profiles``."""
    webhook = _common(target, server.VALIDATE_PATH, ca_bundle) | {
        "name": PROFILE_WEBHOOK,
        "rules": [
            {
                "apiGroups": [k8s_profiles.GROUP],
                "apiVersions": [k8s_profiles.VERSION],
                "operations": ["CREATE"],
                "resources": [k8s_profiles.PLURAL],
                "scope": "*",
            }
        ],
        "failurePolicy": "Fail",
    }
    return {
        "apiVersion": API_VERSION,
        "kind": VALIDATING,
        "metadata": {"name": name, "labels": dict(LABELS)},
        "webhooks": [webhook],
    }


def documents(
    *,
    target: Target,
    ca_bundle: bytes,
    provider_namespace: str = PROVIDER_NAMESPACE,
    name: str = NAME,
) -> list[kube.JSON]:
    """Both configurations, mutating first."""
    return [
        mutating(
            target=target, ca_bundle=ca_bundle, provider_namespace=provider_namespace, name=name
        ),
        validating(target=target, ca_bundle=ca_bundle, name=name),
    ]


async def register(kube_api: kube.Kube, configurations: Iterable[kube.JSON]) -> list[kube.JSON]:
    """Create or replace each configuration; returns them as stored. Safe to repeat."""
    return [await webhooks.apply(kube_api, document) for document in configurations]


async def unregister(kube_api: kube.Kube, name: str = NAME) -> None:
    """Delete both configurations of ``name``; absent ones are fine."""
    for kind in (MUTATING, VALIDATING):
        await webhooks.delete(kube_api, kind, name)
