"""A pod's probes as the fleet takes them (``microvms.probe``): fields renamed, named
ports resolved from the container's ports, what cannot run refused with a reason."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from vk_fargate.fargate import microvms
from vk_fargate.fleet import models

WEB = {"name": "web", "ports": [{"name": "http", "containerPort": 8080}]}


def test_no_probe_is_none() -> None:
    assert microvms.probe(WEB, "livenessProbe") is None


def test_an_http_probe_with_a_named_port_and_every_field() -> None:
    container: dict[str, Any] = {
        **WEB,
        "livenessProbe": {
            "httpGet": {
                "scheme": "HTTPS",
                "path": "/healthz",
                "port": "http",
                "httpHeaders": [{"name": "X-Probe", "value": "1"}],
            },
            "initialDelaySeconds": 5,
            "periodSeconds": 2,
            "timeoutSeconds": 3,
            "successThreshold": 1,
            "failureThreshold": 4,
            "terminationGracePeriodSeconds": 7,
        },
    }
    probe = microvms.probe(container, "livenessProbe")
    assert probe == models.Probe(
        http_get=models.HTTPGetAction(
            scheme="HTTPS",
            port=8080,
            path="/healthz",
            headers=[models.HTTPHeader(name="X-Probe", value="1")],
        ),
        initial_delay_seconds=5,
        period_seconds=2,
        timeout_seconds=3,
        failure_threshold=4,
        termination_grace_seconds=7,
    )


def test_kubernetes_defaults_are_the_fleets() -> None:
    container = {**WEB, "readinessProbe": {"tcpSocket": {"port": 8080}}}
    probe = microvms.probe(container, "readinessProbe")
    assert probe is not None and probe.tcp_socket is not None
    assert (probe.tcp_socket.port, probe.tcp_socket.host) == (8080, None)
    assert (probe.period_seconds, probe.timeout_seconds) == (10, 1)
    assert (probe.success_threshold, probe.failure_threshold) == (1, 3)
    assert probe.termination_grace_seconds is None


def test_an_exec_probe() -> None:
    container = {"name": "web", "startupProbe": {"exec": {"command": ["cat", "/ready"]}}}
    probe = microvms.probe(container, "startupProbe")
    assert probe is not None and probe.exec == models.ExecAction(command=["cat", "/ready"])


def test_a_named_port_the_container_does_not_declare_is_refused() -> None:
    container = {**WEB, "readinessProbe": {"tcpSocket": {"port": "metrics"}}}
    with pytest.raises(pydantic.ValidationError) as caught:
        microvms.probe(container, "readinessProbe")
    assert models.invalid(caught.value) == (
        "tcp_socket.port: named port 'metrics' is not among the container's ports"
    )


def test_a_grpc_probe() -> None:
    container = {**WEB, "livenessProbe": {"grpc": {"port": 9000, "service": "db"}}}
    probe = microvms.probe(container, "livenessProbe")
    assert probe is not None and probe.grpc == models.GRPCAction(port=9000, service="db")


def test_a_probe_needs_exactly_one_handler() -> None:
    with pytest.raises(pydantic.ValidationError, match="exactly one of"):
        models.Probe.model_validate({"exec": {"command": ["true"]}, "tcp_socket": {"port": 80}})
    with pytest.raises(pydantic.ValidationError, match="exactly one of"):
        models.Probe.model_validate({})


def test_a_liveness_probe_needs_success_threshold_one() -> None:
    probe = {"exec": {"command": ["true"]}, "success_threshold": 2}
    with pytest.raises(pydantic.ValidationError, match="liveness probe's success_threshold"):
        models.Container.model_validate({"name": "web", "image": "i", "liveness_probe": probe})
    models.Container.model_validate({"name": "web", "image": "i", "readiness_probe": probe})
