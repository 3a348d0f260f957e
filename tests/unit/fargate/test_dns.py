"""A pod's names and resolver, worked out as the kubelet works them out."""

from __future__ import annotations

from typing import Any

import pytest

from vk_fargate.fargate import dns

CLUSTER = dns.Cluster(nameservers=("10.96.0.10",), domain="cluster.local")


def pod(name: str = "web-0", namespace: str = "shop", **spec: Any) -> dict[str, Any]:
    meta = {"name": name, "namespace": namespace, "uid": "u-1"}
    return {"metadata": meta, "spec": {"containers": [{"name": "app"}], **spec}}


def test_cluster_first_is_the_cluster_dns_with_the_kubelets_search_path() -> None:
    found = dns.names(pod(), CLUSTER)
    assert found.dns is not None
    assert found.dns.nameservers == ["10.96.0.10"]
    assert found.dns.searches == ["shop.svc.cluster.local", "svc.cluster.local", "cluster.local"]
    assert found.dns.options == ["ndots:5"]
    assert not found.dns.extend_host
    assert found.warnings == []


def test_cluster_first_without_cluster_dns_falls_back_to_default_with_the_kubelets_warning() -> (
    None
):
    found = dns.names(pod(), dns.Cluster())
    assert found.dns is None  # the host's resolv.conf
    assert found.warnings == [
        (
            "MissingClusterDNS",
            'pod: "web-0_shop(u-1)". kubelet does not have ClusterDNS IP configured and '
            'cannot create Pod using "ClusterFirst" policy. Falling back to "Default" policy.',
        )
    ]


def test_default_is_the_hosts_resolver_and_a_dns_config_extends_it() -> None:
    assert dns.names(pod(dnsPolicy="Default"), CLUSTER).dns is None
    extended = dns.names(
        pod(dnsPolicy="Default", dnsConfig={"searches": ["corp.example"]}), CLUSTER
    ).dns
    assert extended is not None and extended.extend_host
    assert (extended.nameservers, extended.searches) == ([], ["corp.example"])


def test_none_is_the_dns_config_alone_with_options_merged_by_name() -> None:
    config = {
        "nameservers": ["1.1.1.1"],
        "searches": ["a.example"],
        "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}],
    }
    found = dns.names(pod(dnsPolicy="None", dnsConfig=config), CLUSTER).dns
    assert found is not None
    assert (found.nameservers, found.searches, found.options) == (
        ["1.1.1.1"],
        ["a.example"],
        ["ndots:2", "edns0"],
    )


def test_cluster_first_with_a_dns_config_appends_and_overrides_ndots() -> None:
    config = {
        "nameservers": ["10.96.0.10", "1.1.1.1"],
        "options": [{"name": "ndots", "value": "1"}],
    }
    found = dns.names(pod(dnsConfig=config), CLUSTER).dns
    assert found is not None
    assert found.nameservers == ["10.96.0.10", "1.1.1.1"]
    assert found.options == ["ndots:1"]


def test_more_than_three_nameservers_are_cut_with_the_kubelets_warning() -> None:
    config = {"nameservers": ["1.1.1.1", "1.0.0.1", "8.8.8.8"]}
    found = dns.names(pod(dnsConfig=config), CLUSTER)
    assert found.dns is not None and found.dns.nameservers == ["10.96.0.10", "1.1.1.1", "1.0.0.1"]
    assert found.warnings == [
        (
            "DNSConfigForming",
            "Nameserver limits were exceeded, some nameservers have been omitted, the applied "
            "nameserver line is: 10.96.0.10 1.1.1.1 1.0.0.1",
        )
    ]


def test_a_search_line_over_the_kubelets_limits_is_cut() -> None:
    searches = [f"s{i}.example" for i in range(40)]
    found = dns.names(pod(dnsPolicy="None", dnsConfig={"searches": searches}), CLUSTER)
    assert found.dns is not None and len(found.dns.searches) == 32
    assert found.warnings[0][0] == "DNSConfigForming"


def test_cluster_first_with_host_net_is_refused() -> None:
    with pytest.raises(dns.Refused, match="ClusterFirstWithHostNet"):
        dns.names(pod(dnsPolicy="ClusterFirstWithHostNet"), CLUSTER)


def test_hostname_subdomain_and_fqdn() -> None:
    found = dns.names(pod(hostname="db-0", subdomain="db", setHostnameAsFQDN=True), CLUSTER)
    assert (found.hostname, found.domain, found.hostname_as_fqdn) == (
        "db-0",
        "db.shop.svc.cluster.local",
        True,
    )
    plain = dns.names(pod(setHostnameAsFQDN=True), CLUSTER)  # no subdomain: no FQDN
    assert (plain.hostname, plain.domain, plain.hostname_as_fqdn) == ("web-0", None, False)


def test_a_long_pod_name_is_cut_to_a_label_without_a_trailing_dash() -> None:
    assert dns.hostname(pod(name="a" * 62 + "-bcd")) == "a" * 62


def test_an_fqdn_over_64_characters_is_refused_with_the_kubelets_message() -> None:
    with pytest.raises(dns.Refused) as caught:
        dns.names(pod(hostname="h" * 40, subdomain="s" * 20, setHostnameAsFQDN=True), CLUSTER)
    assert str(caught.value).startswith("failed to construct FQDN from pod hostname and cluster")
    assert "(64 characters is the max, 84 characters requested)" in str(caught.value)


def test_host_aliases_reach_the_spec() -> None:
    aliases = [{"ip": "10.0.0.9", "hostnames": ["db", "db.local"]}]
    found = dns.names(pod(hostAliases=aliases), CLUSTER)
    assert [(a.ip, a.hostnames) for a in found.host_aliases] == [("10.0.0.9", ["db", "db.local"])]


def test_the_kube_dns_service_gives_the_cluster_dns() -> None:
    services = [
        {"metadata": {"name": "metrics"}, "spec": {"clusterIP": "10.96.0.20"}},
        {"metadata": {"name": "kube-dns"}, "spec": {"clusterIP": "10.96.0.10"}},
    ]
    assert dns.kube_dns(services) == ("10.96.0.10",)
    assert dns.kube_dns(services[:1]) == ()
