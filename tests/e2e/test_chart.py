"""The Helm chart (helm/vk-fargate) and the Dockerfile, checked with helm built from the
Go module proxy (hack/helm/build.sh) against the session's real API server.

- hack/check-chart.sh passes: hadolint, `helm lint`, and a server-side dry run of every
  rendered object (so the API server accepts the Deployment, RBAC, Services, webhook
  configurations as rendered);
- the chart owns the webhook configurations (self-signed default and cert-manager):
  `helm install` creates them with the Secret's certificate as CA bundle, an upgrade
  keeps it, `helm uninstall` removes them;
- the RBAC is least privilege: the rendered rules are pinned grant by grant, and a real
  `vk-fargate run` authenticated as the chart's ServiceAccount (token from the
  TokenRequest API, nothing else), in the mode where the provider registers the webhooks
  (webhook.tls.existingSecret), replaces stale webhook configurations, takes the leader
  Lease, schedules a pod with env from a ConfigMap and a Secret, renews its node Lease,
  serves `kubectl logs` and the kubelet API (TokenReview, SubjectAccessReview), warns
  about a budget, reconciles a FargateProfile, evicts the pod when its host drains and
  removes its node and Lease, with no request refused;
- the Deployment sets every provider setting but two (in-cluster credentials, the webhook
  Service), wired as the README says; the CRD is the package's; the chart's webhook
  configurations (self-signed and cert-manager) are registration.py's; the profiles
  ConfigMap loads as the provider's;
- the fleet is reached over TLS by default (a private CA from fleet.caBundle, mounted
  where VK_FARGATE_FLEET_CA_FILE points), and plain HTTP beyond loopback without
  fleet.insecure fails to render, as the provider's settings would refuse it.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import shutil
import ssl
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from kubernetes_asyncio import client as k8s

from tests import kubectl as kubectl_cli
from tests import waiting
from vk_fargate import app, errors, pki, settings
from vk_fargate.admission import registration
from vk_fargate.aws import session as aws_session
from vk_fargate.devcluster import binaries, cluster, processes
from vk_fargate.devcluster import fleet as devfleet
from vk_fargate.devcluster import provider as devprovider
from vk_fargate.fleet import client as fleet_api
from vk_fargate.fleet import models
from vk_fargate.k8s import kube, webhooks
from vk_fargate.k8s import profiles as k8s_profiles
from vk_fargate.kubelet import tls

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "vk-fargate"
NAMESPACE = "vk-fargate"  # the release namespace for rendering
# The one mode in which the provider registers the webhooks (VK_FARGATE_WEBHOOK_REGISTER):
# a serving certificate of the user's, whose CA the chart cannot know.
REGISTERING = ("--set", "webhook.tls.existingSecret=webhook-tls")
RBAC_TEMPLATES = (
    "templates/serviceaccount.yaml",
    "templates/clusterrole.yaml",
    "templates/role-node-leases.yaml",
    "templates/role-leader-election.yaml",
)
# Settings the chart leaves at their defaults: in-cluster credentials, and the webhook
# Service rather than a URL. Every other ProviderSettings field is set from values, so a
# new setting fails test_the_deployment_sets_every_setting_wired_as_documented until the
# chart maps it.
UNSET_SETTINGS = {"kubeconfig", "webhook_url"}

Grant = tuple[str, str, str, str]  # (API group, resource, resource name or "", verb)

# What `vk-fargate run` requests, per vk_fargate/k8s/*.py and their callers.
PROVIDER: dict[tuple[str, str], str] = {
    ("", "pods"): "create delete list patch watch",
    ("", "pods/status"): "patch",
    ("", "pods/binding"): "create",
    ("", "pods/eviction"): "create",
    ("", "nodes"): "create delete get list watch",
    ("", "nodes/status"): "patch",
    ("", "events"): "create patch",
    ("", "configmaps"): "get",
    ("", "secrets"): "get",
    ("", "services"): "list watch",
    ("", "serviceaccounts/token"): "create",
    ("discovery.k8s.io", "endpointslices"): "list watch",
    ("networking.k8s.io", "servicecidrs"): "list watch",
    ("policy", "poddisruptionbudgets"): "list",
    ("fargate.vk-fargate.io", "fargateprofiles"): "list patch watch",
    ("fargate.vk-fargate.io", "fargateprofiles/status"): "patch",
    ("authentication.k8s.io", "tokenreviews"): "create",
    ("authorization.k8s.io", "subjectaccessreviews"): "create",
}
WEBHOOK_REGISTRATION = {
    ("admissionregistration.k8s.io", kind, name, verb)
    for kind in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations")
    for name, verb in (("", "create"), (registration.NAME, "get"), (registration.NAME, "update"))
}
CRD_INSTALL = {
    ("apiextensions.k8s.io", "customresourcedefinitions", "", "create"),
    (
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        k8s_profiles.crd()["metadata"]["name"],
        "get",
    ),
}
NODE_LEASES = {
    ("coordination.k8s.io", "leases", "", v) for v in ("create", "delete", "get", "patch")
}
LEADER_LEASE = {
    ("coordination.k8s.io", "leases", "", "create"),
    ("coordination.k8s.io", "leases", "vk-fargate-leader", "get"),
    ("coordination.k8s.io", "leases", "vk-fargate-leader", "update"),
}


def flat(table: dict[tuple[str, str], str]) -> set[Grant]:
    return {(g, r, "", v) for (g, r), verbs in table.items() for v in verbs.split()}


def grants(rules: Iterable[dict[str, Any]]) -> set[Grant]:
    """Every (group, resource, name, verb) the rules allow; a rule without names: ""."""
    return {
        (group, resource, name, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for name in rule.get("resourceNames") or [""]
        for verb in rule["verbs"]
    }


@pytest.fixture(scope="session")
def helm() -> Path:
    """helm from hack/helm/build.sh (cached per machine; a cold build takes ~2 min)."""
    cached = _helm_cache()
    if not cached.exists() and shutil.which("go") is None:
        if os.environ.get("VK_FARGATE_REQUIRE_E2E") == "1":
            pytest.fail(f"Go is needed to build helm into {cached} (hack/helm/build.sh)")
        pytest.skip(f"helm cannot be built: Go is missing and {cached} does not exist")
    done = subprocess.run(
        ["bash", str(ROOT / "hack" / "helm" / "build.sh")],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert done.returncode == 0, f"hack/helm/build.sh failed:\n{done.stderr[-3000:]}"
    return Path(done.stdout.strip().splitlines()[-1])


def _helm_cache() -> Path:
    go_mod = (ROOT / "hack" / "helm" / "go.mod").read_text().split()
    version = go_mod[go_mod.index("helm.sh/helm/v3") + 1]
    return settings.load().cache / "helm" / version / "helm"


def render(helm: Path, *args: str, namespace: str = NAMESPACE, release: str = "vk-fargate") -> str:
    done = subprocess.run(
        [str(helm), "template", release, str(CHART), "--namespace", namespace, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    [found] = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    return found


kubectl = kubectl_cli.run


# --- hack/check-chart.sh against a fresh API server ---------------------------------------


async def test_check_chart_script_passes(
    helm: Path, control_plane_binaries: binaries.Binaries
) -> None:
    # A cluster of its own: the session's may hold a provider-registered "vk-fargate"
    # webhook configuration, which a dry-run apply would patch instead of create.
    async with cluster.Cluster(control_plane_binaries) as own:
        _check_chart(helm, own)


def _check_chart(helm: Path, local_cluster: cluster.Cluster) -> None:
    env = {
        **os.environ,
        "KUBECONFIG": str(local_cluster.kubeconfig),
        "HELM": str(helm),
        "KUBECTL": str(binaries.kubectl_path()),
    }
    done = subprocess.run(
        ["bash", str(ROOT / "hack" / "check-chart.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert "check-chart: all checks passed" in done.stderr
    assert "created (server dry run)" in done.stdout
    leftovers = kubectl(local_cluster.kubeconfig, "get", "namespaces", "-o", "name")
    assert "vk-fargate-chart-" not in leftovers


# --- helm install, upgrade, uninstall: the release owns its webhook configurations ------


async def test_helm_uninstall_removes_the_webhook_configurations(
    helm: Path, control_plane_binaries: binaries.Binaries, tmp_path: Path
) -> None:
    # A cluster of its own: the release's configurations have the provider's fixed name.
    # The Deployment never becomes ready here (no image, no nodes): nothing waits for it.
    async with cluster.Cluster(control_plane_binaries) as own:
        _install_upgrade_uninstall(helm, own, tmp_path)


def _install_upgrade_uninstall(helm: Path, local: cluster.Cluster, tmp: Path) -> None:
    env = {
        **os.environ,
        "KUBECONFIG": str(local.kubeconfig),
        "HELM_CACHE_HOME": str(tmp / "helm-cache"),
        "HELM_CONFIG_HOME": str(tmp / "helm-config"),
        "HELM_DATA_HOME": str(tmp / "helm-data"),
    }

    def run_helm(*args: str) -> str:
        done = subprocess.run(
            [str(helm), *args, "--namespace", NAMESPACE],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, f"helm {' '.join(args)}: {done.stderr}"
        return done.stdout

    kinds = "mutatingwebhookconfiguration,validatingwebhookconfiguration"

    def registered() -> tuple[str, dict[str, str]]:
        """The Secret's tls.crt, and each configuration's kind: its one caBundle."""
        secret = json.loads(
            kubectl(local.kubeconfig, "-n", NAMESPACE, "get", "secret", "-o", "json", tls_secret)
        )
        listed = json.loads(kubectl(local.kubeconfig, "get", kinds, "-o", "json"))["items"]
        bundles = {}
        for item in listed:
            assert item["metadata"]["name"] == "vk-fargate"
            assert item["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
            assert item["metadata"]["annotations"]["meta.helm.sh/release-name"] == "vk-fargate"
            [bundle] = {hook["clientConfig"]["caBundle"] for hook in item["webhooks"]}
            bundles[item["kind"]] = bundle
        return secret["data"]["tls.crt"], bundles

    tls_secret = "vk-fargate-webhook-tls"
    values = ("--set", "fleet.token.value=unused")
    notes = run_helm("install", "vk-fargate", str(CHART), "--create-namespace", *values)
    assert "`helm uninstall` removes them" in notes
    cert, bundles = registered()
    assert bundles == {registration.MUTATING: cert, registration.VALIDATING: cert}
    assert base64.b64decode(cert).startswith(b"-----BEGIN CERTIFICATE-----")

    # An upgrade looks the Secret up: the same certificate, the same CA bundle.
    run_helm("upgrade", "vk-fargate", str(CHART), *values, "--set", "workers=8")
    assert registered() == (cert, bundles)

    run_helm("uninstall", "vk-fargate")
    assert kubectl(local.kubeconfig, "get", kinds, "-o", "name") == ""
    assert (
        kubectl(
            local.kubeconfig, "-n", NAMESPACE, "get", "secret", tls_secret, "--ignore-not-found"
        )
        == ""
    )


# --- the rendered objects -------------------------------------------------------------


def test_the_cluster_role_grants_exactly_what_the_provider_requests(helm: Path) -> None:
    docs = documents(render(helm))
    role = one(docs, "ClusterRole")
    assert grants(role["rules"]) == flat(PROVIDER)  # the chart registers the webhooks
    binding = one(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "vk-fargate", "namespace": NAMESPACE}
    ]

    node_leases = one(docs, "Role", "vk-fargate-node-leases")
    assert node_leases["metadata"]["namespace"] == "kube-node-lease"
    assert grants(node_leases["rules"]) == NODE_LEASES
    leader = one(docs, "Role", "vk-fargate-leader-election")
    assert leader["metadata"]["namespace"] == NAMESPACE
    assert grants(leader["rules"]) == LEADER_LEASE
    for role_binding in (d for d in docs if d["kind"] == "RoleBinding"):
        assert role_binding["subjects"][0]["name"] == "vk-fargate"


def test_rbac_follows_what_the_provider_is_set_to_do(helm: Path) -> None:
    # A Secret of the user's: the provider registers the webhooks (create; get and update
    # of its fixed name only).
    docs = documents(render(helm, *REGISTERING))
    assert grants(one(docs, "ClusterRole")["rules"]) == flat(PROVIDER) | WEBHOOK_REGISTRATION
    # cert-manager (which wins over existingSecret): the chart registers the webhooks, the
    # provider may not touch them.
    for args in (
        ("--set", "webhook.certManager.enabled=true"),
        ("--set", "webhook.certManager.enabled=true", *REGISTERING),
    ):
        docs = documents(render(helm, *args))
        assert grants(one(docs, "ClusterRole")["rules"]) == flat(PROVIDER), args
    # The provider installs the CRD: create, and get of that one CRD only.
    docs = documents(render(helm, "--set", "installCRD=true"))
    assert grants(one(docs, "ClusterRole")["rules"]) == flat(PROVIDER) | CRD_INSTALL
    # One replica without leader election: no Lease in the release namespace, no budget.
    docs = documents(
        render(helm, "--set", "replicaCount=1", "--set", "leaderElection.enabled=false")
    )
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "Role"] == [
        "vk-fargate-node-leases"
    ]
    assert not [d for d in docs if d["kind"] == "PodDisruptionBudget"]


def test_several_replicas_without_leader_election_are_refused(helm: Path) -> None:
    done = subprocess.run(
        [str(helm), "template", "x", str(CHART), "--set", "leaderElection.enabled=false"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "needs leaderElection.enabled" in done.stderr


def _env(deployment: dict[str, Any]) -> dict[str, Any]:
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_the_deployment_sets_every_setting_wired_as_documented(helm: Path, tmp_path: Path) -> None:
    docs = documents(
        render(
            helm,
            "--set-file",
            f"fleet.caBundle={fleet_ca_file(tmp_path)}",
            "--set",
            "aws.enabled=true",
            "--set",
            "aws.endpointUrl=http://aws.local",
            "--set",
            "kubelet.tls.existingSecret=kubelet-tls",
            "--set-json",
            'profiles=[{"name":"fargate","selectors":[{"namespace":"fargate-workload"}]}]',
        )
    )
    deployment = one(docs, "Deployment")
    env = _env(deployment)
    aws = {n.removeprefix("VK_FARGATE_AWS_").lower() for n in env if "_AWS_" in n}
    provider = {
        n.removeprefix("VK_FARGATE_").lower()
        for n in env
        if n.startswith("VK_FARGATE_") and "_AWS_" not in n
    }
    assert provider == set(settings.ProviderSettings.model_fields) - UNSET_SETTINGS
    assert aws <= set(aws_session.AwsSettings.model_fields)
    assert aws == {"enabled", "region", "endpoint_url"}
    assert env["VK_FARGATE_KUBELET_ADVERTISE_ADDRESS"] == {
        "fieldRef": {"fieldPath": "status.podIP"}
    }
    assert env["VK_FARGATE_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["VK_FARGATE_WEBHOOK_SERVICE"] == f"{NAMESPACE}/vk-fargate-webhook"
    assert env["VK_FARGATE_WEBHOOK_REGISTER"] == "false"  # the chart registers them
    assert env["VK_FARGATE_LEADER_ELECT"] == "true"
    assert env["VK_FARGATE_INSTALL_CRD"] == "false"  # crds/ installs it
    assert env["VK_FARGATE_AWS_ENDPOINT_URL"] == "http://aws.local"
    assert deployment["spec"]["replicas"] == 2

    spec = deployment["spec"]["template"]["spec"]
    [container] = spec["containers"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 10001
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    for variable in (
        "VK_FARGATE_FLEET_TOKEN_FILE",
        "VK_FARGATE_FLEET_CA_FILE",
        "VK_FARGATE_PROFILES_FILE",
        "VK_FARGATE_KUBELET_CLIENT_CA_FILE",
        "VK_FARGATE_KUBELET_TLS_CERT_FILE",
        "VK_FARGATE_WEBHOOK_TLS_CERT_FILE",
    ):
        assert str(Path(env[variable]).parent) in mounts, variable
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"kubelet": 10250, "webhook": 9443, "metrics": 8080}
    assert container["livenessProbe"]["httpGet"] == {
        "path": "/healthz",
        "port": "kubelet",
        "scheme": "HTTPS",
    }
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"

    webhook = one(docs, "Service", "vk-fargate-webhook")
    assert webhook["spec"]["ports"] == [
        {"name": "https-webhook", "port": 443, "targetPort": "webhook", "protocol": "TCP"}
    ]
    assert registration.ServiceTarget(NAMESPACE, "vk-fargate-webhook").port == 443
    kubelet = one(docs, "Service", "vk-fargate-kubelet")
    assert kubelet["spec"]["ports"][0]["port"] == 10250
    budget = one(docs, "PodDisruptionBudget")
    assert budget["spec"]["minAvailable"] == 1
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert budget["spec"]["selector"]["matchLabels"] == selector
    assert webhook["spec"]["selector"] == selector


def fleet_ca_file(tmp_path: Path) -> Path:
    path = tmp_path / "fleet-ca.crt"
    path.write_bytes(pki.new_ca("fleet-ca").cert)
    return path


def refused(helm: Path, *args: str) -> str:
    """helm template's error for values the chart must refuse."""
    done = subprocess.run(
        [str(helm), "template", "x", str(CHART), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0, args
    return done.stderr


def _fleet_settings(docs: list[dict[str, Any]]) -> settings.ProviderSettings:
    """The provider's settings from the rendered fleet variables (refused as it would)."""
    env = _env(one(docs, "Deployment"))
    fleet = {n.removeprefix("VK_FARGATE_").lower(): v for n, v in env.items() if "_FLEET_" in n}
    return settings.ProviderSettings.model_validate(fleet)


def test_the_fleet_is_reached_over_tls_by_default(helm: Path, tmp_path: Path) -> None:
    docs = documents(render(helm))
    env = _env(one(docs, "Deployment"))
    assert env["VK_FARGATE_FLEET_URL"].startswith("https://")
    assert env["VK_FARGATE_FLEET_INSECURE"] == "false"
    assert "VK_FARGATE_FLEET_CA_FILE" not in env  # the image's system CAs
    assert not [d for d in docs if d["metadata"]["name"].endswith("-fleet-ca")]
    assert _fleet_settings(docs).fleet_ca_file is None

    # A private CA: in a ConfigMap, mounted where VK_FARGATE_FLEET_CA_FILE points.
    bundle = fleet_ca_file(tmp_path)
    docs = documents(render(helm, "--set-file", f"fleet.caBundle={bundle}"))
    deployment = one(docs, "Deployment")
    ca_file = Path(_env(deployment)["VK_FARGATE_FLEET_CA_FILE"])
    spec = deployment["spec"]["template"]["spec"]
    [mount] = [m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "fleet-ca"]
    assert mount["mountPath"] == str(ca_file.parent) and mount["readOnly"] is True
    [volume] = [v for v in spec["volumes"] if v["name"] == "fleet-ca"]
    config_map = one(docs, "ConfigMap", volume["configMap"]["name"])
    assert config_map["data"][ca_file.name].strip() == bundle.read_text().strip()
    assert "checksum/fleet-ca" in deployment["spec"]["template"]["metadata"]["annotations"]
    mounted = tmp_path / "mounted.crt"
    mounted.write_text(config_map["data"][ca_file.name])
    fleet_api.trusting(mounted)  # loads as the provider loads it
    assert _fleet_settings(docs).fleet_ca_file == ca_file


def test_plain_http_to_the_fleet_is_refused_unless_on_loopback_or_insecure(helm: Path) -> None:
    message = refused(helm, "--set", "fleet.url=http://fleetd.vk-fargate.svc:8400")
    assert "without TLS" in message and "fleet.insecure=true" in message
    insecure = (
        "--set",
        "fleet.url=http://fleetd.vk-fargate.svc:8400",
        "--set",
        "fleet.insecure=true",
    )
    docs = documents(render(helm, *insecure))
    assert _env(one(docs, "Deployment"))["VK_FARGATE_FLEET_INSECURE"] == "true"
    assert _fleet_settings(docs).fleet_insecure is True
    for url in ("http://127.0.0.1:8400", "http://localhost:8400", "http://[::1]:8400"):
        assert _fleet_settings(documents(render(helm, "--set", f"fleet.url={url}")))
    assert "without TLS" in refused(helm, "--set", "fleet.url=http://127.evil.example:8400")


def test_unusable_fleet_values_are_refused(helm: Path, tmp_path: Path) -> None:
    bundle = f"fleet.caBundle={fleet_ca_file(tmp_path)}"
    for url in ("fleetd:8400", "ftp://fleetd:8400", "https://"):
        assert "fleet.url must be https://HOST[:PORT]" in refused(helm, "--set", f"fleet.url={url}")
    assert "must be PEM certificates" in refused(helm, "--set", "fleet.caBundle=not-a-pem")
    message = refused(helm, "--set-file", bundle, "--set", "fleet.url=http://127.0.0.1:8400")
    assert "fleet.caBundle is set but fleet.url" in message


def test_the_profiles_config_map_loads_as_the_provider_loads_it(helm: Path, tmp_path: Path) -> None:
    profile = {
        "name": "fargate",
        "podExecutionRoleARN": "arn:aws:iam::111122223333:role/pods",
        "subnets": ["subnet-private1"],
        "selectors": [{"namespace": "fargate-workload", "labels": {"tier": "web"}}],
    }
    docs = documents(render(helm, "--set-json", f"profiles=[{json.dumps(profile)}]"))
    path = tmp_path / "profiles.yaml"
    path.write_text(one(docs, "ConfigMap")["data"]["profiles.yaml"])
    [loaded] = app.load_profiles(path)
    assert loaded.name == "fargate"
    assert loaded.selectors[0].labels == {"tier": "web"}
    assert loaded.pod_execution_role_arn == profile["podExecutionRoleARN"]


def test_the_chart_crd_is_the_package_crd() -> None:
    chart_crd = yaml.safe_load((CHART / "crds" / "fargateprofiles.yaml").read_text())
    assert chart_crd == k8s_profiles.crd()


def _expected_configurations(ca_bundle: bytes) -> list[dict[str, Any]]:
    return registration.documents(
        target=registration.ServiceTarget(NAMESPACE, "vk-fargate-webhook"),
        ca_bundle=ca_bundle,
        provider_namespace=NAMESPACE,
        name="vk-fargate",
    )


def test_self_signed_webhook_configurations_are_registration_py(helm: Path) -> None:
    docs = documents(render(helm))
    env = _env(one(docs, "Deployment"))
    assert env["VK_FARGATE_WEBHOOK_REGISTER"] == "false"
    secret = one(docs, "Secret", "vk-fargate-webhook-tls")
    assert secret["type"] == "kubernetes.io/tls"
    cert = base64.b64decode(secret["data"]["tls.crt"])
    assert cert.startswith(b"-----BEGIN CERTIFICATE-----")
    # The mounted Secret is the one whose certificate the API server trusts.
    volumes = one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
    [webhook_tls] = [v for v in volumes if v["name"] == "webhook-tls"]
    assert webhook_tls["secret"]["secretName"] == "vk-fargate-webhook-tls"
    for want in _expected_configurations(cert):
        got = one(docs, want["kind"])
        assert "annotations" not in got["metadata"]
        assert got["metadata"]["name"] == want["metadata"]["name"]
        assert got["webhooks"] == want["webhooks"]  # caBundle included: the Secret's cert
    # Another rendering makes another certificate, in the Secret and both configurations.
    again = documents(render(helm))
    bundles = {
        hook["clientConfig"]["caBundle"]
        for kind in (registration.MUTATING, registration.VALIDATING)
        for hook in one(again, kind)["webhooks"]
    }
    assert bundles == {one(again, "Secret", "vk-fargate-webhook-tls")["data"]["tls.crt"]}
    assert bundles != {secret["data"]["tls.crt"]}


def test_with_an_existing_secret_the_provider_registers_the_webhooks(helm: Path) -> None:
    docs = documents(render(helm, *REGISTERING))
    env = _env(one(docs, "Deployment"))
    assert env["VK_FARGATE_WEBHOOK_REGISTER"] == "true"
    kinds = {d["kind"] for d in docs}
    assert not kinds & {registration.MUTATING, registration.VALIDATING}
    assert "Secret" not in kinds  # no fleet token value, no generated certificate
    volumes = one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
    [webhook_tls] = [v for v in volumes if v["name"] == "webhook-tls"]
    assert webhook_tls["secret"]["secretName"] == "webhook-tls"


def test_cert_manager_webhook_configurations_are_registration_py(helm: Path) -> None:
    docs = documents(render(helm, "--set", "webhook.certManager.enabled=true"))
    env = _env(one(docs, "Deployment"))
    assert env["VK_FARGATE_WEBHOOK_REGISTER"] == "false"
    certificate = one(docs, "Certificate", "vk-fargate-webhook")
    assert certificate["spec"]["secretName"] == "vk-fargate-webhook-tls"
    assert certificate["spec"]["dnsNames"] == [
        "vk-fargate-webhook.vk-fargate.svc",
        "vk-fargate-webhook.vk-fargate.svc.cluster.local",
    ]
    assert not [d for d in docs if d["kind"] == "Secret"]  # cert-manager writes it
    for want in _expected_configurations(b""):
        got = one(docs, want["kind"])
        assert got["metadata"]["annotations"] == {
            "cert-manager.io/inject-ca-from": f"{NAMESPACE}/vk-fargate-webhook"
        }
        for hook in want["webhooks"]:
            del hook["clientConfig"]["caBundle"]  # cert-manager injects it
        assert got["webhooks"] == want["webhooks"]
        assert got["metadata"]["name"] == want["metadata"]["name"]


# --- a real provider with exactly the chart's RBAC ----------------------------------------


@contextlib.asynccontextmanager
async def _webhook_configurations_restored(api: kube.Kube) -> AsyncIterator[None]:
    """The provider registers `vk-fargate` (a fixed name): put back what was there."""
    before = {
        kind: await webhooks.get(api, kind, registration.NAME)
        for kind in (registration.MUTATING, registration.VALIDATING)
    }
    try:
        yield
    finally:
        for kind, document in before.items():
            if document is None:
                await webhooks.delete(api, kind, registration.NAME)
            else:
                meta = document["metadata"]
                document["metadata"] = {k: meta[k] for k in ("name", "labels") if k in meta}
                await webhooks.apply(api, document)


@contextlib.contextmanager
def _applied(kubeconfig: Path, manifest: str) -> Iterator[None]:
    kubectl(kubeconfig, "apply", "-f", "-", stdin=manifest)
    try:
        yield
    finally:
        kubectl(
            kubeconfig, "delete", "--ignore-not-found", "--wait=false", "-f", "-", stdin=manifest
        )


def _pod(name: str, scheduler: str) -> dict[str, Any]:
    script = 'echo "env: $FROM_MAP $FROM_SECRET"; while :; do sleep 1; done'
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "schedulerName": scheduler,
            "terminationGracePeriodSeconds": 1,
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "app",
                    "image": "busybox",
                    "command": ["sh", "-c", script],
                    "env": [
                        {
                            "name": "FROM_MAP",
                            "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "a"}},
                        },
                        {
                            "name": "FROM_SECRET",
                            "valueFrom": {"secretKeyRef": {"name": "secret", "key": "b"}},
                        },
                    ],
                }
            ],
        },
    }


