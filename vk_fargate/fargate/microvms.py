"""A pod as the fleet runs it: the microVM spec of a pod, from the pod and plain values
(its size, its profile, its environment's sources, its pull secrets). Pure.

Sidecars (init containers with ``restartPolicy: Always``) go to the fleet as init
containers with ``restart_policy`` Always: it starts them in their place among the
init containers and keeps them beside the app containers, as the kubelet does. The
scheduler builds a new pod's spec with this, and so may a running pod's update.
"""

from __future__ import annotations

from typing import Any

from vk_fargate.fargate import (
    dns,
    environment,
    mounts,
    pullsecrets,
    security,
    sizing,
    volumes,
)
from vk_fargate.fargate import nodes as fargate_nodes
from vk_fargate.fleet import models

JSON = dict[str, Any]
MAX_GRACE_SECONDS = 3600


def references(pod: JSON) -> tuple[set[str], set[str]]:
    """The names of the ConfigMaps and of the Secrets the pod's environment reads."""
    spec = pod.get("spec") or {}
    config_maps: set[str] = set()
    secrets: set[str] = set()
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        for source in c.get("envFrom") or []:
            if "configMapRef" in source:
                config_maps.add(source["configMapRef"]["name"])
            if "secretRef" in source:
                secrets.add(source["secretRef"]["name"])
        for var in c.get("env") or []:
            value_from = var.get("valueFrom") or {}
            if "configMapKeyRef" in value_from:
                config_maps.add(value_from["configMapKeyRef"]["name"])
            if "secretKeyRef" in value_from:
                secrets.add(value_from["secretKeyRef"]["name"])
    return config_maps, secrets


def node_name_template(region: str) -> str:
    """The pod's node name with its address still to fill in (the fleet expands it)."""
    return fargate_nodes.node_name("{private_ip}", region).replace(
        "{private_ip}", "{private_ip_dashed}"
    )


def spec(
    pod: JSON,
    *,
    size: sizing.Size,
    profile: str,
    cluster: str,
    sources: environment.Sources,
    pull_secrets: list[JSON],
    names: dns.Names,
    mounted: volumes.Result | None = None,
) -> models.MicroVMSpec:
    """The microVM spec of ``pod``, its volumes ``mounted`` (``volumes.resolve``), its
    hostname, ``/etc/hosts`` entries and resolver ``names`` (``dns.names``).
    Raises ``environment.ConfigError`` when a reference of its environment is missing
    (or a ``subPathExpr`` cannot be expanded), and pydantic's ValidationError for a pod
    the fleet API cannot carry."""
    pod_spec = pod.get("spec") or {}
    meta = pod["metadata"]
    files = frozenset(v.name for v in (mounted.volumes if mounted else []) if v.files is not None)

    def container(c: JSON, *, init: bool = False) -> models.Container:
        env = environment.resolve(pod, c, sources)
        return models.Container(
            name=c["name"],
            image=c.get("image") or "",
            command=c.get("command") or [],  # $(VAR)s: the fleet expands them
            args=c.get("args") or [],
            env=env,
            volume_mounts=mounts.mounts(c, env, files),
            working_dir=c.get("workingDir"),
            image_pull_policy=c.get("imagePullPolicy"),
            security=_security(pod_spec, c),
            startup_probe=probe(c, "startupProbe"),
            liveness_probe=probe(c, "livenessProbe"),
            readiness_probe=probe(c, "readinessProbe"),
            post_start=hook(c, "postStart"),
            pre_stop=hook(c, "preStop"),
            termination_message_path=c.get("terminationMessagePath") or "/dev/termination-log",
            termination_message_policy=c.get("terminationMessagePolicy") or "File",
            pull_credentials=pullsecrets.credentials(c.get("image") or "", pull_secrets),
            restart_policy="Always" if init and c.get("restartPolicy") == "Always" else None,
            stdin=bool(c.get("stdin")),
            stdin_once=bool(c.get("stdinOnce")),
            tty=bool(c.get("tty")),
        )

    owners = meta.get("ownerReferences") or []
    return models.MicroVMSpec(
        vcpu_millis=size.vcpu_millis,
        mem_mib=size.mem_mib,
        ephemeral_gib=size.ephemeral_gib,
        labels={
            fargate_nodes.CLUSTER_LABEL: cluster,
            "namespace": meta["namespace"],
            "pod": meta["name"],
            "profile": profile,
        },
        init_containers=[container(c, init=True) for c in pod_spec.get("initContainers") or []],
        containers=[container(c) for c in pod_spec.get("containers") or []],
        restart_policy=pod_spec.get("restartPolicy", "Always"),
        termination_grace_seconds=min(
            int(pod_spec.get("terminationGracePeriodSeconds", 30)), MAX_GRACE_SECONDS
        ),
        spread_group=owners[0]["uid"] if owners else None,
        volumes=mounted.volumes if mounted else [],
        service_routes=service_routes(sources),
        hostname=names.hostname,
        domain=names.domain,
        hostname_as_fqdn=names.hostname_as_fqdn,
        host_aliases=names.host_aliases,
        dns=names.dns,
    )


