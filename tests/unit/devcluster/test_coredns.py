"""CoreDNS on the local stack: the pinned version, its build's cache and the manifests
`dev up` applies, checked against each other and against what EKS deploys."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from vk_fargate import errors, settings
from vk_fargate.devcluster import binaries, clusterdns, coredns, images
from vk_fargate.fargate import profiles

GO_MOD = Path(__file__).resolve().parents[3] / "hack" / "coredns" / "go.mod"


def _documents(path: Path) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in yaml.safe_load_all(path.read_text())}


def test_version_agrees_with_the_go_wrapper_module() -> None:
    assert re.search(
        rf"^\tgithub\.com/coredns/coredns {coredns.VERSION}( // indirect)?$",
        GO_MOD.read_text(),
        re.M,
    )
    assert re.search(r"^tool github\.com/coredns/coredns$", GO_MOD.read_text(), re.M)


def test_the_binary_is_cached_by_version(tmp_path: Path) -> None:
    assert coredns.default_dir(tmp_path) == tmp_path / "coredns" / coredns.VERSION
    assert coredns.binary(tmp_path) is None
    assert images.wanted(tmp_path) == images.IMAGES
    built = coredns.default_dir(tmp_path) / "coredns"
    built.parent.mkdir(parents=True)
    built.write_text("#!/bin/sh\n")
    built.chmod(0o755)
    assert coredns.binary(tmp_path) == built
    assert [i.key for i in images.wanted(tmp_path)][-1] == f"coredns-{coredns.VERSION}"


def test_build_without_go_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(binaries, "go_available", lambda: False)
    config = settings.Settings(cache=tmp_path / "cache")
    with pytest.raises(errors.BinariesError, match="Go is not installed") as caught:
        coredns.build(config, log=tmp_path / "build.log")
    assert caught.value.step == f"build CoreDNS {coredns.VERSION}"


def test_the_image_is_upstreams_shape_under_upstreams_name() -> None:
    image = images.CORE_DNS
    assert (image.entrypoint, image.cmd) == (("/coredns",), ())
    assert set(image.ports) == {"53/tcp", "53/udp"}
    assert f"registry.k8s.io/{image.path}:{image.tag}" == coredns.IMAGE


def test_the_deployment_is_eks_coredns_on_the_local_image() -> None:
    deployment = _documents(clusterdns.COREDNS)["Deployment"]
    assert deployment["spec"]["replicas"] == 2
    template = deployment["spec"]["template"]
    assert template["metadata"]["labels"] == {
        "k8s-app": "kube-dns",
        "eks.amazonaws.com/component": "coredns",
    }
    spec = template["spec"]
    assert spec["dnsPolicy"] == "Default"  # CoreDNS must not ask itself
    assert spec["serviceAccountName"] == "coredns"
    [container] = spec["containers"]
    assert container["image"] == coredns.IMAGE
    assert container["args"] == ["-conf", "/etc/coredns/Corefile"]
    assert container["resources"] == {
        "limits": {"memory": "170Mi"},
        "requests": {"cpu": "100m", "memory": "70Mi"},
    }
    assert container["readinessProbe"]["httpGet"]["port"] == 8181
    assert container["livenessProbe"]["httpGet"]["port"] == 8080


def test_the_corefile_is_the_standard_one() -> None:
    corefile = _documents(clusterdns.COREDNS)["ConfigMap"]["data"]["Corefile"]
    words = corefile.split()
    for plugin in ("errors", "health", "ready", "kubernetes", "prometheus", "forward", "cache"):
        assert plugin in words, plugin
    assert "forward . /etc/resolv.conf" in corefile
    assert "kubernetes cluster.local in-addr.arpa ip6.arpa {" in corefile


def test_kube_dns_is_the_tenth_address_of_the_service_cidr() -> None:
    service = _documents(clusterdns.COREDNS)["Service"]
    assert clusterdns.service_ip() == "10.96.0.10"
    assert service["spec"]["clusterIP"] == clusterdns.service_ip()
    assert service["spec"]["selector"] == {"k8s-app": "kube-dns"}
    ports = {(p["name"], p["port"], p["protocol"]) for p in service["spec"]["ports"]}
    assert ports == {("dns", 53, "UDP"), ("dns-tcp", 53, "TCP"), ("metrics", 9153, "TCP")}


def test_the_cluster_role_lets_the_kubernetes_plugin_watch_what_it_needs() -> None:
    role = _documents(clusterdns.COREDNS)["ClusterRole"]
    granted = {
        (group, resource)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        if {"list", "watch"} <= set(rule["verbs"])
    }
    assert granted >= {
        ("", "endpoints"),
        ("", "services"),
        ("", "pods"),
        ("", "namespaces"),
        ("discovery.k8s.io", "endpointslices"),
    }


def test_the_profile_takes_the_deployments_pods_and_no_other_kube_system_pod() -> None:
    document = _documents(clusterdns.PROFILE)["FargateProfile"]
    assert document["metadata"]["name"] == clusterdns.PROFILE_NAME
    profile = profiles.Profile(name=document["metadata"]["name"], **document["spec"])
    labels = _documents(clusterdns.COREDNS)["Deployment"]["spec"]["template"]["metadata"]
    assert profiles.matches(profile, "kube-system", labels["labels"])
    assert not profiles.matches(profile, "kube-system", {"k8s-app": "kube-proxy"})
    assert not profiles.matches(profile, "default", labels["labels"])


def test_summary_says_phase_readiness_and_node() -> None:
    pod = {
        "metadata": {"name": "coredns-1"},
        "spec": {"nodeName": "fargate-ip-10-0-0-4"},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }
    assert clusterdns.summary(pod) == {
        "name": "coredns-1",
        "phase": "Running",
        "ready": True,
        "node": "fargate-ip-10-0-0-4",
    }
    assert clusterdns.summary({"metadata": {"name": "p"}})["ready"] is False
