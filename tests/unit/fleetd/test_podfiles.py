"""The pod's /etc files as the kubelet and containerd write them."""

from __future__ import annotations

from typing import Any

from vk_fargate.fleet import models
from vk_fargate.fleetd import podfiles

HOST = "# from DHCP\nnameserver 192.0.2.53\nsearch corp.example\noptions timeout:2\n"


def spec(**fields: Any) -> models.MicroVMSpec:
    return models.MicroVMSpec(
        vcpu_millis=250, mem_mib=512, containers=[{"name": "app", "image": "busybox"}], **fields
    )


def test_hosts_names_the_pod_then_its_aliases() -> None:
    text = podfiles.hosts(
        spec(
            hostname="web-0",
            domain="web.shop.svc.cluster.local",
            host_aliases=[{"ip": "10.1.2.3", "hostnames": ["foo.local", "bar.local"]}],
        ),
        "192.168.1.4",
        default="ignored",
    )
    assert text.startswith("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n")
    assert text.endswith(
        "fe00::2\tip6-allrouters\n"
        "192.168.1.4\tweb-0.web.shop.svc.cluster.local\tweb-0\n"
        "\n# Entries added by HostAliases.\n"
        "10.1.2.3\tfoo.local\tbar.local\n"
    )


def test_hosts_without_a_spec_hostname_names_the_pod_cut_to_a_label() -> None:
    text = podfiles.hosts(spec(), "192.168.1.4", default="a" * 62 + "-b")
    assert text.endswith("192.168.1.4\t" + "a" * 62 + "\n")


def test_hostname_is_the_fqdn_only_when_asked_and_there_is_a_domain() -> None:
    assert (
        podfiles.hostname(spec(hostname="h", domain="s.ns.svc.cluster.local"), default="p") == "h"
    )
    asked = spec(hostname="h", domain="s.ns.svc.cluster.local", hostname_as_fqdn=True)
    assert podfiles.hostname(asked, default="p") == "h.s.ns.svc.cluster.local"
    assert podfiles.hostname(spec(hostname_as_fqdn=True), default="pod-1") == "pod-1"


def test_resolv_conf_is_written_as_containerd_writes_it() -> None:
    dns = models.DNSConfig(
        nameservers=["10.96.0.10"],
        searches=["shop.svc.cluster.local", "svc.cluster.local", "cluster.local"],
        options=["ndots:5"],
    )
    assert podfiles.resolv_conf(dns, HOST) == (
        "search shop.svc.cluster.local svc.cluster.local cluster.local\n"
        "nameserver 10.96.0.10\n"
        "options ndots:5\n"
    )


def test_no_resolver_in_the_spec_is_the_hosts_file_as_it_is() -> None:
    assert podfiles.resolv_conf(None, HOST) == HOST


def test_extend_host_appends_to_the_hosts_resolver_and_merges_options_by_name() -> None:
    dns = models.DNSConfig(
        nameservers=["10.0.0.2", "192.0.2.53", "10.0.0.3"],
        searches=["extra.example"],
        options=["timeout:5", "edns0"],
        extend_host=True,
    )
    assert podfiles.resolv_conf(dns, HOST) == (
        "search corp.example extra.example\n"
        "nameserver 192.0.2.53\n"
        "nameserver 10.0.0.2\n"
        "nameserver 10.0.0.3\n"
        "options timeout:5 edns0\n"
    )


def test_the_last_search_or_domain_line_wins() -> None:
    servers, searches, options = podfiles.parse_resolv_conf(
        "domain a.example\nsearch b.example c.example ; comment\nnameserver 1.1.1.1 # x\n"
    )
    assert (servers, searches, options) == (["1.1.1.1"], ["b.example", "c.example"], [])


def test_extend_host_keeps_three_nameservers_as_the_kubelet() -> None:
    dns = models.DNSConfig(nameservers=["10.0.0.2", "10.0.0.3", "10.0.0.4"], extend_host=True)
    text = podfiles.resolv_conf(dns, HOST)
    assert text.count("nameserver") == 3
    assert "10.0.0.4" not in text
