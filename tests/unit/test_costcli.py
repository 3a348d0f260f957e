"""`vk-fargate cost`: the what-if table and JSON, rate files, and the running-pods listing.

The functions are called directly and stdout is captured; the running-pods mode reads a
fake API (two pages of pods, a node with a region label) instead of a cluster.
"""

from __future__ import annotations

import argparse
import decimal
import json
from pathlib import Path
from typing import Any

import pytest

from vk_fargate import costcli, errors

D = decimal.Decimal

SEED: dict[str, Any] = {
    "vcpu": D(2),
    "memory_gb": D(4),
    "storage_gb": D(30),
    "region": "eu-central-1",
}


def _json(capsys: pytest.CaptureFixture[str], **kwargs: Any) -> dict[str, Any]:
    assert costcli.whatif(**kwargs, as_json=True) == 0
    document: dict[str, Any] = json.loads(capsys.readouterr().out)
    return document


def test_whatif_table_for_the_seed_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert costcli.whatif(**SEED, hours_per_day=D(5)) == 0
    out = capsys.readouterr().out
    lines = {line.split("  ")[0]: line for line in out.splitlines()}
    assert "eu-central-1" in lines["region"]
    assert "verify before quoting" in lines["region"]
    assert "2 vCPU, 4 GB, 30 GB storage, 5 h/day" in lines["what-if"]
    # Rounded: the request becomes 2vCPU 5GB, and the table says so.
    assert "2vCPU 5GB, 30 GB" in lines["Fargate size"]
    assert "rounded up; --provisioned" in lines["Fargate size"]
    # 0.11994 $/h x 5 h x 30.4375 days = 18.2534 -> $18.25.
    assert "$18.25" in lines["Fargate monthly"]
    assert "$0.11994/h" in lines["Fargate monthly"]
    assert "10 GB over the 20 GB included" in lines["Fargate monthly"]
    # t3.medium 0.048 x 730.5 h = 35.064 + 30 x 0.0952 = 2.856 -> $37.92.
    assert "$37.92" in lines["EC2 always on"]
    assert "t3.medium" in lines["EC2 always on"]
    # 18.2534 / 37.92 = 0.481.
    assert lines["Fargate / EC2"].endswith("0.48")
    # 37.92 / (0.11994 x 30.4375) = 10.39 h/day.
    assert "10.4 h/day" in lines["break-even"]


def test_whatif_provisioned_prices_the_size_as_given(capsys: pytest.CaptureFixture[str]) -> None:
    assert costcli.whatif(**SEED, hours_per_day=D(10), provisioned=True) == 0
    out = capsys.readouterr().out
    assert "2vCPU 4GB, 30 GB (as given, --provisioned)" in out
    # 0.11483 x 10 x 30.4375 = 34.9514 -> $34.95: the seed's "$35 at 10 h/day".
    assert "$34.95" in out


def test_whatif_json_keys_and_values(capsys: pytest.CaptureFixture[str]) -> None:
    document = _json(capsys, **SEED, hours_per_day=D(5))
    assert document["fargate_monthly_usd"] == 18.25
    assert document["ec2_monthly_usd"] == 37.92
    assert document["fargate_hourly_usd"] == 0.11994
    assert document["ec2_instance"] == "t3.medium"
    assert document["region"] == "eu-central-1"
    assert document["days_per_month"] == 30.4375
    assert document["size"] == {
        "capacity_provisioned": "2vCPU 5GB",
        "vcpu": 2.0,
        "memory_gb": 5.0,
        "storage_gb": 30.0,
        "rounded": True,
    }
    assert document["inputs"] == {
        "vcpu": 2.0,
        "memory_gb": 4.0,
        "storage_gb": 30.0,
        "hours_per_day": 5.0,
        "provisioned": False,
    }
    assert document["ratio"] == pytest.approx(18.2534 / 37.92, abs=1e-4)


def test_whatif_ten_hours_is_twice_five(capsys: pytest.CaptureFixture[str]) -> None:
    five = _json(capsys, **SEED, hours_per_day=D(5))
    ten = _json(capsys, **SEED, hours_per_day=D(10))
    assert ten["fargate_monthly_usd"] == 36.51  # 2 x 18.25336875 = 36.5067375
    assert ten["ec2_monthly_usd"] == five["ec2_monthly_usd"]


