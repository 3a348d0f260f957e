"""The gauges of /metrics, from plain values: who leads, and the cluster-wide numbers
only from the leader (so summing two replicas' scrapes counts each pod once)."""

from __future__ import annotations

import dataclasses
import datetime
import decimal

import pytest
from prometheus_client import core, exposition, parser

from vk_fargate import metrics, observability, world
from vk_fargate.fargate import pricing
from vk_fargate.fleet import models
from vk_fargate.k8s import kube

AT = datetime.datetime(2026, 11, 27, 19, 0, tzinfo=datetime.UTC)


@dataclasses.dataclass
class Watch:
    restarts: int


def _vm(vm_id: str, state: models.MicroVMState) -> models.MicroVM:
    spec = models.MicroVMSpec.model_validate(
        {
            "vcpu_millis": 250,
            "mem_mib": 512,
            "containers": [{"name": "app", "image": "busybox"}],
            "labels": {"namespace": "web", "profile": "fargate"},
        }
    )
    status = models.MicroVMStatus(state=state, created_at=AT, updated_at=AT)
    return models.MicroVM(id=vm_id, spec=spec, status=status)


def _state() -> world.World:
    state = world.World()
    for uid, phase in (("u1", "Running"), ("u2", "Pending"), ("u3", None)):
        pod = {"metadata": {"uid": uid, "namespace": "web", "name": uid}, "status": {}}
        if phase:
            pod["status"] = {"phase": phase}
        state.pod_cache.store(pod)
    state.vms = {"u1": _vm("u1", "running"), "u4": _vm("u4", "stopped")}
    return state


def _snapshot(*, leading: bool) -> dict[str, object]:
    return observability.snapshot(
        _state(),
        region="us-east-1",
        watches={"pods": Watch(3)},  # type: ignore[dict-item]
        lease_lag=0.5,
        leading=leading,
    )


def test_the_leader_counts_pods_and_what_live_microvms_cost() -> None:
    found = _snapshot(leading=True)
    assert found["leading"] is True
    assert found["pods_by_phase"] == {"Running": 1, "Pending": 2}  # no phase yet: Pending
    rates = pricing.rates_for(pricing.RATES, "us-east-1")
    hourly = pricing.fargate_hourly(decimal.Decimal("0.25"), decimal.Decimal("0.5"), 20, rates)
    # The stopped microVM costs nothing.
    assert found["running"] == {("web", "fargate"): (0.25, 0.5, float(hourly))}
    assert found["watch_restarts"] == {"pods": 3}


def test_a_standby_reports_only_itself() -> None:
    found = _snapshot(leading=False)
    assert found == {
        "leading": False,
        "watch_restarts": {"pods": 3},
        "lease_lag": 0.5,
        "pods_by_phase": {},
        "running": {},
    }


def _scrape(collector: metrics.StateCollector) -> dict[str, float]:
    registry = core.CollectorRegistry()
    registry.register(collector)
    text = exposition.generate_latest(registry).decode()
    return {
        s.name + str(sorted(s.labels.items())): s.value
        for family in parser.text_string_to_metric_families(text)
        for s in family.samples
    }


def test_the_scrape_says_who_leads() -> None:
    leader = _scrape(metrics.StateCollector(lambda: _snapshot(leading=True)))
    standby = _scrape(metrics.StateCollector(lambda: _snapshot(leading=False)))
    assert leader["vkfargate_leader[]"] == 1 and standby["vkfargate_leader[]"] == 0
    assert leader["vkfargate_pods[('phase', 'Running')]"] == 1
    assert not [key for key in standby if key.startswith(("vkfargate_pods", "vkfargate_running"))]


@pytest.mark.parametrize(
    ("path", "resource"),
    [
        ("/api/v1/namespaces/ns/pods/p/status", "pods/status"),
        ("/api/v1/namespaces/ns/pods/p/binding", "pods/binding"),
        ("/api/v1/nodes/fargate-ip-10-0-0-1", "nodes"),
        ("/api/v1/pods?watch=1&fieldSelector=spec.nodeName%3D", "pods"),
        ("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n", "leases"),
        ("/api/v1/namespaces/ns/events/e", "events"),
        ("/api/v1/namespaces", "namespaces"),
    ],
)
def test_requests_are_counted_by_resource(path: str, resource: str) -> None:
    assert kube.resource_of(path) == resource
