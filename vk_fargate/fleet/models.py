"""Pydantic models of the fleet API, field for field the schemas of ``openapi.yaml``.

A unit test compares each model with its schema (properties, required fields, enums),
so the two cannot drift apart. Validation limits live here too: the daemon answers
422 naming the offending field when a spec breaks them.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

import pydantic

MicroVMId = Annotated[str, pydantic.Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")]
MicroVMState = Literal["pending", "provisioning", "running", "stopping", "stopped", "failed"]
ContainerState = Literal["waiting", "running", "terminated"]
RestartPolicy = Literal["Always", "OnFailure", "Never"]
HostState = Literal["active", "draining"]
RuntimeName = Literal["process", "microvm"]
EventType = Literal["microvm", "deleted", "host", "maintenance", "heartbeat", "container"]
# A microVM in one of these states holds no host resources any more.
FINAL_STATES: frozenset[str] = frozenset({"stopped", "failed"})

# Bounds on what one spec may ask of a host. Kubernetes sets no count of containers or
# variables (only its 1.5 MiB object limit), so these sit far above real pods.
MAX_CONTAINERS = 64  # each of init_containers and containers
MAX_ENV = 4096  # variables per container
# What exec(2) takes: one argument or NAME=value under the kernel's MAX_ARG_STRLEN
# (128 KiB with its NUL), and a container's command, args and env together at most
# 1 MiB (half of ARG_MAX under the default 8 MiB stack; the image's env comes on top).
MAX_EXEC_STRING = 128 * 1024
MAX_EXEC_TOTAL = 1024 * 1024


class Model(pydantic.BaseModel):
    """Strict about unknown fields, as the OpenAPI schemas are."""

    model_config = pydantic.ConfigDict(extra="forbid")


class Error(Model):
    fault_message: str
    code: str
    field: str | None = None


class Resources(Model):
    vcpu_millis: int = pydantic.Field(ge=0)
    mem_mib: int = pydantic.Field(ge=0)


class Host(Model):
    id: str
    zone: str
    state: HostState
    runtime: RuntimeName
    capacity: Resources
    allocated: Resources
    microvms: int = pydantic.Field(ge=0)
    limits: Literal["cgroup-v2", "cgroup-v1", "none"]
    networking: Literal["netns", "nominal"]
    notes: list[str]
    drain_deadline: datetime.datetime | None = None


class HostList(Model):
    items: list[Host]


class HostAction(Model):
    action_type: Literal["Drain", "Activate"]
    grace_seconds: int = pydantic.Field(default=120, ge=0, le=86400)


class EnvVar(Model):
    # Kubernetes' rule: printable ASCII but "=".
    name: str = pydantic.Field(min_length=1, pattern=r"^[ -<>-~]+$")
    value: str = pydantic.Field(default="", repr=False)
    # Fill in {private_ip} and {private_ip_dashed} once placed (pod IP, node name).
    expand: bool = False
    # From a Secret: write-only, as pull_credentials. fleetd keeps the value beside the
    # microVM (mode 0600, removed with it) and answers "" in its place.
    secret: bool = False

    def rendered(self, private_ip: str) -> str:
        if not self.expand:
            return self.value
        dashed = private_ip.replace(".", "-")
        return self.value.replace("{private_ip}", private_ip).replace("{private_ip_dashed}", dashed)


class SecurityContext(Model):
    """What the runtime needs of a container's (and its pod's) securityContext."""

    run_as_user: int | None = pydantic.Field(default=None, ge=0)
    run_as_group: int | None = pydantic.Field(default=None, ge=0)
    run_as_non_root: bool = False
    read_only_root_filesystem: bool = False
    allow_privilege_escalation: bool | None = None
    capabilities_add: list[str] = []
    capabilities_drop: list[str] = []
    # Kubernetes' seccompProfile.type; unset is Unconfined, as Kubernetes' default.
    seccomp_profile: Literal["RuntimeDefault", "Unconfined"] | None = None


DnsLabel = Annotated[str, pydantic.Field(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")]
MAX_VOLUMES = 256  # per microVM
MAX_FILES = 1024  # per files volume


def _relative(path: str, what: str) -> str:
    """A path inside a volume: relative, no ``..`` element, not starting with ``..``
    (the atomic writer's own names), as the kubelet's validation of ``items[].path``."""
    parts = path.split("/")
    if not path or path.startswith("/") or ".." in parts or path.startswith(".."):
        raise ValueError(f"{what} {path!r} must be a relative path without '..'")
    return path


class VolumeFile(Model):
    """One file of a ``files`` volume: a ConfigMap or Secret key, a downward API field
    or a ServiceAccount token, already resolved by the client."""

    path: str = pydantic.Field(max_length=4096)
    # base64 of the bytes; write-only: the daemon keeps it beside the microVM only
    # (tmpfs or mode 0600, removed with it) and answers "" in its place.
    content: str = pydantic.Field(default="", repr=False)
    mode: int | None = pydantic.Field(default=None, ge=0, le=0o777)

    @pydantic.field_validator("path")
    @classmethod
    def _inside(cls, path: str) -> str:
        return _relative(path, "file path")


class FileSet(Model):
    """The content of a ``files`` volume (configMap, secret, downwardAPI, projected)."""

    default_mode: int = pydantic.Field(default=0o644, ge=0, le=0o777)
    items: list[VolumeFile] = pydantic.Field(default=[], max_length=MAX_FILES)
    # Not resolved yet (a missing ConfigMap, say): containers mounting this volume wait
    # in ContainerCreating until its files are put (PUT .../volumes/{name}).
    pending: bool = False


class EmptyDir(Model):
    medium: Literal["", "Memory"] = ""
    size_limit_mib: int | None = pydantic.Field(default=None, ge=1)


class Volume(Model):
    """A pod volume, one of ``empty_dir`` or ``files``."""

    name: DnsLabel
    empty_dir: EmptyDir | None = None
    files: FileSet | None = None

    @pydantic.model_validator(mode="after")
    def _one_kind(self) -> Volume:
        if (self.empty_dir is None) == (self.files is None):
            raise ValueError(f"volume {self.name}: give exactly one of empty_dir and files")
        return self


class VolumeMount(Model):
    name: DnsLabel
    mount_path: str = pydantic.Field(min_length=2, max_length=4096, pattern=r"^/")
    sub_path: str | None = pydantic.Field(default=None, max_length=4096)
    read_only: bool = False

    @pydantic.field_validator("mount_path")
    @classmethod
    def _no_parent(cls, path: str) -> str:
        if ".." in path.split("/"):
            raise ValueError(f"mount path {path!r} must not contain '..'")
        return path

    @pydantic.field_validator("sub_path")
    @classmethod
    def _sub_inside(cls, path: str | None) -> str | None:
        return None if path is None else _relative(path, "subPath")


class ServiceRoute(Model):
    """TCP from inside the microVM to ``cluster_ip:port`` reaches ``endpoint``
    (``address:port``), relayed by the host: how a pod reaches the cluster's API server
    through the ``kubernetes`` Service."""

    cluster_ip: str
    port: int = pydantic.Field(ge=1, le=65535)
    endpoint: str = pydantic.Field(max_length=64)

    @pydantic.field_validator("cluster_ip")
    @classmethod
    def _ipv4(cls, address: str) -> str:
        if not isinstance(ipaddress.ip_address(address), ipaddress.IPv4Address):
            raise ValueError(f"cluster_ip {address!r} is not an IPv4 address")
        return address

    @pydantic.field_validator("endpoint")
    @classmethod
    def _address_and_port(cls, endpoint: str) -> str:
        host, sep, port = endpoint.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"endpoint {endpoint!r} is not address:port")
        ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
        return endpoint


Port = Annotated[int, pydantic.Field(ge=1, le=65535)]


def _ipv4(address: str, what: str) -> str:
    if not isinstance(ipaddress.ip_address(address), ipaddress.IPv4Address):
        raise ValueError(f"{what} {address!r} is not an IPv4 address")
    return address


def _endpoint(endpoint: str) -> str:
    host, sep, port = endpoint.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"endpoint {endpoint!r} is not address:port")
    _ipv4(host, "endpoint address")
    return endpoint


class ServicePort(Model):
    """One port of one ClusterIP Service, as kube-proxy programs it on a node: a new
    connection from a pod to ``cluster_ip:port`` over ``protocol`` goes to one of
    ``endpoints`` (the Service's ready ``address:port`` pairs) at random, or to the one
    this pod used within ``affinity_seconds`` (``sessionAffinity: ClientIP``). With no
    endpoints it is refused, as kube-proxy's REJECT refuses it."""

    name: str = pydantic.Field(min_length=1, max_length=320, pattern=r"^[A-Za-z0-9./:_-]+$")
    cluster_ip: str
    port: int = pydantic.Field(ge=1, le=65535)
    protocol: Literal["TCP", "UDP"] = "TCP"
    endpoints: list[str] = pydantic.Field(default=[], max_length=1000)
    affinity_seconds: int | None = pydantic.Field(default=None, ge=1, le=86400)

    @pydantic.field_validator("cluster_ip")
    @classmethod
    def _cluster_ip(cls, address: str) -> str:
        return _ipv4(address, "cluster_ip")

    @pydantic.field_validator("endpoints")
    @classmethod
    def _endpoints(cls, endpoints: list[str]) -> list[str]:
        return [_endpoint(e) for e in endpoints]


class ServiceTable(Model):
    """The Services every microVM of one cluster reaches, replaced whole by each PUT.
    ``service_cidrs`` are the cluster's Service ranges: an address in them that no
    port of ``ports`` names is refused inside the microVM, and the host routes them
    nowhere (an unreachable route), so no such packet ever leaves the machine."""

    service_cidrs: list[str] = pydantic.Field(default=[], max_length=4)
    ports: list[ServicePort] = pydantic.Field(default=[], max_length=20000)

    @pydantic.field_validator("service_cidrs")
    @classmethod
    def _private_ranges(cls, cidrs: list[str]) -> list[str]:
        for cidr in cidrs:
            network = ipaddress.ip_network(cidr, strict=True)
            if not isinstance(network, ipaddress.IPv4Network) or not network.is_private:
                raise ValueError(f"service CIDR {cidr} is not a private IPv4 range")
            if network.prefixlen < 8:
                raise ValueError(f"service CIDR {cidr} is wider than a /8")
        return cidrs

    @pydantic.model_validator(mode="after")
    def _ports_inside(self) -> ServiceTable:
        ranges = [ipaddress.ip_network(c) for c in self.service_cidrs]
        seen: set[tuple[str, int, str]] = set()
        for p in self.ports:
            if not any(ipaddress.ip_address(p.cluster_ip) in r for r in ranges):
                raise ValueError(f"{p.name}: cluster_ip {p.cluster_ip} is in no service CIDR")
            key = (p.cluster_ip, p.port, p.protocol)
            if key in seen:
                raise ValueError(f"{p.name}: {p.cluster_ip}:{p.port}/{p.protocol} is listed twice")
            seen.add(key)
        return self


class DNSConfig(Model):
    """The pod's ``/etc/resolv.conf``, already resolved from its ``dnsPolicy`` and
    ``dnsConfig`` by the client (the kubelet's limits: 3 nameservers, 32 searches).
    With ``extend_host`` these extend the host's own file (``dnsPolicy: Default`` with a
    ``dnsConfig``): its nameservers and searches first, options merged by name."""

    nameservers: list[str] = pydantic.Field(default=[], max_length=3)
    searches: list[str] = pydantic.Field(default=[], max_length=32)
    options: list[str] = pydantic.Field(default=[], max_length=16)
    extend_host: bool = False  # start from the host's resolv.conf (dnsPolicy Default)

    @pydantic.field_validator("nameservers")
    @classmethod
    def _addresses(cls, servers: list[str]) -> list[str]:
        for server in servers:
            ipaddress.ip_address(server)
        return servers

    @pydantic.field_validator("searches", "options")
    @classmethod
    def _one_word(cls, words: list[str]) -> list[str]:
        for word in words:
            if not word or any(c.isspace() for c in word) or len(word) > 253:
                raise ValueError(f"{word!r} is not one word of at most 253 characters")
        return words


class HostAlias(Model):
    """An ``/etc/hosts`` entry of the pod's ``hostAliases``."""

    ip: str
    hostnames: list[str] = pydantic.Field(min_length=1, max_length=64)

    @pydantic.field_validator("ip")
    @classmethod
    def _address(cls, address: str) -> str:
        ipaddress.ip_address(address)
        return address

    @pydantic.field_validator("hostnames")
    @classmethod
    def _names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?", name):
                raise ValueError(f"host alias {name!r} is not a DNS name")
        return names


def _numbered(port: Any) -> Any:
    """A probe's port must be a number: the client resolves a named port from the
    container's ports, and one that names none is refused here, saying so."""
    if isinstance(port, str) and not port.isdigit():
        raise ValueError(f"named port {port!r} is not among the container's ports")
    return port


class ExecAction(Model):
    command: list[str] = pydantic.Field(min_length=1)


class HTTPHeader(Model):
    name: str = pydantic.Field(min_length=1)
    value: str = ""


class HTTPGetAction(Model):
    scheme: Literal["HTTP", "HTTPS"] = "HTTP"
    host: str | None = None  # unset: the microVM's IP
    port: Port
    path: str = "/"
    headers: list[HTTPHeader] = []

    _port = pydantic.field_validator("port", mode="before")(_numbered)


class TCPSocketAction(Model):
    host: str | None = None  # unset: the microVM's IP
    port: Port

    _port = pydantic.field_validator("port", mode="before")(_numbered)


class GRPCAction(Model):
    port: Port
    service: str | None = None


class Probe(Model):
    """A container's probe, as the kubelet runs one: exactly one handler."""

    exec: ExecAction | None = None
    http_get: HTTPGetAction | None = None
    tcp_socket: TCPSocketAction | None = None
    grpc: GRPCAction | None = None
    initial_delay_seconds: int = pydantic.Field(default=0, ge=0)
    period_seconds: int = pydantic.Field(default=10, ge=1)
    timeout_seconds: int = pydantic.Field(default=1, ge=1)
    success_threshold: int = pydantic.Field(default=1, ge=1)
    failure_threshold: int = pydantic.Field(default=3, ge=1)
    # A liveness or startup probe's kill: this grace, else the microVM's.
    termination_grace_seconds: int | None = pydantic.Field(default=None, ge=1, le=3600)

    @pydantic.model_validator(mode="after")
    def _one_handler(self) -> Probe:
        given = [h for h in (self.exec, self.http_get, self.tcp_socket, self.grpc) if h]
        if len(given) != 1:
            raise ValueError("a probe needs exactly one of exec, http_get, tcp_socket and grpc")
        return self


class SleepAction(Model):
    seconds: int = pydantic.Field(ge=0, le=3600)


class LifecycleHandler(Model):
    """A postStart or preStop hook, as the kubelet runs one: exactly one handler."""

    exec: ExecAction | None = None
    http_get: HTTPGetAction | None = None
    sleep: SleepAction | None = None

    @pydantic.model_validator(mode="after")
    def _one_handler(self) -> LifecycleHandler:
        if len([h for h in (self.exec, self.http_get, self.sleep) if h]) != 1:
            raise ValueError("a lifecycle hook needs exactly one of exec, http_get and sleep")
        return self


class Container(Model):
    name: str = pydantic.Field(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
    image: str = pydantic.Field(min_length=1)
    command: list[str] = []
    args: list[str] = []
    env: list[EnvVar] = pydantic.Field(default=[], max_length=MAX_ENV)
    working_dir: str | None = pydantic.Field(default=None, max_length=4096)
    # Kubernetes' imagePullPolicy; unset: Always for :latest or no tag, else IfNotPresent.
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    security: SecurityContext | None = None
    volume_mounts: list[VolumeMount] = pydantic.Field(default=[], max_length=MAX_VOLUMES)
    startup_probe: Probe | None = None
    liveness_probe: Probe | None = None
    readiness_probe: Probe | None = None
    post_start: LifecycleHandler | None = None
    pre_stop: LifecycleHandler | None = None
    # Kubernetes' terminationMessagePath and terminationMessagePolicy.
    termination_message_path: str = pydantic.Field(
        default="/dev/termination-log", min_length=1, max_length=4096, pattern=r"^/"
    )
    termination_message_policy: Literal["File", "FallbackToLogsOnError"] = "File"
    # Init containers only: "Always" makes it a sidecar (runs beside the app containers,
    # restarted on exit, stopped after them).
    restart_policy: Literal["Always"] | None = None
    # Kubernetes' stdin, stdinOnce and tty: stdin is a pipe kept open for attach sessions
    # (closed after the first one with stdinOnce), tty a terminal. Process hosts only.
    stdin: bool = False
    stdin_once: bool = False
    tty: bool = False
    # user:password for this pull only (from the pod's image pull secrets): fleetd keeps
    # it in memory, never in its database, events, logs or answers.
    pull_credentials: str | None = pydantic.Field(default=None, repr=False)

    @pydantic.model_serializer(mode="wrap")
    def _write_only(self, handler: pydantic.SerializerFunctionWrapHandler) -> dict[str, Any]:
        """``pull_credentials`` is write-only: sent by a client, never in an answer (the
        daemon keeps only specs without it)."""
        out: dict[str, Any] = handler(self)
        if out.get("pull_credentials") is None:
            out.pop("pull_credentials", None)
        return out

    @pydantic.field_validator("working_dir")
    @classmethod
    def _absolute(cls, path: str | None, info: pydantic.ValidationInfo) -> str | None:
        if path is not None and not path.startswith("/"):
            raise ValueError(
                f"container {info.data.get('name', '?')}: workingDir {path!r} is not an "
                "absolute path (the OCI runtime's rule for a process's working directory)"
            )
        return path

    @pydantic.model_validator(mode="after")
    def _probes(self) -> Container:
        for kind, probe in (("liveness", self.liveness_probe), ("startup", self.startup_probe)):
            if probe is not None and probe.success_threshold != 1:
                raise ValueError(
                    f"container {self.name}: {kind} probe's success_threshold must be 1"
                )
        return self

    @pydantic.model_validator(mode="after")
    def _fits_exec(self) -> Container:
        """Refuse here what exec(2) would refuse later (E2BIG, or a NUL cutting a
        string short), naming the container."""
        strings = [*self.command, *self.args, *(f"{e.name}={e.value}" for e in self.env)]
        total = 0
        for text in strings:
            size = len(text.encode()) + 1
            if "\0" in text:
                raise ValueError(f"container {self.name}: {text[:40]!r}... holds a NUL byte")
            if size > MAX_EXEC_STRING:
                raise ValueError(
                    f"container {self.name}: {text[:40]!r}... is {size} bytes, over the "
                    f"{MAX_EXEC_STRING} a process can be given in one argument or variable"
                )
            total += size
        if total > MAX_EXEC_TOTAL:
            raise ValueError(
                f"container {self.name}: command, args and env are {total} bytes, over "
                f"the {MAX_EXEC_TOTAL} a container may be started with"
            )
        return self


SecretEnv = dict[str, dict[str, str]]  # container -> variable -> value


def _each_container(spec: MicroVMSpec, change: Callable[[Container], Container]) -> MicroVMSpec:
    return spec.model_copy(
        update={
            "init_containers": [change(c) for c in spec.init_containers],
            "containers": [change(c) for c in spec.containers],
        }
    )


def without_credentials(spec: MicroVMSpec) -> tuple[MicroVMSpec, dict[str, str]]:
    """``spec`` with no pull credentials, and the credentials by container name."""
    found = {
        c.name: c.pull_credentials
        for c in [*spec.init_containers, *spec.containers]
        if c.pull_credentials
    }
    return _each_container(spec, lambda c: c.model_copy(update={"pull_credentials": None})), found


def without_secrets(spec: MicroVMSpec) -> tuple[MicroVMSpec, SecretEnv]:
    """``spec`` with its secret env values blanked, and those values (the daemon keeps
    them beside the microVM, never in its database, events or answers)."""
    found: SecretEnv = {}

    def blank(c: Container) -> Container:
        values = {e.name: e.value for e in c.env if e.secret}
        if not values:
            return c
        found[c.name] = values
        env = [e.model_copy(update={"value": ""}) if e.secret else e for e in c.env]
        return c.model_copy(update={"env": env})

    return _each_container(spec, blank), found


def with_secrets(spec: MicroVMSpec, secrets: SecretEnv) -> MicroVMSpec:
    """``spec`` with the values ``without_secrets`` took out put back."""

    def fill(c: Container) -> Container:
        values = secrets.get(c.name, {})
        env = [e.model_copy(update={"value": values.get(e.name, e.value)}) for e in c.env]
        return c.model_copy(update={"env": env}) if values else c

    return _each_container(spec, fill)


class MicroVMSpec(Model):
    vcpu_millis: int = pydantic.Field(ge=250, le=16000)
    mem_mib: int = pydantic.Field(ge=512, le=122880)
    ephemeral_gib: int = pydantic.Field(default=20, ge=20, le=175)
    subnet: str | None = None
    zone: str | None = None
    private_ip: str | None = None
    spread_group: str | None = None
    labels: dict[str, str] = {}
    init_containers: list[Container] = pydantic.Field(default=[], max_length=MAX_CONTAINERS)
    containers: list[Container] = pydantic.Field(min_length=1, max_length=MAX_CONTAINERS)
    restart_policy: RestartPolicy = "Always"
    termination_grace_seconds: int = pydantic.Field(default=30, ge=0, le=3600)
    volumes: list[Volume] = pydantic.Field(default=[], max_length=MAX_VOLUMES)
    service_routes: list[ServiceRoute] = pydantic.Field(default=[], max_length=16)
    hostname: str | None = pydantic.Field(
        default=None, pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
    )
    domain: str | None = pydantic.Field(
        default=None, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
    )
    hostname_as_fqdn: bool = False
    host_aliases: list[HostAlias] = pydantic.Field(default=[], max_length=64)
    dns: DNSConfig | None = None

    @pydantic.model_validator(mode="after")
    def _unique_container_names(self) -> MicroVMSpec:
        names = [c.name for c in [*self.init_containers, *self.containers]]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"container names must be unique: {', '.join(duplicates)}")
        return self

    @pydantic.model_validator(mode="after")
    def _sidecars_are_init_containers(self) -> MicroVMSpec:
        for c in self.containers:
            if c.restart_policy is not None:
                raise ValueError(
                    f"container {c.name}: restart_policy is for init containers (sidecars)"
                )
        return self

    @pydantic.model_validator(mode="after")
    def _mounts_name_volumes(self) -> MicroVMSpec:
        names = [v.name for v in self.volumes]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"volume names must be unique: {', '.join(duplicates)}")
        for c in [*self.init_containers, *self.containers]:
            paths = [m.mount_path for m in c.volume_mounts]
            for m in c.volume_mounts:
                if m.name not in names:
                    raise ValueError(f"container {c.name}: volume mount {m.name} names no volume")
                if paths.count(m.mount_path) > 1:
                    raise ValueError(f"container {c.name}: mount path {m.mount_path} is used twice")
        return self


def invalid(exc: pydantic.ValidationError) -> str:
    """The first broken rule of a spec, as ``field: message`` (the daemon's 422 and the
    scheduler's refusal say the same)."""
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "body"
    return f"{field}: {first['msg'].removeprefix('Value error, ')}"


class Termination(Model):
    exit_code: int
    reason: str | None = None
    message: str | None = None
    started_at: datetime.datetime | None = None
    finished_at: datetime.datetime | None = None


class PullResult(Model):
    """How a container's image came to the host: pulled (how long, how big) or present."""

    present: bool
    seconds: float = pydantic.Field(ge=0)
    size: int = pydantic.Field(ge=0)
    # When the image was made ready for the container: a later start (a crash restart)
    # pulled nothing; one that follows it (a new image in place) did.
    at: datetime.datetime | None = None


class ContainerStatus(Model):
    name: str
    state: ContainerState
    reason: str | None = None
    message: str | None = None
    exit_code: int | None = None
    started_at: datetime.datetime | None = None
    finished_at: datetime.datetime | None = None
    restart_count: int = pydantic.Field(ge=0)
    container_id: str | None = None
    image_id: str | None = None  # repo@sha256:... of the image it runs, once pulled
    pulled: PullResult | None = None
    last_termination: Termination | None = None
    # Readiness as the kubelet reports it: running, started, and its readiness probe
    # (if any) passing.
    ready: bool = False
    # Its startup probe has passed (or it has none) while it runs; None: not reported.
    started: bool | None = None


class MicroVMStatus(Model):
    state: MicroVMState
    reason: str | None = None
    message: str | None = None
    host: str | None = None
    zone: str | None = None
    subnet: str | None = None
    private_ip: str | None = None
    init_containers: list[ContainerStatus] = []
    containers: list[ContainerStatus] = []
    created_at: datetime.datetime
    started_at: datetime.datetime | None = None
    finished_at: datetime.datetime | None = None
    updated_at: datetime.datetime


class MicroVM(Model):
    id: MicroVMId
    spec: MicroVMSpec
    status: MicroVMStatus


class MicroVMList(Model):
    items: list[MicroVM]
    cursor: int = pydantic.Field(ge=0)


class CPUStats(Model):
    usage_core_nanoseconds: int = pydantic.Field(ge=0)


class MemoryStats(Model):
    usage_bytes: int = pydantic.Field(ge=0)
    working_set_bytes: int = pydantic.Field(ge=0)
    rss_bytes: int | None = pydantic.Field(default=None, ge=0)
    page_faults: int | None = pydantic.Field(default=None, ge=0)
    major_page_faults: int | None = pydantic.Field(default=None, ge=0)


class ContainerStats(Model):
    name: str
    started_at: datetime.datetime | None = None
    cpu: CPUStats
    memory: MemoryStats


class NetworkStats(Model):
    name: str
    rx_bytes: int = pydantic.Field(ge=0)
    rx_errors: int = pydantic.Field(ge=0)
    tx_bytes: int = pydantic.Field(ge=0)
    tx_errors: int = pydantic.Field(ge=0)


class MicroVMStats(Model):
    microvm_id: MicroVMId
    timestamp: datetime.datetime
    started_at: datetime.datetime | None = None
    cpu: CPUStats
    memory: MemoryStats
    containers: list[ContainerStats]
    network: NetworkStats | None = None


class MaintenanceNotice(Model):
    host: str
    microvm_id: str
    not_after: datetime.datetime
    message: str


class ContainerEvent(Model):
    """What happened to a container that its status does not say: a failed probe
    (``Unhealthy``), a kill for it (``Killing``), a failed lifecycle hook
    (``FailedPostStartHook``, ``FailedPreStopHook``), as the kubelet's events."""

    container: str
    reason: str
    message: str
    warning: bool = False


class Event(Model):
    cursor: int = pydantic.Field(ge=0)
    type: EventType
    time: datetime.datetime
    microvm: MicroVM | None = None
    microvm_id: str | None = None
    host: Host | None = None
    notice: MaintenanceNotice | None = None
    container_event: ContainerEvent | None = None


def now() -> datetime.datetime:
    """The current time, timezone-aware UTC (what every timestamp of the API is)."""
    return datetime.datetime.now(datetime.UTC)
