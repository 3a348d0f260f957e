"""Tests of fleetd's config.load: a valid fleet.yaml and every way it is refused."""

from __future__ import annotations

import copy
import ipaddress
from pathlib import Path
from typing import Any

import pytest
import yaml

from vk_fargate import errors
from vk_fargate.fleetd import config

VALID: dict[str, Any] = {
    "listen": "127.0.0.1:8401",
    "token_file": "/tmp/fleet/token",
    "state_dir": "/tmp/fleet/state",
    "subnets": [
        {"id": "subnet-a", "cidr": "192.168.160.0/20", "zone": "zone-a"},
        {"id": "subnet-b", "cidr": "10.20.0.0/24", "zone": "zone-b"},
    ],
    "hosts": [
        {"id": "metal-a", "zone": "zone-a", "vcpus": 32, "mem_mib": 131072},
        {"id": "metal-b", "zone": "zone-b", "vcpus": 0.5, "mem_mib": 4096, "runtime": "microvm"},
    ],
    "registries": {"docker.io": {"mirror": "http://127.0.0.1:5000"}},
    "restart_backoff": {"initial_seconds": 1, "max_seconds": 30},
}


def write(tmp_path: Path, document: Any, name: str = "fleet.yaml") -> Path:
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else yaml.safe_dump(document))
    return path


def changed(**fields: Any) -> dict[str, Any]:
    document = copy.deepcopy(VALID)
    document.update(fields)
    return document


def refused(tmp_path: Path, document: Any) -> str:
    path = write(tmp_path, document)
    with pytest.raises(errors.ConfigError) as caught:
        config.load(path)
    message = str(caught.value)
    assert str(path) in message
    return message


def test_a_valid_config(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, VALID))
    assert (cfg.listen_host, cfg.listen_port) == ("127.0.0.1", 8401)
    assert cfg.token_file == Path("/tmp/fleet/token")
    assert cfg.state_dir == Path("/tmp/fleet/state")
    assert [(s.id, s.cidr, s.zone) for s in cfg.subnets] == [
        ("subnet-a", ipaddress.IPv4Network("192.168.160.0/20"), "zone-a"),
        ("subnet-b", ipaddress.IPv4Network("10.20.0.0/24"), "zone-b"),
    ]
    assert [(h.id, h.vcpus, h.mem_mib, h.runtime) for h in cfg.hosts] == [
        ("metal-a", 32, 131072, "process"),
        ("metal-b", 0.5, 4096, "microvm"),
    ]
    assert cfg.registries["docker.io"].mirror == "http://127.0.0.1:5000"
    assert (cfg.restart_backoff.initial_seconds, cfg.restart_backoff.max_seconds) == (1, 30)
    # defaults
    assert cfg.networking == "auto"
    assert cfg.tls is None
    assert cfg.event_retention == 20000
    assert cfg.retry_after_seconds == 5
    assert cfg.max_sessions_per_microvm == 64


def test_the_example_config_of_the_repository_loads() -> None:
    example = Path(__file__).resolve().parents[3] / "config" / "fleet.yaml"
    cfg = config.load(example)
    assert {h.zone for h in cfg.hosts} <= {s.zone for s in cfg.subnets}


@pytest.mark.parametrize("listen", ["[::1]:8400", "localhost:1", "127.0.0.2:65535"])
def test_listen_host_and_port(tmp_path: Path, listen: str) -> None:
    cfg = config.load(write(tmp_path, changed(listen=listen)))
    host, _, port = listen.rpartition(":")
    assert (cfg.listen_host, cfg.listen_port) == (host.strip("[]"), int(port))


@pytest.mark.parametrize("listen", ["0.0.0.0:8400", "10.0.0.5:8400", "[::]:8400", "fleet:8400"])
def test_plain_http_beyond_loopback_is_refused_unless_asked_for(
    tmp_path: Path, listen: str
) -> None:
    message = refused(tmp_path, changed(listen=listen))
    assert "without TLS" in message and "insecure_listen" in message
    tls = {"cert_file": "/etc/fleet/tls.crt", "key_file": "/etc/fleet/tls.key"}
    assert config.load(write(tmp_path, changed(listen=listen, tls=tls))).tls is not None
    assert config.load(write(tmp_path, changed(listen=listen, insecure_listen=True)))


@pytest.mark.parametrize(
    "cidr",
    ["8.8.8.0/24", "100.64.0.0/24", "11.0.0.0/16", "127.0.0.0/24", "169.254.0.0/24"],
)
def test_a_public_or_special_subnet_is_refused_naming_it(tmp_path: Path, cidr: str) -> None:
    subnets = [{"id": "subnet-a", "cidr": cidr, "zone": "zone-a"}, VALID["subnets"][1]]
    message = refused(tmp_path, changed(subnets=subnets))
    assert cidr in message
    assert "subnets.0.cidr" in message


