"""The text of a pod namespace's rules (``servicerules``), from plain values."""

from __future__ import annotations

import re

from vk_fargate.fleet import models
from vk_fargate.fleetd import servicerules

RELAY = ("10.96.0.1", 443, "192.168.20.1", 17123)


def port(**fields: object) -> models.ServicePort:
    return models.ServicePort.model_validate(
        {"name": "default/web:http", "cluster_ip": "10.96.0.50", "port": 80, **fields}
    )


def table(
    *ports: models.ServicePort, cidrs: tuple[str, ...] = ("10.96.0.0/24",)
) -> models.ServiceTable:
    return models.ServiceTable(service_cidrs=list(cidrs), ports=list(ports))


def section(text: str, name: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index(f"*{name}")
    return lines[start : lines.index("COMMIT", start) + 1]


def rules(text: str, table_name: str, chain: str) -> list[str]:
    return [r for r in section(text, table_name) if r.startswith(f"-A {chain} ")]


def test_the_relay_comes_before_the_services_so_it_wins_for_the_kubernetes_port() -> None:
    kubernetes = port(name="default/kubernetes:https", cluster_ip="10.96.0.1", port=443,
                      endpoints=["192.0.2.10:6443"])  # fmt: skip
    text = servicerules.render([RELAY], table(kubernetes))
    output = rules(text, "nat", "OUTPUT")
    assert output[0] == (
        "-A OUTPUT -d 10.96.0.1/32 -p tcp -m tcp --dport 443 "
        '-m comment --comment "service route 10.96.0.1:443 via the gateway relay" '
        "-j DNAT --to-destination 192.168.20.1:17123"
    )
    assert output[1].endswith("-j KUBE-SERVICES")
    assert len(output) == 2


def test_endpoints_are_picked_at_random_with_falling_odds_the_last_one_unconditional() -> None:
    p = port(endpoints=["192.168.20.5:80", "192.168.20.6:80", "192.168.20.7:80"])
    text = servicerules.render([], table(p))
    svc = servicerules.svc_chain(p)
    assert rules(text, "nat", "KUBE-SERVICES") == [
        f"-A KUBE-SERVICES -d 10.96.0.50/32 -p tcp "
        f'-m comment --comment "default/web:http cluster IP" -m tcp --dport 80 -j {svc}'
    ]
    picks = rules(text, "nat", svc)
    odds = [re.search(r"--probability (\S+)", r) for r in picks]
    assert [m.group(1) if m else None for m in odds] == ["0.3333333333", "0.5000000000", None]
    seps = [r.rpartition("-j ")[2] for r in picks]
    endpoints = [rules(text, "nat", s)[0].rpartition(" ")[2] for s in seps]
    assert endpoints == ["192.168.20.5:80", "192.168.20.6:80", "192.168.20.7:80"]
    assert f":{svc} - [0:0]" in section(text, "nat")
    assert all(f":{s} - [0:0]" in section(text, "nat") for s in seps)


def test_one_endpoint_is_always_taken() -> None:
    p = port(endpoints=["192.168.20.5:80"])
    text = servicerules.render([], table(p))
    (pick,) = rules(text, "nat", servicerules.svc_chain(p))
    assert "statistic" not in pick
    assert pick.endswith(f"-j {servicerules.sep_chain(p, '192.168.20.5:80')}")


def test_udp_ports_match_udp() -> None:
    p = port(name="kube-system/kube-dns:dns", cluster_ip="10.96.0.10", port=53, protocol="UDP",
             endpoints=["192.168.20.9:53"])  # fmt: skip
    text = servicerules.render([], table(p))
    (jump,) = rules(text, "nat", "KUBE-SERVICES")
    assert "-p udp" in jump and "-m udp --dport 53" in jump
    (dnat,) = rules(text, "nat", servicerules.sep_chain(p, "192.168.20.9:53"))
    assert dnat.startswith(f"-A {servicerules.sep_chain(p, '192.168.20.9:53')} -p udp ")
    assert dnat.endswith("-m udp -j DNAT --to-destination 192.168.20.9:53")


def test_affinity_checks_every_endpoints_recent_list_before_the_random_pick() -> None:
    endpoints = ["192.168.20.5:80", "192.168.20.6:80"]
    p = port(endpoints=endpoints, affinity_seconds=10800)
    text = servicerules.render([], table(p))
    seps = [servicerules.sep_chain(p, e) for e in endpoints]
    picks = rules(text, "nat", servicerules.svc_chain(p))
    assert [r.rpartition("-j ")[2] for r in picks] == [*seps, *seps]
    for rule, sep in zip(picks[:2], seps, strict=True):
        assert f"-m recent --name {sep} --rcheck --seconds 10800 --reap" in rule
    assert "statistic" in picks[2] and "recent" not in picks[2]
    for sep, endpoint in zip(seps, endpoints, strict=True):
        (dnat,) = rules(text, "nat", sep)
        assert f"-m recent --name {sep} --set" in dnat
        assert dnat.endswith(f"-j DNAT --to-destination {endpoint}")


def test_every_port_match_and_module_rule_names_its_protocol_first() -> None:
    p = port(endpoints=["192.168.20.5:80", "192.168.20.6:80"], affinity_seconds=5)
    text = servicerules.render([RELAY], table(p, port(name="default/none:http", port=81)))
    for rule in text.splitlines():
        if any(m in rule for m in ("--dport", "-m recent", "-m statistic", "-m tcp")):
            proto = rule.index("-p tcp")
            assert all(
                proto < rule.index(m) for m in ("--dport", "-m recent", "-m statistic") if m in rule
            ), rule


def test_a_port_without_endpoints_and_the_rest_of_the_ranges_are_refused() -> None:
    empty = port(name="default/none:http", cluster_ip="10.96.0.51")
    text = servicerules.render([], table(empty, cidrs=("10.96.0.0/24", "10.97.0.0/16")))
    assert not [r for r in section(text, "nat") if "10.96.0.51" in r]
    assert rules(text, "filter", "OUTPUT") == [
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES'
    ]
    assert rules(text, "filter", "KUBE-SERVICES") == [
        "-A KUBE-SERVICES -d 10.96.0.51/32 -p tcp "
        '-m comment --comment "default/none:http has no endpoints" -m tcp --dport 80 '
        "-j REJECT --reject-with icmp-port-unreachable",
        '-A KUBE-SERVICES -d 10.96.0.0/24 -m comment --comment "service range 10.96.0.0/24: '
        'no such service port" -j REJECT --reject-with icmp-port-unreachable',
        '-A KUBE-SERVICES -d 10.97.0.0/16 -m comment --comment "service range 10.97.0.0/16: '
        'no such service port" -j REJECT --reject-with icmp-port-unreachable',
    ]


def test_both_tables_are_replaced_whole_with_their_builtin_chains() -> None:
    text = servicerules.render([RELAY], table())
    assert section(text, "nat")[:5] == [
        "*nat", ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
        ":POSTROUTING ACCEPT [0:0]",
    ]  # fmt: skip
    assert section(text, "filter")[:5] == [
        "*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
        ":KUBE-SERVICES - [0:0]",
    ]  # fmt: skip
    assert text.endswith("COMMIT\n")


def test_the_text_does_not_depend_on_the_order_ports_and_endpoints_came_in() -> None:
    a = port(endpoints=["192.168.20.5:80", "192.168.20.6:80"])
    b = port(name="default/web:https", port=443, endpoints=["192.168.20.6:443"])
    c = port(name="default/other:http", cluster_ip="10.96.0.9", endpoints=[])
    a_reversed = port(endpoints=["192.168.20.6:80", "192.168.20.5:80"])
    first = servicerules.render([RELAY], table(a, b, c))
    assert servicerules.render([RELAY], table(c, b, a_reversed)) == first
    assert servicerules.digest(first) == servicerules.digest(
        servicerules.render([RELAY], table(b, a, c))
    )
    assert servicerules.digest(first) != servicerules.digest(servicerules.render([], table(a, b)))


def test_chain_names_fit_iptables_and_differ_per_port_and_endpoint() -> None:
    p = port(name="a-very-long-namespace-name/and-a-long-service-name:some-port-name")
    names = {
        servicerules.svc_chain(p),
        servicerules.svc_chain(port(port=81)),
        servicerules.svc_chain(port(protocol="UDP")),
        servicerules.sep_chain(p, "192.168.20.5:80"),
        servicerules.sep_chain(p, "192.168.20.6:80"),
    }
    assert len(names) == 5
    assert all(len(n) <= 28 and re.fullmatch(r"KUBE-(SVC|SEP)-[A-Z2-7]{16}", n) for n in names)


def test_a_namespace_without_routes_or_table_has_the_digest_of_a_new_one() -> None:
    assert servicerules.digest(servicerules.render([], models.ServiceTable())) == (
        servicerules.EMPTY
    )


def test_addresses_are_written_as_iptables_reads_them() -> None:
    p = port(endpoints=["192.168.20.5:0080", "192.168.20.5:80", "192.168.20.6:\u0668\u0660"])
    text = servicerules.render([], table(p, cidrs=("10.96.0.0/255.255.255.0",)))
    dnats = [r.rpartition(" ")[2] for r in text.splitlines() if "DNAT" in r]
    assert dnats == ["192.168.20.5:80", "192.168.20.6:80"]
    assert "-d 10.96.0.0/24 " in text and "255.255.255.0" not in text