@dataclasses.dataclass
class Scenario:
    """A release of the chart's RBAC, and the provider that runs as its ServiceAccount."""

    local: cluster.Cluster
    raw: kube.Kube
    core: k8s.CoreV1Api
    release: str
    tmp: Path

    @property
    def admin(self) -> Path:
        return self.local.kubeconfig

    @property
    def ns(self) -> str:  # the release namespace: ServiceAccount, leader Lease
        return self.release

    @property
    def workload(self) -> str:  # a namespace the provider's profile serves
        return f"{self.release}-pods"

    @property
    def scheduler(self) -> str:
        return f"{self.release}-scheduler"


async def test_a_provider_runs_with_nothing_but_the_charts_rbac(
    helm: Path,
    local_cluster: cluster.Cluster,
    api: k8s.ApiClient,
    fleet: devfleet.Fleet,
    tmp_path: Path,
) -> None:
    it = Scenario(
        local_cluster, kube.Kube(api), k8s.CoreV1Api(api), f"rbac-{uuid.uuid4().hex[:6]}", tmp_path
    )
    # The mode in which the provider registers the webhooks, so needs the RBAC for it.
    rbac = render(
        helm,
        *REGISTERING,
        *[arg for template in RBAC_TEMPLATES for arg in ("--show-only", template)],
        namespace=it.ns,
        release=it.release,
    )
    sa = one(documents(rbac), "ServiceAccount")["metadata"]["name"]
    crd = k8s_profiles.crd()["metadata"]["name"]
    try:
        had_crd = bool(await it.raw.get(f"{k8s_profiles.CRD_PATH}/{crd}"))
    except errors.KubeError as exc:
        if not exc.not_found:
            raise
        had_crd = False
    if not had_crd:
        kubectl(it.admin, "create", "-f", str(CHART / "crds"))
        kubectl(it.admin, "wait", "--for", "condition=Established", f"crd/{crd}")
    for name in (it.ns, it.workload):
        kubectl(it.admin, "create", "namespace", name)
        await _default_service_account(it.core, name)
    try:
        async with _webhook_configurations_restored(it.raw):
            with _applied(it.admin, rbac):
                await _run_provider_as(it, sa, fleet)
    finally:
        profile = f"{it.release}-profile"  # a failed run may leave it with its finalizer
        with contextlib.suppress(errors.KubeError):
            await it.raw.patch(
                f"{k8s_profiles.PATH}/{profile}",
                {"metadata": {"finalizers": None}},
                kind=kube.MERGE_PATCH,
            )
            await k8s_profiles.delete(it.raw, profile)
        for name in (it.workload, it.ns):
            kubectl(it.admin, "delete", "namespace", name, "--wait=false")
        if not had_crd:
            kubectl(it.admin, "delete", "crd", crd, "--wait=true", timeout=90)


