"""The Helm chart's RBAC is enough: the provider runs as the chart's ServiceAccount
(a token from the TokenRequest API) on a cluster of its own, and the seed's walkthrough
works, with no request refused.

This is the chart's default mode: the chart, not the provider, registers the webhook
configurations (VK_FARGATE_WEBHOOK_REGISTER=false as the Deployment sets it, no RBAC on
them). The chart's own rendering of them is created, pointed at the provider on loopback
(no Service without a cluster network) and trusting its serving certificate, as the
Secret's certificate is trusted in a cluster. tests/e2e/test_chart.py runs the mode in
which the provider registers them (webhook.tls.existingSecret)."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client as k8s

from tests import kubectl, waiting
from vk_fargate.devcluster import binaries, cluster, kubeconfigs, processes
from vk_fargate.devcluster import fleet as devfleet
from vk_fargate.devcluster import provider as devprovider
from vk_fargate.devcluster import registry as devregistry
from vk_fargate.k8s import client
from vk_fargate.kubelet import tls

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "vk-fargate"
RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
WEBHOOK_KINDS = {"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"}


def _helm() -> str:
    done = subprocess.run(
        ["bash", str(ROOT / "hack" / "helm" / "build.sh")],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"helm could not be built (Go needed): {done.stderr.strip()[-300:]}")
    return done.stdout.strip().splitlines()[-1]


def _kubectl(local: cluster.Cluster, *args: str, stdin: str | None = None) -> str:
    return kubectl.run(local.kubeconfig, *args, stdin=stdin, timeout=120)


def _on_loopback(configuration: dict[str, Any], url: str, cert: bytes) -> dict[str, Any]:
    """The chart's configuration, its webhooks at ``url`` (the Service's path kept) and
    trusting ``cert``; everything else as rendered."""
    hooks = []
    for hook in configuration["webhooks"]:
        rendered = hook["clientConfig"]
        assert base64.b64decode(rendered["caBundle"]).startswith(b"-----BEGIN CERTIFICATE")
        client_config = {
            "url": url + rendered["service"]["path"],
            "caBundle": base64.b64encode(cert).decode("ascii"),
        }
        hooks.append({**hook, "clientConfig": client_config})
    return {**configuration, "webhooks": hooks}


@pytest.fixture
async def chart_cluster(
    control_plane_binaries: binaries.Binaries, tmp_path: Path
) -> AsyncIterator[cluster.Cluster]:
    async with cluster.Cluster(control_plane_binaries) as local:
        yield local


async def test_the_provider_needs_no_more_than_the_charts_rbac(
    chart_cluster: cluster.Cluster, tmp_path: Path, registry: devregistry.Registry
) -> None:
    local = chart_cluster
    rendered = await asyncio.to_thread(
        subprocess.run,
        [
            _helm(),
            "template",
            "vkf",
            str(ROOT / "helm" / "vk-fargate"),
            "--namespace",
            NAMESPACE,
            "--set",
            "fleet.token.value=unused",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    documents = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    rbac = [d for d in documents if d["kind"] in RBAC_KINDS]
    assert {d["kind"] for d in rbac} == RBAC_KINDS
    account = next(d for d in rbac if d["kind"] == "ServiceAccount")["metadata"]["name"]
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    register = next(e for e in container["env"] if e["name"] == "VK_FARGATE_WEBHOOK_REGISTER")
    assert register["value"] == "false"  # the chart registers the webhooks
    configurations = [d for d in documents if d["kind"] in WEBHOOK_KINDS]
    assert {d["kind"] for d in configurations} == WEBHOOK_KINDS
    _kubectl(local, "create", "namespace", NAMESPACE)
    _kubectl(local, "apply", "-f", str(ROOT / "helm" / "vk-fargate" / "crds"))
    _kubectl(local, "apply", "-f", "-", stdin=yaml.safe_dump_all(rbac))
    minted = json.loads(
        _kubectl(
            local, "create", "token", account, "-n", NAMESPACE, "--duration", "1h", "-o", "json"
        )
    )
    token = minted["status"]["token"]
    admin = yaml.safe_load(local.kubeconfig.read_text())
    as_account: dict[str, Any] = {
        **admin,
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [
            {
                "name": kubeconfigs.CLUSTER_NAME,
                "context": {"cluster": kubeconfigs.CLUSTER_NAME, "user": account},
            }
        ],
    }
    kubeconfig = tmp_path / "provider.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(as_account))

    fleet = await devfleet.start(tmp_path / "fleet", registry=registry.host)
    port = processes.free_ports(1)[0]
    env = devprovider.environment(local, fleet, port=port, cluster_name="rbac")
    # The webhook serving certificate from files, as the Deployment mounts the Secret's.
    cert, key = tls.self_signed(("127.0.0.1",), common_name="vk-fargate-webhook")
    (tmp_path / "tls.crt").write_bytes(cert)
    (tmp_path / "tls.key").write_bytes(key)
    env.update(
        {
            "VK_FARGATE_KUBECONFIG": str(kubeconfig),
            "VK_FARGATE_NAMESPACE": NAMESPACE,
            "VK_FARGATE_LEADER_ELECT": "true",
            "VK_FARGATE_WEBHOOK_REGISTER": register["value"],
            "VK_FARGATE_WEBHOOK_TLS_CERT_FILE": str(tmp_path / "tls.crt"),
            "VK_FARGATE_WEBHOOK_TLS_KEY_FILE": str(tmp_path / "tls.key"),
        }
    )
    loopback = [_on_loopback(d, env["VK_FARGATE_WEBHOOK_URL"], cert) for d in configurations]
    _kubectl(local, "create", "-f", "-", stdin=yaml.safe_dump_all(loopback))
    provider = devprovider.Provider(env, tmp_path / "provider.log")
    api = await client.connect(local.kubeconfig)
    try:
        await provider.start()
        profile = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "vk_fargate.cli",
                "profile",
                "--kubeconfig",
                str(local.kubeconfig),
                "create",
                "--name",
                "fargate",
                "--namespace",
                "fargate-workload",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert profile.returncode == 0 and "[✔]" in profile.stdout, profile.stdout + profile.stderr
        _kubectl(local, "apply", "-f", str(ROOT / "examples" / "namespace.yaml"))
        core = k8s.CoreV1Api(api)

        async def default_sa() -> bool:
            accounts = await core.list_namespaced_service_account("fargate-workload")
            return any(sa.metadata.name == "default" for sa in accounts.items)

        await waiting.until(default_sa, what="the default ServiceAccount")
        _kubectl(
            local,
            "apply",
            "-f",
            str(ROOT / "examples" / "simple-web.yaml"),
            "-f",
            str(ROOT / "examples" / "privileged.yaml"),
        )

        async def running() -> k8s.V1Pod | None:
            pods = (
                await core.list_namespaced_pod(
                    "fargate-workload", label_selector="app=simple-nginx-app"
                )
            ).items
            return pods[0] if pods and pods[0].status.phase == "Running" else None

        pod = await waiting.until(running, timeout=90, what="simple-web Running")
        assert pod.spec.scheduler_name == "fargate-scheduler"
        assert pod.metadata.annotations["CapacityProvisioned"] == "0.25vCPU 0.5GB"
        assert pod.spec.node_name.startswith("fargate-ip-")
        logs = _kubectl(local, "-n", "fargate-workload", "logs", pod.metadata.name)
        assert isinstance(logs, str)

        async def refused() -> bool:
            events = await core.list_namespaced_event(
                "fargate-workload", field_selector="involvedObject.name=privileged"
            )
            return any(e.reason == "FailedScheduling" for e in events.items)

        await waiting.until(refused, what="the privileged pod refused")
        lease = await k8s.CoordinationV1Api(api).read_namespaced_lease(
            "vk-fargate-leader", NAMESPACE
        )
        assert lease.spec.holder_identity
        await core.delete_namespace("fargate-workload")

        async def node_gone() -> bool:
            return not [
                n for n in (await core.list_node()).items if n.metadata.name == pod.spec.node_name
            ]

        await waiting.until(node_gone, timeout=90, what="the node removed with its pod")
    finally:
        await api.close()
        provider.stop()
        fleet.stop()
    # An RBAC refusal names the user; a namespace being deleted refuses events too, fairly.
    refusals = [
        line
        for line in provider.log.read_text().splitlines()
        if 'forbidden: User "system:serviceaccount:' in line
    ]
    assert not refusals, refusals[:5]
