"""Process-wide settings, read once from the environment (``VK_FARGATE_*``).

Only paths live here for now; every later component adds its own section. What counts
as loopback lives here too: fleetd's listen address and the provider's fleet URL may use
plain HTTP there only (else TLS, or an explicit insecure setting).
"""

from __future__ import annotations

import ipaddress
import os
import urllib.parse
from pathlib import Path

import pydantic
import pydantic_settings

from vk_fargate import errors


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / fallback


class Settings(pydantic_settings.BaseSettings):
    """Where vk-fargate keeps what outlives one process."""

    model_config = pydantic_settings.SettingsConfigDict(env_prefix="VK_FARGATE_")

    cache: Path = pydantic.Field(
        default_factory=lambda: _xdg("XDG_CACHE_HOME", ".cache") / "vk-fargate",
        description="Built binaries (per machine, keyed by version).",
    )
    state_dir: Path = pydantic.Field(
        default_factory=lambda: _xdg("XDG_STATE_HOME", ".local/state") / "vk-fargate",
        description="State of `vk-fargate dev up`: certificates, logs, etcd data.",
    )
    bin_dir: Path | None = pydantic.Field(
        default=None,
        description="Use the control-plane binaries in this folder instead of the cache.",
    )


def load() -> Settings:
    """Read the settings from the environment."""
    return Settings()