async def _default_service_account(core: k8s.CoreV1Api, namespace: str) -> None:
    """Pods (and tokens of `default`) are refused until the namespace's default exists."""

    async def exists() -> bool:
        accounts = await core.list_namespaced_service_account(namespace)
        return any(sa.metadata.name == "default" for sa in accounts.items)

    await waiting.until(exists, timeout=30, what=f"the default ServiceAccount of {namespace}")


async def _run_provider_as(it: Scenario, sa: str, fleet: devfleet.Fleet) -> None:
    token = kubectl(it.admin, "-n", it.ns, "create", "token", sa, "--duration=1h").strip()
    profiles_file = it.tmp / "profiles.yaml"
    profiles_file.write_text(
        yaml.safe_dump([{"name": it.release, "selectors": [{"namespace": it.workload}]}])
    )
    for args in (
        ("create", "configmap", "settings", "--from-literal=a=from-map"),
        ("create", "secret", "generic", "secret", "--from-literal=b=from-secret"),
        ("create", "pdb", "guards-nothing", "--selector=app=nothing", "--min-available=1"),
    ):
        kubectl(it.admin, "-n", it.workload, *args)

    port = processes.free_ports(1)[0]
    env = devprovider.environment(it.local, fleet, port=port, cluster_name=it.release)
    env.pop("KUBECONFIG", None)
    env.update(
        {
            "VK_FARGATE_KUBECONFIG": str(
                kubectl_cli.token_kubeconfig(it.admin, token, it.tmp / "sa.kubeconfig")
            ),
            "VK_FARGATE_SCHEDULER_NAME": it.scheduler,
            "VK_FARGATE_NAMESPACE": it.ns,
            "POD_NAME": f"{it.release}-0",
            "VK_FARGATE_LEADER_ELECT": "true",
            "VK_FARGATE_INSTALL_CRD": "false",
            "VK_FARGATE_PROFILES_FILE": str(profiles_file),
            "VK_FARGATE_BUDGET_CHECK_SECONDS": "1",
            "VK_FARGATE_LEASE_RENEW_SECONDS": "1",
            "VK_FARGATE_NODE_STATUS_SECONDS": "1",
        }
    )
    # Stale configurations of the fixed name, as a previous start leaves them: the provider
    # has to read and replace them (get, update), not only create.
    stale = tls.self_signed(("127.0.0.1",))[0]
    target = registration.UrlTarget("https://127.0.0.1:9")
    await registration.register(
        it.raw, registration.documents(target=target, ca_bundle=stale, provider_namespace=it.ns)
    )
    log = it.tmp / "provider.log"
    provider = devprovider.Provider(env, log)
    await provider.start()  # registering the webhook configurations is part of starting
    stored = await webhooks.get(it.raw, registration.MUTATING, registration.NAME)
    assert stored is not None
    url = stored["webhooks"][0]["clientConfig"]["url"]
    assert url == env["VK_FARGATE_WEBHOOK_URL"] + "/mutate-pods"
    try:
        await _exercise(it, provider, fleet)
    finally:
        provider.stop()
    text = log.read_text()
    # Every refusal would be a KubeError "403 Forbidden: ..." in the log (or a failed start).
    assert "Forbidden" not in text, text[-4000:]