def test_whatif_defaults_us_east_1_24_hours_20_gb(capsys: pytest.CaptureFixture[str]) -> None:
    document = _json(capsys, vcpu=D("0.25"), memory_gb=D("0.5"))
    assert document["region"] == "us-east-1"
    assert document["inputs"]["hours_per_day"] == 24.0
    assert document["size"]["capacity_provisioned"] == "0.25vCPU 1GB"
    # 0.25 x 0.04048 + 1 x 0.004445 = 0.014565 $/h x 730.5 h = 10.6397 -> 10.64.
    assert document["fargate_monthly_usd"] == 10.64
    # Cheapest covering 0.25 vCPU / 0.5 GB: t3.small 0.0208 x 730.5 = 15.1944 + 20 x 0.08
    # = 1.60 -> 16.79.
    assert document["ec2_instance"] == "t3.small"
    assert document["ec2_monthly_usd"] == 16.79


def test_whatif_chosen_instance(capsys: pytest.CaptureFixture[str]) -> None:
    document = _json(capsys, **SEED, hours_per_day=D(5), ec2_instance="m5.large")
    # m5.large 0.115 x 730.5 = 84.0075 + 2.856 = 86.8635 -> 86.86.
    assert document["ec2_instance"] == "m5.large"
    assert document["ec2_monthly_usd"] == 86.86


def test_whatif_without_a_comparable_instance(capsys: pytest.CaptureFixture[str]) -> None:
    assert costcli.whatif(vcpu=D(16), memory_gb=D(64)) == 0
    assert "n/a" in capsys.readouterr().out
    document = _json(capsys, vcpu=D(16), memory_gb=D(64))
    assert document["ec2_monthly_usd"] is None
    assert document["ratio"] is None


def test_whatif_rates_file_overrides(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rates = tmp_path / "rates.yaml"
    rates.write_text(
        "eu-central-1:\n  fargate_vcpu_hour: 0.05\n  ec2:\n    t3.medium: {usd_per_hour: 0.03}\n"
    )
    document = _json(capsys, **SEED, hours_per_day=D(5), rates_file=rates)
    # 2 x 0.05 + 5 x 0.00511 + 10 x 0.000127 = 0.1 + 0.02555 + 0.00127 = 0.12682 $/h;
    # x 5 x 30.4375 = 19.30049375 -> 19.30.
    assert document["fargate_monthly_usd"] == 19.3
    # 0.03 x 730.5 = 21.915 + 2.856 = 24.771 -> 24.77.
    assert document["ec2_monthly_usd"] == 24.77


def test_bad_rates_file_is_a_config_error(tmp_path: Path) -> None:
    rates = tmp_path / "rates.yaml"
    rates.write_text("- just a list\n")
    with pytest.raises(errors.ConfigError, match="expected region -> rates"):
        costcli.load_rates(rates)
    with pytest.raises(errors.ConfigError, match="cannot read rates"):
        costcli.load_rates(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"vcpu": D(2), "memory_gb": None}, "needs both --vcpu and --memory"),
        ({"vcpu": D(2), "memory_gb": D(4), "region": "mars-1"}, "no rates for region"),
        ({"vcpu": D(2), "memory_gb": D(4), "hours_per_day": D(25)}, "between 0 and 24"),
        ({"vcpu": D(2), "memory_gb": D(3), "provisioned": True}, "not a Fargate size"),
    ],
)
def test_whatif_input_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(errors.ConfigError, match=message):
        costcli.whatif(**kwargs)


def test_amount_argument_type() -> None:
    assert costcli.amount("0.25") == D("0.25")
    for bad in ("abc", "-1", "nan", "inf"):
        with pytest.raises(argparse.ArgumentTypeError):
            costcli.amount(bad)


# --- running pods ---------------------------------------------------------------------------


