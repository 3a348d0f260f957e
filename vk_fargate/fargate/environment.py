"""A container's environment, resolved before it starts, as kubelet resolves it. Pure.

Sources, in kubelet's order: service links (when ``enableServiceLinks``) and the
``kubernetes`` service, ``envFrom`` (ConfigMaps and Secrets, with prefixes), then
``env`` (values with ``$(VAR)`` expansion, ConfigMap/Secret keys, downward-API field
and resource refs). A reference that is missing and not ``optional`` raises
``ConfigError`` with kubelet's wording; the pod then waits with
``CreateContainerConfigError``. Values that depend on the pod's address (its IP, its
node's name) are handed to the fleet with ``expand`` set, to be filled in once the
microVM is placed.
"""

from __future__ import annotations

import base64
import dataclasses
import decimal
import re
from typing import Any

from vk_fargate.fargate import quantities, sizing
from vk_fargate.fleet import images, models

JSON = dict[str, Any]


class ConfigError(Exception):
    """A referenced ConfigMap, Secret or key is missing (kubelet's message)."""


@dataclasses.dataclass(frozen=True)
class Sources:
    """What env resolution reads: ConfigMaps and Secrets (by name; None when missing)."""

    config_maps: dict[str, JSON | None]
    secrets: dict[str, JSON | None]
    services: list[JSON]
    master_services: list[JSON]  # the `kubernetes` service of the default namespace
    node_name_template: str  # e.g. fargate-ip-{private_ip_dashed}.<region>.compute.internal
    size: sizing.Size
    api_endpoint: str | None = None  # address:port behind the `kubernetes` service


def _service_env(services: list[JSON]) -> dict[str, str]:
    env: dict[str, str] = {}
    for svc in services:
        spec = svc.get("spec") or {}
        ip = spec.get("clusterIP")
        if not ip or ip == "None":
            continue
        name = svc["metadata"]["name"].upper().replace("-", "_")
        ports = spec.get("ports") or []
        env[f"{name}_SERVICE_HOST"] = ip
        if not ports:
            continue
        env[f"{name}_SERVICE_PORT"] = str(ports[0]["port"])
        for port in ports:
            if port.get("name"):
                env[f"{name}_SERVICE_PORT_{port['name'].upper().replace('-', '_')}"] = str(
                    port["port"]
                )
        first = ports[0]
        env[f"{name}_PORT"] = f"{first.get('protocol', 'TCP').lower()}://{ip}:{first['port']}"
        for port in ports:
            proto = port.get("protocol", "TCP")
            prefix = f"{name}_PORT_{port['port']}_{proto}"
            env[prefix] = f"{proto.lower()}://{ip}:{port['port']}"
            env[f"{prefix}_PROTO"] = proto.lower()
            env[f"{prefix}_PORT"] = str(port["port"])
            env[f"{prefix}_ADDR"] = ip
    return env


def _decode(secret: JSON, key: str) -> str:
    return base64.b64decode(secret["data"][key]).decode("utf-8", errors="replace")


def _field(pod: JSON, path: str, template: str) -> tuple[str, bool]:
    meta = pod["metadata"]
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.serviceAccountName": (pod.get("spec") or {}).get("serviceAccountName", ""),
    }
    if path in simple:
        return simple[path], False
    if path in ("status.podIP", "status.hostIP", "status.podIPs", "status.hostIPs"):
        return "{private_ip}", True
    if path == "spec.nodeName":
        return template, True
    match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), "")), False
    raise ConfigError(f"unsupported fieldRef {path!r}")