async def _exercise(it: Scenario, provider: devprovider.Provider, fleet: devfleet.Fleet) -> None:
    raw, core, workload = it.raw, it.core, it.workload
    leader = f"/apis/coordination.k8s.io/v1/namespaces/{it.ns}/leases/vk-fargate-leader"

    async def leading() -> bool:
        with contextlib.suppress(errors.KubeError):
            lease = await raw.get(leader)
            return bool(lease["spec"].get("holderIdentity") == f"{it.release}-0")
        return False

    await waiting.until(leading, timeout=30, what="the provider to take the leader Lease")

    # A pod: placed, bound, its node and node Lease made, env from a ConfigMap and a Secret.
    await raw.create(f"/api/v1/namespaces/{workload}/pods", _pod("web", it.scheduler))

    async def running() -> k8s.V1Pod | None:
        pod = await core.read_namespaced_pod("web", workload)
        return pod if pod.status.phase == "Running" else None

    pod = await waiting.until(running, timeout=90, what="the pod Running")
    node = pod.spec.node_name
    assert (await core.read_node(node)).metadata.labels["vk-fargate.io/cluster"] == it.release
    lease = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node}"
    first = (await raw.get(lease))["spec"]["renewTime"]

    async def renewed() -> bool:
        return bool((await raw.get(lease))["spec"]["renewTime"] != first)

    await waiting.until(renewed, timeout=60, what="a node Lease renewal")

    # kubectl logs: the API server's client certificate, authorized by SubjectAccessReview.
    async def logged() -> str | None:
        out = kubectl(it.admin, "-n", workload, "logs", "web")
        return out if "env: from-map from-secret" in out else None

    await waiting.until(logged, timeout=30, what="the pod's log through the API server")

    # A bearer token: a TokenReview, then a SubjectAccessReview that says no.
    token = kubectl(it.admin, "-n", it.ns, "create", "token", "default", "--duration=10m")
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    headers = {"Authorization": f"Bearer {token.strip()}"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{provider.url}/pods", headers=headers, ssl=context) as response,
    ):
        body = await response.text()
    assert response.status == 403, body
    assert body.startswith(f"Forbidden (user=system:serviceaccount:{it.ns}:default"), body

    # A budget that selects nothing in a profile's namespace: a warning event.
    async def warned() -> bool:
        events = await core.list_namespaced_event(workload)
        return any(e.reason == "SelectsNoPods" for e in events.items)

    await waiting.until(warned, timeout=30, what="the SelectsNoPods event")

    # A FargateProfile: finalizer, CREATING, ACTIVE; deleted: DELETING, finalizer off.
    profile = f"{it.release}-profile"
    await k8s_profiles.create(raw, profile, {"selectors": [{"namespace": f"{workload}-none"}]})

    async def active() -> bool:
        got = await k8s_profiles.get(raw, profile)
        return (got.get("status") or {}).get("status") == "ACTIVE"

    await waiting.until(active, timeout=30, what="the FargateProfile ACTIVE")
    got = await k8s_profiles.get(raw, profile)
    assert k8s_profiles.FINALIZER in got["metadata"]["finalizers"]
    await k8s_profiles.delete(raw, profile)

    async def profile_gone() -> bool:
        return profile not in {p["metadata"]["name"] for p in await k8s_profiles.list_all(raw)}

    await waiting.until(profile_gone, timeout=30, what="the FargateProfile deleted")

    # Its host drains: the pod leaves through the Eviction API (no budget covers it);
    # the microVM stops; the pod, its node and its Lease go.
    async with fleet_api.FleetClient(fleet.url, fleet.token) as fleet_client:
        host = (await fleet_client.get_microvm(pod.metadata.uid)).status.host
        assert host is not None
        drain = models.HostAction(action_type="Drain", grace_seconds=600)
        await fleet_client.host_action(host, drain)
        try:

            async def evicted() -> bool:
                events = await core.list_namespaced_event(workload)
                return any(e.reason == "Evicted" for e in events.items)

            await waiting.until(evicted, timeout=60, what="the pod evicted for the drain")
        finally:
            await fleet_client.host_action(host, models.HostAction(action_type="Activate"))

    async def cleaned() -> bool:
        pods = await core.list_namespaced_pod(workload)
        nodes = await core.list_node(label_selector=f"vk-fargate.io/cluster={it.release}")
        leases = await raw.get("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases")
        names = {item["metadata"]["name"] for item in leases["items"]}
        return not pods.items and not nodes.items and node not in names

    await waiting.until(cleaned, timeout=60, what="the pod, its node and its Lease gone")
