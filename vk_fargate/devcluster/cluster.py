"""One local cluster: writes its certificates, starts its components in order, stops
them all.

Invariant: whatever ``start`` began is stopped when it fails, is interrupted or is
cancelled, so a failed start leaves no process behind. A cluster whose ``root`` was
made for it is deleted on ``stop`` unless ``keep_files`` is set, or a start failed:
then the logs the error names are kept for reading.
"""

from __future__ import annotations

import dataclasses
import shutil
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from vk_fargate import errors, pki
from vk_fargate.devcluster import binaries, components, kubeconfigs, processes

# Seconds each component gets to become healthy; a cold apiserver on 2 cores takes ~10.
HEALTH_TIMEOUT = 90.0
# Seconds each component gets to exit after SIGTERM before SIGKILL.
STOP_GRACE = 10.0

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclasses.dataclass
class Running:
    """A started component."""

    command: components.Command
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid


class Cluster:
    """etcd, kube-apiserver, kube-controller-manager and kube-scheduler on loopback."""

    def __init__(
        self,
        bins: binaries.Binaries,
        *,
        root: Path | None = None,
        detach: bool = False,
        keep_files: bool = False,
    ) -> None:
        self._owns_root = root is None
        self.layout = components.Layout(
            root if root is not None else Path(tempfile.mkdtemp(prefix="vk-fargate-cluster-"))
        )
        self.bins = bins
        self.detach = detach
        self.keep_files = keep_files
        self.ports = components.Ports(*processes.free_ports(5))
        self.running: list[Running] = []

    @property
    def kubeconfig(self) -> Path:
        return self.layout.kubeconfig

    @property
    def server(self) -> str:
        return components.apiserver_url(self.ports)

    async def start(self, progress: Progress = _quiet) -> None:
        """Start every component and wait until each is healthy."""
        try:
            self._write_files()
            for command in components.commands(self.layout, self.ports, self.bins):
                began = time.monotonic()
                progress(f"starting {command.name}")
                process = processes.spawn(command, detach=self.detach)
                self.running.append(Running(command, process))
                await processes.wait_healthy(
                    process,
                    command,
                    ssl_context=health_ssl(self.layout, command.name),
                    timeout=HEALTH_TIMEOUT,
                )
                progress(f"{command.name} healthy in {time.monotonic() - began:.1f}s")
        except BaseException:
            self.keep_files = True
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the components in reverse order; remove the files unless kept."""
        for item in reversed(self.running):
            processes.stop(item.pid, grace=STOP_GRACE, child=item.process)
        self.running.clear()
        if self._owns_root and not self.keep_files:
            shutil.rmtree(self.layout.root, ignore_errors=True)

    def crash(self, name: str) -> None:
        """SIGKILL component ``name``, as a crash would end it; ``resume`` starts it again."""
        item = self._component(name)
        item.process.kill()
        item.process.wait()

    async def resume(self, name: str) -> None:
        """Start a crashed component again with its own command line; wait until healthy."""
        item = self._component(name)
        process = processes.spawn(item.command, detach=self.detach)
        self.running[self.running.index(item)] = Running(item.command, process)
        await processes.wait_healthy(
            process,
            item.command,
            ssl_context=health_ssl(self.layout, name),
            timeout=HEALTH_TIMEOUT,
        )

    def _component(self, name: str) -> Running:
        for item in self.running:
            if item.command.name == name:
                return item
        raise errors.HarnessError(f"find {name}", f"no such component: {name}")

    async def __aenter__(self) -> Cluster:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop()

    def status(self) -> dict[str, Any]:
        """What ``vk-fargate dev status --json`` prints about this cluster."""
        return {
            "kubeconfig": str(self.kubeconfig),
            "server": self.server,
            "root": str(self.layout.root),
            "components": {
                item.command.name: {
                    "pid": item.pid,
                    "url": item.command.health_url.rsplit("/", 1)[0],
                    "log": str(item.command.log),
                    "program": item.command.argv[0],
                    "argv": list(item.command.argv),
                    "health_url": item.command.health_url,
                }
                for item in self.running
            },
        }

    def _write_files(self) -> None:
        layout = self.layout
        layout.pki.mkdir(parents=True, exist_ok=True)
        layout.pki.chmod(0o700)
        ca = pki.new_ca()
        front_proxy_ca = pki.new_ca("vk-fargate-dev-front-proxy-ca")
        pairs = {
            "front-proxy-ca": front_proxy_ca,
            "front-proxy-client": pki.issue(front_proxy_ca, "front-proxy-client", client=True),
            "ca": ca,
            "apiserver": pki.issue(
                ca, "kube-apiserver", hosts=components.APISERVER_HOSTS, server=True
            ),
            "admin": pki.issue(
                ca, "kubernetes-admin", organizations=("system:masters",), client=True
            ),
            # Trusted by virtual kubelets for `kubectl logs` and friends.
            "kubelet-client": pki.issue(
                ca,
                "kube-apiserver-kubelet-client",
                organizations=("system:masters",),
                client=True,
            ),
            "kube-controller-manager": pki.issue(ca, "system:kube-controller-manager", client=True),
            "kube-scheduler": pki.issue(ca, "system:kube-scheduler", client=True),
        }
        signing = pki.new_signing_key()
        layout.pem("sa.pub").write_bytes(signing.cert)
        layout.pem("sa.key").write_bytes(signing.key)
        for name, pair in pairs.items():
            layout.pem(f"{name}.crt").write_bytes(pair.cert)
            layout.pem(f"{name}.key").write_bytes(pair.key)
        for component in ("kube-controller-manager", "kube-scheduler"):
            self._write_kubeconfig(
                layout.component_kubeconfig(component), ca, pairs[component], component
            )
        self._write_kubeconfig(layout.kubeconfig, ca, pairs["admin"], "kubernetes-admin")

    def _write_kubeconfig(
        self, path: Path, ca: pki.KeyPair, client: pki.KeyPair, user: str
    ) -> None:
        document = kubeconfigs.render(server=self.server, ca_cert=ca.cert, client=client, user=user)
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        path.chmod(0o600)


def health_ssl(layout: components.Layout, name: str) -> ssl.SSLContext | bool:
    """How to ask component ``name`` of the cluster at ``layout`` whether it is healthy."""
    if name == "kube-apiserver":
        context = ssl.create_default_context(cafile=str(layout.pem("ca.crt")))
        context.load_cert_chain(layout.pem("admin.crt"), layout.pem("admin.key"))
        return context
    # The controllers serve /healthz with certificates they make up themselves.
    return False
