"""Command lines of the control plane: ports, files and flags the tests rely on."""

from __future__ import annotations

from pathlib import Path

from vk_fargate.devcluster import binaries, components, processes

LAYOUT = components.Layout(Path("/x"))
PORTS = components.Ports(2379, 2380, 6443, 10257, 10259)
BINS = binaries.Binaries.in_dir(Path("/bin/cp"), kubectl=Path("/venv/bin/kubectl"))


def _by_name() -> dict[str, components.Command]:
    return {c.name: c for c in components.commands(LAYOUT, PORTS, BINS)}


def test_start_order_is_etcd_apiserver_then_controllers() -> None:
    names = [c.name for c in components.commands(LAYOUT, PORTS, BINS)]
    assert names == ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"]


def test_apiserver_talks_to_etcd_and_serves_on_loopback() -> None:
    argv = _by_name()["kube-apiserver"].argv
    assert argv[0] == "/bin/cp/kube-apiserver"
    assert "--etcd-servers=http://127.0.0.1:2379" in argv
    assert "--bind-address=127.0.0.1" in argv
    assert "--secure-port=6443" in argv
    assert "--authorization-mode=Node,RBAC" in argv
    assert "--kubelet-client-certificate=/x/pki/kubelet-client.crt" in argv
    assert _by_name()["kube-apiserver"].health_url == "https://127.0.0.1:6443/readyz"


def test_every_listener_is_on_loopback() -> None:
    for command in components.commands(LAYOUT, PORTS, BINS):
        assert command.health_url.split("//")[1].startswith("127.0.0.1:"), command.name
        for arg in command.argv:
            if "://" in arg and ("-urls=" in arg or "-servers=" in arg or "initial-cluster" in arg):
                assert "://127.0.0.1:" in arg, arg


def test_controllers_use_their_own_kubeconfig_and_log() -> None:
    cm = _by_name()["kube-controller-manager"]
    assert "--kubeconfig=/x/pki/kube-controller-manager.kubeconfig" in cm.argv
    assert "--use-service-account-credentials=true" in cm.argv
    assert cm.log == Path("/x/logs/kube-controller-manager.log")
    assert _by_name()["kube-scheduler"].health_url == "https://127.0.0.1:10259/healthz"


def test_server_ports_are_picked_below_the_ephemeral_range() -> None:
    """A port in the ephemeral range can be taken by an outgoing connection (even one to
    itself) while its server restarts; the dev stack's servers stay out of it."""
    first = int(Path(processes.EPHEMERAL_RANGE).read_text().split()[0])
    ports = processes.free_ports(6)
    assert len(set(ports)) == 6
    assert all(processes.PORTS_FROM <= p < first for p in ports), ports