def _pod(
    namespace: str, name: str, capacity: str | None, node: str = "", storage: str | None = None
) -> dict[str, Any]:
    requests = {"ephemeral-storage": storage} if storage else {}
    return {
        "metadata": {
            "namespace": namespace,
            "name": name,
            "annotations": {"CapacityProvisioned": capacity} if capacity else {},
        },
        "spec": {
            "nodeName": node,
            "containers": [{"name": "c", "resources": {"requests": requests}}],
        },
    }


class FakeKube:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.closed = False

    async def get(self, path: str, **query: Any) -> dict[str, Any]:
        self.calls.append((path, query))
        if path == "/api/v1/nodes":
            return {
                "items": [
                    {
                        "metadata": {
                            "name": "fargate-ip-10-0-1-2.eu-central-1.compute.internal",
                            "labels": {"topology.kubernetes.io/region": "eu-central-1"},
                        }
                    },
                    {"metadata": {"name": "worker-1", "labels": {}}},
                ],
                "metadata": {},
            }
        if query.get("continue") is None:
            return {
                "items": [
                    _pod(
                        "web",
                        "b",
                        "2vCPU 4GB",
                        "fargate-ip-10-0-1-2.eu-central-1.compute.internal",
                        storage="30Gi",
                    ),
                    _pod("web", "ec2-pod", None, "worker-1"),
                ],
                "metadata": {"continue": "page-2"},
            }
        return {
            "items": [_pod("jobs", "a", "0.25vCPU 0.5GB"), _pod("jobs", "odd", "lots")],
            "metadata": {},
        }

    async def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeKube:
    api = FakeKube()

    async def connect(kubeconfig: Path | None) -> FakeKube:
        return api

    monkeypatch.setattr(costcli, "_api", connect)
    return api


async def test_running_pods_table(fake: FakeKube, capsys: pytest.CaptureFixture[str]) -> None:
    assert await costcli.running(None) == 0
    out = capsys.readouterr().out.splitlines()
    assert fake.closed
    pod_calls = [query for path, query in fake.calls if path == "/api/v1/pods"]
    assert [q.get("continue") for q in pod_calls] == [None, "page-2"]
    assert pod_calls[0]["fieldSelector"] == "status.phase!=Succeeded,status.phase!=Failed"
    assert out[0] == "warning: jobs/odd: skipped, not a CapacityProvisioned value: 'lots'"
    assert out[1].split() == ["NAMESPACE", "NAME", "CAPACITY", "STORAGE", "REGION", "MONTHLY"]
    # jobs/a, no node region -> us-east-1: 0.0123425 $/h x 730.5 h = 9.0162 -> $9.02.
    assert out[2].split() == ["jobs", "a", "0.25vCPU", "0.5GB", "20", "GB", "us-east-1", "$9.02"]
    # web/b on a Frankfurt node: 2 x 0.04656 + 4 x 0.00511 + 10 x 0.000127 = 0.11483 $/h
    # x 730.5 = 83.8833 -> $83.88.
    assert out[3].split() == ["web", "b", "2vCPU", "4GB", "30", "GB", "eu-central-1", "$83.88"]
    # 9.01619625 + 83.883315 = 92.89951125 -> $92.90.
    assert out[4] == "TOTAL 2 pod(s) at 24 h/day x 30.4375 days: $92.90 per month"
    assert len(out) == 5


async def test_running_pods_json_with_region(
    fake: FakeKube, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await costcli.running(None, region="us-east-1", as_json=True) == 0
    document = json.loads(capsys.readouterr().out)
    assert all(path != "/api/v1/nodes" for path, _ in fake.calls)  # --region: no node lookup
    assert [(p["name"], p["region"], p["monthly_usd"]) for p in document["pods"]] == [
        ("a", "us-east-1", 9.02),
        # 2 x 0.04048 + 4 x 0.004445 + 10 x 0.000111 = 0.09985 $/h x 730.5 = 72.9404.
        ("b", "us-east-1", 72.94),
    ]
    # 9.01619625 + 72.940425 = 81.95662125.
    assert document["total_monthly_usd"] == 81.96
    assert document["warnings"] == ["jobs/odd: skipped, not a CapacityProvisioned value: 'lots'"]