def service_routes(sources: environment.Sources) -> list[models.ServiceRoute]:
    """The ``kubernetes`` Service's address, routed to the API server, so that an
    in-cluster client in the pod (``KUBERNETES_SERVICE_HOST``) reaches it."""
    if not sources.api_endpoint or not sources.master_services:
        return []
    spec = sources.master_services[0].get("spec") or {}
    ports = [p for p in spec.get("ports") or [] if p.get("protocol", "TCP") == "TCP"]
    ip = spec.get("clusterIP")
    if not ports or not ip or ip == "None" or ":" in ip:
        return []
    return [
        models.ServiceRoute(
            cluster_ip=ip, port=int(ports[0]["port"]), endpoint=sources.api_endpoint
        )
    ]


# A Kubernetes probe's fields and the fleet's names for them.
PROBE_FIELDS = {
    "initialDelaySeconds": "initial_delay_seconds",
    "periodSeconds": "period_seconds",
    "timeoutSeconds": "timeout_seconds",
    "successThreshold": "success_threshold",
    "failureThreshold": "failure_threshold",
    "terminationGracePeriodSeconds": "termination_grace_seconds",
}


def probe(container: JSON, kind: str) -> models.Probe | None:
    """The container's ``kind`` probe as the fleet takes it (validated by its model:
    a named port the container does not declare is refused there)."""
    found = container.get(kind)
    if not found:
        return None
    out: JSON = {ours: found[theirs] for theirs, ours in PROBE_FIELDS.items() if theirs in found}
    if "exec" in found:
        out["exec"] = {"command": (found["exec"] or {}).get("command") or []}
    if "httpGet" in found:
        out["http_get"] = _http_get(container, found["httpGet"])
    if "tcpSocket" in found:
        action = found["tcpSocket"]
        out["tcp_socket"] = {
            "host": action.get("host") or None,
            "port": _port(container, action.get("port")),
        }
    if "grpc" in found:
        out["grpc"] = {"port": found["grpc"].get("port"), "service": found["grpc"].get("service")}
    return models.Probe.model_validate(out)


def hook(container: JSON, kind: str) -> models.LifecycleHandler | None:
    """The container's ``postStart`` or ``preStop`` hook as the fleet takes it; a
    ``tcpSocket`` one (which the kubelet cannot run either) is refused by the model."""
    found = (container.get("lifecycle") or {}).get(kind)
    if not found:
        return None
    out: JSON = {}
    if "exec" in found:
        out["exec"] = {"command": (found["exec"] or {}).get("command") or []}
    if "httpGet" in found:
        out["http_get"] = _http_get(container, found["httpGet"])
    if "sleep" in found:
        out["sleep"] = {"seconds": (found["sleep"] or {}).get("seconds")}
    return models.LifecycleHandler.model_validate(out)


def _http_get(container: JSON, action: JSON) -> JSON:
    return {
        "scheme": action.get("scheme") or "HTTP",
        "host": action.get("host") or None,
        "port": _port(container, action.get("port")),
        "path": action.get("path") or "/",
        "headers": [
            {"name": h["name"], "value": h.get("value", "")}
            for h in action.get("httpHeaders") or []
        ],
    }


def _port(container: JSON, port: Any) -> Any:
    """A probe's port as a number: a name is looked up in the container's ports (as the
    kubelet's ``ResolveContainerPort``); one it does not declare stays a name."""
    if isinstance(port, str) and not port.isdigit():
        for declared in container.get("ports") or []:
            if declared.get("name") == port:
                return declared.get("containerPort")
    return port


def _security(pod_spec: JSON, container: JSON) -> models.SecurityContext | None:
    fields = security.effective(pod_spec, container)
    return None if fields is None else models.SecurityContext.model_validate(fields)