def test_a_public_subnet_message_says_it_is_not_private(tmp_path: Path) -> None:
    subnets = [*VALID["subnets"], {"id": "subnet-c", "cidr": "52.28.0.0/24", "zone": "zone-a"}]
    message = refused(tmp_path, changed(subnets=subnets))
    assert "52.28.0.0/24 is not a private subnet" in message
    assert "subnets.2.cidr" in message


def test_a_subnet_smaller_than_a_slash_28_is_refused(tmp_path: Path) -> None:
    subnets = [{"id": "subnet-a", "cidr": "10.0.0.0/29", "zone": "zone-a"}, VALID["subnets"][1]]
    assert "10.0.0.0/29 is too small" in refused(tmp_path, changed(subnets=subnets))


def test_a_cidr_with_host_bits_set_is_refused(tmp_path: Path) -> None:
    subnets = [{"id": "subnet-a", "cidr": "10.0.0.1/24", "zone": "zone-a"}, VALID["subnets"][1]]
    assert "subnets.0.cidr" in refused(tmp_path, changed(subnets=subnets))


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("10.0.0.0/16", "10.0.5.0/24"),
        ("10.0.5.0/24", "10.0.0.0/16"),
        ("192.168.1.0/24", "192.168.1.0/24"),
    ],
)
def test_overlapping_subnets_are_refused(tmp_path: Path, first: str, second: str) -> None:
    subnets = [
        {"id": "subnet-a", "cidr": first, "zone": "zone-a"},
        {"id": "subnet-b", "cidr": second, "zone": "zone-b"},
    ]
    message = refused(tmp_path, changed(subnets=subnets))
    assert f"subnets {first} and {second} overlap" in message


def test_a_host_in_a_zone_without_a_subnet_is_refused(tmp_path: Path) -> None:
    hosts = [*VALID["hosts"], {"id": "metal-c", "zone": "zone-c", "vcpus": 4, "mem_mib": 8192}]
    assert "host metal-c: no subnet in zone zone-c" in refused(tmp_path, changed(hosts=hosts))


def test_duplicate_host_ids_are_refused(tmp_path: Path) -> None:
    hosts = [VALID["hosts"][0], {**VALID["hosts"][1], "id": "metal-a"}]
    assert "host ids must be unique" in refused(tmp_path, changed(hosts=hosts))


def test_duplicate_subnet_ids_are_refused(tmp_path: Path) -> None:
    subnets = [VALID["subnets"][0], {**VALID["subnets"][1], "id": "subnet-a"}]
    assert "subnet ids must be unique" in refused(tmp_path, changed(subnets=subnets))


@pytest.mark.parametrize("listen", ["8400", "127.0.0.1", ":8400", "127.0.0.1:http", "host:"])
def test_a_bad_listen_is_refused(tmp_path: Path, listen: str) -> None:
    assert f"listen must be HOST:PORT, not {listen!r}" in refused(tmp_path, changed(listen=listen))


@pytest.mark.parametrize(
    ("document", "where"),
    [
        (changed(subnets=[]), "subnets"),
        (changed(hosts=[]), "hosts"),
        ({k: v for k, v in VALID.items() if k != "hosts"}, "hosts"),
        (changed(unknown_setting=1), "unknown_setting"),
        (changed(networking="bridge"), "networking"),
        (changed(event_retention=10), "event_retention"),
        (changed(max_sessions_per_microvm=0), "max_sessions_per_microvm"),
        (changed(hosts=[{**VALID["hosts"][0], "vcpus": 0}]), "hosts.0.vcpus"),
        (changed(hosts=[{**VALID["hosts"][0], "runtime": "docker"}]), "hosts.0.runtime"),
        ([1, 2, 3], "(top)"),
    ],
)
def test_a_bad_field_is_named(tmp_path: Path, document: Any, where: str) -> None:
    assert f"{where}: " in refused(tmp_path, document)


def test_the_old_image_table_is_refused_saying_what_replaced_it(tmp_path: Path) -> None:
    message = refused(tmp_path, changed(images={"nginx": {"command": ["/usr/sbin/nginx"]}}))
    assert "images: the image table is gone" in message
    assert "registries" in message


def test_an_empty_file_is_refused_naming_what_is_missing(tmp_path: Path) -> None:
    message = refused(tmp_path, "")
    assert "subnets: " in message
    assert "hosts: " in message


def test_invalid_yaml_is_refused(tmp_path: Path) -> None:
    assert "cannot read fleet config" in refused(tmp_path, "hosts: [unclosed\n")


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    with pytest.raises(errors.ConfigError, match="cannot read fleet config") as caught:
        config.load(path)
    assert str(path) in str(caught.value)
