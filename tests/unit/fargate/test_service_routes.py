"""The ``kubernetes`` Service's route in a pod's microVM spec: its cluster IP and port
to the API server's address, or no route when either is unknown."""

from __future__ import annotations

from typing import Any

import pytest

from vk_fargate.fargate import environment, microvms, sizing
from vk_fargate.fleet import models

MASTER = {
    "metadata": {"name": "kubernetes", "namespace": "default"},
    "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443}]},
}


def sources(master: list[dict[str, Any]], endpoint: str | None) -> environment.Sources:
    return environment.Sources(
        config_maps={},
        secrets={},
        services=[],
        master_services=master,
        node_name_template="fargate-ip-{private_ip_dashed}.eu-central-1.compute.internal",
        size=sizing.Size(250, 512),
        api_endpoint=endpoint,
    )


def test_the_kubernetes_service_routes_to_the_api_server() -> None:
    assert microvms.service_routes(sources([MASTER], "127.0.0.1:6443")) == [
        models.ServiceRoute(cluster_ip="10.96.0.1", port=443, endpoint="127.0.0.1:6443")
    ]


@pytest.mark.parametrize(
    ("master", "endpoint"),
    [
        ([MASTER], None),
        ([], "127.0.0.1:6443"),
        ([{**MASTER, "spec": {"clusterIP": "None", "ports": [{"port": 443}]}}], "10.0.0.2:6443"),
        ([{**MASTER, "spec": {"clusterIP": "10.96.0.1", "ports": []}}], "10.0.0.2:6443"),
        ([{**MASTER, "spec": {"clusterIP": "fd00::1", "ports": [{"port": 443}]}}], "[::1]:6443"),
    ],
)
def test_no_route_without_an_address_on_both_ends(
    master: list[dict[str, Any]], endpoint: str | None
) -> None:
    assert microvms.service_routes(sources(master, endpoint)) == []