def resource_value(container: JSON, ref: JSON, size: sizing.Size) -> str:
    resource = ref["resource"]
    resources = container.get("resources") or {}
    kind, _, name = resource.partition(".")
    value = (resources.get(kind) or {}).get(name)
    if value is None and kind == "requests":
        value = (resources.get("limits") or {}).get(name) or "0"  # kubelet: unset request is 0
    if value is None:  # no limit: the node's allocatable, i.e. the Fargate size
        value = {
            "cpu": f"{size.vcpu_millis}m",
            "memory": f"{size.mem_mib}Mi",
            "ephemeral-storage": f"{size.ephemeral_gib}Gi",
        }.get(name)
    if value is None:
        raise ConfigError(f"unsupported resourceFieldRef {resource!r}")
    divisor = quantities.parse(ref.get("divisor") or "1")
    amount = quantities.parse(value) / (divisor or 1)
    return str(int(amount.to_integral_value(rounding=decimal.ROUND_CEILING)))


def _expand(
    value: str, env: dict[str, tuple[str, bool]], secret: set[str]
) -> tuple[str, bool, bool]:
    """``value`` expanded from ``env``; whether a value known only once placed went in,
    and whether a Secret's value did (the names in ``secret``)."""
    late = confidential = False

    def lookup(name: str) -> str | None:
        nonlocal late, confidential
        if name not in env:
            return None
        text, needs = env[name]
        late = late or needs
        confidential = confidential or name in secret
        return text

    return images.expand(value, lookup), late, confidential


def resolve(pod: JSON, container: JSON, sources: Sources) -> list[models.EnvVar]:
    """The container's environment for the fleet, or ConfigError."""
    namespace = pod["metadata"]["namespace"]
    env: dict[str, tuple[str, bool]] = {}
    secret: set[str] = set()  # names whose value comes from a Secret (write-only)
    service_env = _service_env(sources.master_services)
    if (pod.get("spec") or {}).get("enableServiceLinks", True):
        service_env = {**_service_env(sources.services), **service_env}
    env.update({k: (v, False) for k, v in service_env.items()})
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind, store in (("configMapRef", sources.config_maps), ("secretRef", sources.secrets)):
            ref = source.get(kind)
            if not ref:
                continue
            obj = store.get(ref["name"])
            if obj is None:
                if ref.get("optional"):
                    continue
                noun = "configmap" if kind == "configMapRef" else "secret"
                raise ConfigError(f'{noun} "{ref["name"]}" not found')
            for key in obj.get("data") or {}:
                text = obj["data"][key] if kind == "configMapRef" else _decode(obj, key)
                env[prefix + key] = (text, False)
                _mark(secret, prefix + key, kind == "secretRef")
    for var in container.get("env") or []:
        name = var["name"]
        source = var.get("valueFrom")
        if source is None:
            text, late, confidential = _expand(var.get("value", ""), env, secret)
            env[name] = (text, late)
            _mark(secret, name, confidential)
            continue
        if "configMapKeyRef" in source or "secretKeyRef" in source:
            is_cm = "configMapKeyRef" in source
            ref = source["configMapKeyRef" if is_cm else "secretKeyRef"]
            obj = (sources.config_maps if is_cm else sources.secrets).get(ref["name"])
            noun = "configmap" if is_cm else "secret"
            if obj is None or ref["key"] not in (obj.get("data") or {}):
                if ref.get("optional"):
                    continue
                if obj is None:
                    raise ConfigError(f'{noun} "{ref["name"]}" not found')
                raise ConfigError(
                    f"couldn't find key {ref['key']} in {'ConfigMap' if is_cm else 'Secret'} "
                    f"{namespace}/{ref['name']}"
                )
            text = obj["data"][ref["key"]] if is_cm else _decode(obj, ref["key"])
            env[name] = (text, False)
            _mark(secret, name, not is_cm)
        elif "fieldRef" in source:
            env[name] = _field(pod, source["fieldRef"]["fieldPath"], sources.node_name_template)
            secret.discard(name)
        elif "resourceFieldRef" in source:
            env[name] = (resource_value(container, source["resourceFieldRef"], sources.size), False)
            secret.discard(name)
    return [
        models.EnvVar(name=k, value=v, expand=x, secret=k in secret) for k, (v, x) in env.items()
    ]


def _mark(secret: set[str], name: str, confidential: bool) -> None:
    if confidential:
        secret.add(name)
    else:
        secret.discard(name)