class ProviderSettings(pydantic_settings.BaseSettings):
    """``vk-fargate run``: where the cluster and the fleet are, and how to present nodes.

    Every field can be set as ``VK_FARGATE_<FIELD>`` (e.g. ``VK_FARGATE_FLEET_URL``).
    """

    model_config = pydantic_settings.SettingsConfigDict(env_prefix="VK_FARGATE_")

    cluster_name: str = pydantic.Field(
        default="vk-fargate",
        description="Labels its microVMs and nodes (`vk-fargate.io/cluster`); tags its ENIs.",
    )
    region: str = pydantic.Field(
        default="eu-central-1", description="In node names and labels; AWS's region."
    )
    kubeconfig: Path | None = pydantic.Field(
        default=None,
        description="API server credentials; unset: `$KUBECONFIG`, else the in-cluster "
        "service account.",
    )
    cluster_dns: list[str] = pydantic.Field(
        default=[],
        description="The kubelet's `clusterDNS` (a JSON list): `ClusterFirst` pods' "
        "nameservers; unset: the ClusterIP of kube-system's `kube-dns` Service, if any.",
    )
    cluster_domain: str = pydantic.Field(
        default="cluster.local",
        description="The kubelet's `clusterDomain`: pods' DNS search path and FQDNs.",
    )
    service_cidrs: list[str] = pydantic.Field(
        default=[],
        description="The cluster's Service ranges (a JSON list), refused in pods but for "
        "Services; unset: read from the cluster's ServiceCIDR objects.",
    )
    profile_dns_recheck_seconds: float = pydantic.Field(
        default=60.0,
        gt=0,
        description="(AWS) How often a profile whose VPC has DNS off is checked again; "
        "CoreDNS's pods stay Pending until it is on.",
    )
    scheduler_name: str = pydantic.Field(
        default="fargate-scheduler",
        description="The schedulerName the webhook sets and whose pods this provider places.",
    )
    fleet_url: str = pydantic.Field(
        default="http://127.0.0.1:8400",
        description="The fleet API: `https://` unless on loopback (or "
        "`VK_FARGATE_FLEET_INSECURE`).",
    )
    fleet_token_file: Path | None = pydantic.Field(
        default=None, description="The fleet API's bearer token, in a file (required)."
    )
    fleet_ca_file: Path | None = pydantic.Field(
        default=None,
        description="CA bundle (PEM) the fleet's certificate must chain to (then only its "
        "CAs are trusted); unset: the system's.",
    )
    fleet_insecure: bool = pydantic.Field(
        default=False,
        description="Allow a plain `http://` fleet URL beyond loopback: the token and "
        "Secrets' values in clear.",
    )
    kubelet_bind: str = pydantic.Field(
        default="0.0.0.0",
        description="The kubelet API's address; each node also gets a free port of its own on it.",
    )
    kubelet_port: int = pydantic.Field(
        default=10250, ge=0, le=65535, description="The kubelet API's shared port (all nodes)."
    )
    kubelet_advertise_address: str = pydantic.Field(
        default="127.0.0.1",
        description=(
            "The `Hostname` address of every virtual node: where the API server reaches this "
            "provider's kubelet API (in a cluster: this pod's IP)."
        ),
    )
    kubelet_client_ca_file: Path | None = pydantic.Field(
        default=None, description="CA of the API server's kubelet client certificate."
    )
    kubelet_tls_cert_file: Path | None = pydantic.Field(
        default=None, description="The kubelet API's serving certificate; unset: self-signed."
    )
    kubelet_tls_key_file: Path | None = pydantic.Field(
        default=None, description="Its key (with `VK_FARGATE_KUBELET_TLS_CERT_FILE`)."
    )
    profiles_file: Path | None = pydantic.Field(
        default=None,
        description="Fargate profiles as a YAML list, besides the CRD's (for clusters that "
        "may not install CRDs).",
    )
    install_crd: bool = pydantic.Field(
        default=True,
        description="Install the FargateProfile CRD at start; false: profiles from "
        "`VK_FARGATE_PROFILES_FILE` only.",
    )
    eviction_retry_seconds: float = pydantic.Field(
        default=30.0, ge=0, description="Wait before the one retry of a refused eviction."
    )
    volume_resync_seconds: float = pydantic.Field(
        default=30.0,
        gt=0,
        description="How often running pods' configMap, secret, downwardAPI and projected "
        "volumes are compared with their sources (changes reach a pod within 1.5 times this).",
    )
    budget_check_seconds: float = pydantic.Field(
        default=60.0,
        gt=0,
        description="How often PodDisruptionBudgets are checked for ones that select no pod.",
    )
    webhook_bind: str = pydantic.Field(
        default="0.0.0.0", description="The webhooks' listening address."
    )
    webhook_port: int = pydantic.Field(
        default=9443, ge=0, le=65535, description="The webhooks' listening port (HTTPS)."
    )
    webhook_register: bool = pydantic.Field(
        default=True, description="Register the webhook configurations at start."
    )
    webhook_url: str | None = pydantic.Field(
        default=None,
        description="Base URL the API server calls (e.g. `https://127.0.0.1:9443`); unset: "
        "the Service `VK_FARGATE_WEBHOOK_SERVICE`.",
    )
    webhook_service: str = pydantic.Field(
        default="vk-fargate/vk-fargate-webhook",
        description="namespace/name of the webhooks' Service.",
    )
    webhook_tls_cert_file: Path | None = pydantic.Field(
        default=None,
        description="Serving certificate shared by all replicas (else each makes its own CA).",
    )
    webhook_tls_key_file: Path | None = pydantic.Field(
        default=None, description="Its key (with `VK_FARGATE_WEBHOOK_TLS_CERT_FILE`)."
    )
    namespace: str = pydantic.Field(
        default="vk-fargate", description="The provider's own namespace (never mutated)."
    )
    metrics_bind: str = pydantic.Field(
        default="0.0.0.0", description="The metrics and health listener's address."
    )
    metrics_port: int = pydantic.Field(
        default=8080,
        ge=0,
        le=65535,
        description="Plain HTTP: `/metrics` (Prometheus), `/healthz`, `/readyz`.",
    )
    leader_elect: bool = pydantic.Field(
        default=False,
        description="Several replicas: only the holder of the Lease "
        "`VK_FARGATE_LEADER_LEASE` schedules.",
    )
    leader_lease: str = pydantic.Field(
        default="vk-fargate-leader",
        description="The leader election's Lease, in the provider's namespace.",
    )
    leader_lease_seconds: float = pydantic.Field(
        default=15.0,
        gt=0,
        description="A standby takes a Lease it has seen unchanged for this long (by its "
        "own clock, so skew does not matter).",
    )
    leader_renew_deadline_seconds: float = pydantic.Field(
        default=10.0,
        gt=0,
        description="A leader that cannot renew for this long steps down (exits) first.",
    )
    leader_retry_seconds: float = pydantic.Field(
        default=2.0, gt=0, description="Between looks at (and renewals of) the leader Lease."
    )
    workers: int = pydantic.Field(
        default=16,
        ge=1,
        le=256,
        description="Pods placed or deleted at once (the `pods` queue: changes from Kubernetes).",
    )
    status_workers: int = pydantic.Field(
        default=8,
        ge=1,
        le=256,
        description="Pod status writes at once (the `status` queue: changes from the fleet, "
        "which never wait behind placements).",
    )
    lease_renew_seconds: float = pydantic.Field(
        default=10.0, gt=0, description="How often each node's Lease is renewed."
    )
    retry_first_seconds: float = pydantic.Field(
        default=0.5,
        gt=0,
        description="A pod whose reconcile failed is tried again after this long, doubling "
        "per failure (client-go's per-item back-off); events for it do not cut the wait.",
    )
    retry_max_seconds: float = pydantic.Field(
        default=30.0,
        gt=0,
        description="The longest wait of a failing pod: so long at most after an outage ends.",
    )
    retry_qps: float = pydantic.Field(
        default=20.0,
        gt=0,
        description="Retries of failing pods a second, in all (client-go's token bucket: its "
        "10 doubled, as the controller-manager's API QPS).",
    )
    retry_burst: int = pydantic.Field(
        default=300,
        ge=1,
        description="Retries at once before retry_qps applies: one of every pod of a 300-pod "
        "burst (client-go's is 100).",
    )
    node_status_seconds: float = pydantic.Field(
        default=300.0,
        gt=0,
        description="A node's status is written this often when nothing changed (a change "
        "at once), as the kubelet's nodeStatusReportFrequency; the Lease says it lives.",
    )
    streams_per_pod: int = pydantic.Field(
        default=16,
        ge=1,
        description="Exec, attach and port-forward sessions open at once into one pod; one more "
        "is refused with 429.",
    )
    streams_max: int = pydantic.Field(
        default=256,
        ge=1,
        description="Exec, attach and port-forward sessions open at once through this replica.",
    )
    stream_idle_timeout_seconds: float = pydantic.Field(
        default=14400.0,
        gt=0,
        description="An exec, attach or port-forward session that moves no byte this long is "
        "ended (the kubelet's streamingConnectionIdleTimeout, 4 h).",
    )

    @pydantic.model_validator(mode="after")
    def _fleet_transport(self) -> ProviderSettings:
        url = urllib.parse.urlsplit(self.fleet_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"fleet_url must be http(s)://HOST[:PORT], not {self.fleet_url!r}")
        if url.scheme == "https":
            return self
        if self.fleet_ca_file is not None:
            raise ValueError(
                f"fleet_ca_file is set but fleet_url {self.fleet_url!r} is plain http: "
                "use https:// (or drop the CA)"
            )
        if not self.fleet_insecure and not loopback(url.hostname):
            raise ValueError(
                f"fleet_url {self.fleet_url!r} reaches beyond this machine without TLS: the "
                "bearer token and Secrets' values would cross the network in clear. Use "
                "https:// (VK_FARGATE_FLEET_CA_FILE for a private CA), or set "
                "VK_FARGATE_FLEET_INSECURE=true if you mean it"
            )
        return self


def provider() -> ProviderSettings:
    """``vk-fargate run``'s settings from the environment; ConfigError names what is wrong."""
    try:
        return ProviderSettings()
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            (f"VK_FARGATE_{str(e['loc'][0]).upper()}: " if e["loc"] else "")
            + e["msg"].removeprefix("Value error, ")
            for e in exc.errors()
        )
        raise errors.ConfigError(f"invalid VK_FARGATE_* settings: {problems}") from exc


def loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) never leaves this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve anywhere
