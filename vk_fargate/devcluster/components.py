"""The four control-plane components as data: files, ports and command lines.

Pure: nothing here touches the disk or the network. ``Layout`` says where a cluster's
files live; ``commands`` turns a layout, ports and binaries into what to run, in the
order to start it, each with the URL that says it is healthy.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from vk_fargate.devcluster import binaries

# The in-cluster address of the `kubernetes` Service is the first IP of this range.
SERVICE_CIDR = "10.96.0.0/24"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
# Names under which the API server's serving certificate is valid.
APISERVER_HOSTS = (
    "127.0.0.1",
    "localhost",
    "10.96.0.1",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where one cluster's files live, all under ``root``."""

    root: Path

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (group system:masters) users and tests connect with."""
        return self.root / "kubeconfig"

    def pem(self, name: str) -> Path:
        return self.pki / name

    def component_kubeconfig(self, component: str) -> Path:
        return self.pki / f"{component}.kubeconfig"

    def log(self, component: str) -> Path:
        return self.logs / f"{component}.log"


@dataclasses.dataclass(frozen=True)
class Ports:
    """Loopback TCP ports, one per listener."""

    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int


@dataclasses.dataclass(frozen=True)
class Command:
    """One component: how to run it and how to tell it is healthy."""

    name: str
    argv: tuple[str, ...]
    health_url: str
    log: Path


def apiserver_url(ports: Ports) -> str:
    return f"https://127.0.0.1:{ports.apiserver}"


def commands(layout: Layout, ports: Ports, bins: binaries.Binaries) -> list[Command]:
    """The components in start order: etcd, kube-apiserver, then the controllers."""
    pem = layout.pem
    etcd_url = f"http://127.0.0.1:{ports.etcd_client}"
    peer_url = f"http://127.0.0.1:{ports.etcd_peer}"
    etcd = Command(
        "etcd",
        (
            str(bins.etcd),
            "--name=default",
            f"--data-dir={layout.etcd_data}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=default={peer_url}",
            "--unsafe-no-fsync",  # throw-away data: durability is not worth the fsyncs
            "--log-level=warn",
        ),
        f"{etcd_url}/health",
        layout.log("etcd"),
    )
    apiserver = Command(
        "kube-apiserver",
        (
            str(bins.kube_apiserver),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={ports.apiserver}",
            f"--tls-cert-file={pem('apiserver.crt')}",
            f"--tls-private-key-file={pem('apiserver.key')}",
            f"--client-ca-file={pem('ca.crt')}",
            "--authorization-mode=Node,RBAC",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pem('sa.pub')}",
            f"--service-account-signing-key-file={pem('sa.key')}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true",
            # The API server dials virtual kubelets with this identity (kubectl logs).
            f"--kubelet-client-certificate={pem('kubelet-client.crt')}",
            f"--kubelet-client-key={pem('kubelet-client.key')}",
            # The `kubernetes` Service cannot point at a loopback address.
            "--endpoint-reconciler-type=none",
            # Front proxy (aggregated APIs such as metrics-server), as kubeadm sets it up.
            f"--requestheader-client-ca-file={pem('front-proxy-ca.crt')}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pem('front-proxy-client.crt')}",
            f"--proxy-client-key-file={pem('front-proxy-client.key')}",
            "--profiling=false",
        ),
        f"{apiserver_url(ports)}/readyz",
        layout.log("kube-apiserver"),
    )
    return [
        etcd,
        apiserver,
        _controller(
            "kube-controller-manager",
            bins.kube_controller_manager,
            layout,
            ports.controller_manager,
            (
                f"--service-account-private-key-file={pem('sa.key')}",
                f"--root-ca-file={pem('ca.crt')}",
                "--use-service-account-credentials=true",
                # Lets the cluster sign CSRs (kubelet serving certs of virtual nodes).
                f"--cluster-signing-cert-file={pem('ca.crt')}",
                f"--cluster-signing-key-file={pem('ca.key')}",
                f"--cert-dir={layout.root / 'controller-manager-certs'}",
            ),
        ),
        _controller(
            "kube-scheduler",
            bins.kube_scheduler,
            layout,
            ports.scheduler,
            (f"--cert-dir={layout.root / 'scheduler-certs'}",),
        ),
    ]


def _controller(
    name: str, program: Path, layout: Layout, port: int, extra: tuple[str, ...]
) -> Command:
    kubeconfig = layout.component_kubeconfig(name)
    return Command(
        name,
        (
            str(program),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            *extra,
        ),
        f"https://127.0.0.1:{port}/healthz",
        layout.log(name),
    )
