"""`vk-fargate cost`: what Fargate costs, before deciding and while running.

Two modes, because the two questions come at different times:

- **what-if** (``--vcpu 2 --memory 4 [--storage 30] [--hours-per-day 5]``): the Fargate
  size that request gets (+256 MiB, rounded up; ``--provisioned`` prices the figures as the
  billed size), its monthly cost, the always-on EC2 instance of the same size, their ratio
  and the hours a day at which they cost the same. The seed chapter's comparison, redone.
- **running pods** (no what-if flag): every pod in the cluster with a
  ``CapacityProvisioned`` annotation that has not finished, priced per month at 24 h/day,
  and the total: what the cluster would cost on Fargate if it stayed as it is.

The region comes from ``--region``; in running-pods mode without it, from each pod's node
(``topology.kubernetes.io/region``), else us-east-1. ``--rates FILE`` is YAML shaped like
``pricing.Rates`` (region -> field -> value; ``ec2`` maps instance types to ``vcpu``,
``memory_gb``, ``usd_per_hour``) and overrides the built-in rates, which must be verified
before quoting (see ``vk_fargate.fargate.pricing``).

Arithmetic lives in ``pricing`` (pure); this module reads files and the cluster, and prints.
"""

from __future__ import annotations

import argparse
import decimal
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from vk_fargate import errors
from vk_fargate.fargate import pricing, sizing
from vk_fargate.k8s import client, kube

D = decimal.Decimal
CAPACITY_ANNOTATION = "CapacityProvisioned"
REGION_LABEL = "topology.kubernetes.io/region"
CENT = D("0.01")
DEFAULT_STORAGE_GB = D(pricing.STORAGE_INCLUDED_GB)
DEFAULT_HOURS_PER_DAY = D(24)


def amount(text: str) -> decimal.Decimal:
    """argparse type: a finite, non-negative decimal number."""
    try:
        value = D(text)
    except decimal.InvalidOperation:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value.is_finite() or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a non-negative number")
    return value


def load_rates(path: Path | None) -> dict[str, pricing.Rates]:
    """The built-in rates, with the YAML file's overrides when one is given."""
    if path is None:
        return dict(pricing.RATES)
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise errors.ConfigError(f"cannot read rates from {path}: {exc}") from exc
    if document is None:
        return dict(pricing.RATES)
    if not isinstance(document, Mapping):
        raise errors.ConfigError(f"{path}: expected region -> rates, got {type(document).__name__}")
    return pricing.merge_rates(pricing.RATES, document)


def _usd(value: decimal.Decimal) -> decimal.Decimal:
    return value.quantize(CENT, rounding=decimal.ROUND_HALF_UP)


def _money(value: decimal.Decimal) -> str:
    return f"${_usd(value):,.2f}"


def _number(value: decimal.Decimal, places: str = "0.0001") -> float:
    """A JSON number: rounded, then float (whose repr is the shortest exact text)."""
    return float(value.quantize(D(places), rounding=decimal.ROUND_HALF_UP))


def _plain(value: decimal.Decimal) -> str:
    """``30`` not ``3E+1``, ``0.11994`` not ``0.119940``."""
    return f"{value.normalize():f}"


# --- what-if ------------------------------------------------------------------------------


def whatif_report(
    *,
    vcpu: decimal.Decimal,
    memory_gb: decimal.Decimal,
    storage_gb: decimal.Decimal = DEFAULT_STORAGE_GB,
    hours_per_day: decimal.Decimal = DEFAULT_HOURS_PER_DAY,
    region: str = pricing.DEFAULT_REGION,
    provisioned: bool = False,
    ec2_instance: str | None = None,
    table: Mapping[str, pricing.Rates] = pricing.RATES,
) -> dict[str, Any]:
    """Every figure of a what-if, unrounded (Decimal), keyed as in ``--json``."""
    rates = pricing.rates_for(table, region)
    size = pricing.whatif_size(vcpu, memory_gb, storage_gb, provisioned=provisioned)
    size_vcpu, size_gb = pricing.vcpu_of(size), pricing.memory_gb_of(size)
    try:
        fargate = pricing.monthly_fargate(
            size_vcpu, size_gb, size.ephemeral_gib, hours_per_day, rates
        )
    except ValueError as exc:
        raise errors.ConfigError(str(exc)) from None
    # EC2 of the same size as asked (an instance has no 256 MiB rounding), always on.
    instance = ec2_instance or pricing.ec2_for(vcpu, memory_gb, rates)
    month_hours = 24 * pricing.DAYS_PER_MONTH  # the same month as the Fargate figure
    ec2 = pricing.monthly_ec2(instance, storage_gb, rates, hours=month_hours) if instance else None
    return {
        "region": region,
        "inputs": {
            "vcpu": vcpu,
            "memory_gb": memory_gb,
            "storage_gb": storage_gb,
            "hours_per_day": hours_per_day,
            "provisioned": provisioned,
        },
        "size": {
            "capacity_provisioned": size.capacity_provisioned,
            "vcpu": size_vcpu,
            "memory_gb": size_gb,
            "storage_gb": D(size.ephemeral_gib),
            "rounded": (size_vcpu, size_gb) != (vcpu, memory_gb),
        },
        "days_per_month": pricing.DAYS_PER_MONTH,
        "fargate_hourly_usd": pricing.fargate_hourly(size_vcpu, size_gb, size.ephemeral_gib, rates),
        "fargate_monthly_usd": fargate,
        "ec2_instance": instance,
        "ec2_monthly_usd": ec2,
        "ratio": fargate / ec2 if ec2 else None,
        "break_even_hours_per_day": (
            pricing.break_even_hours_per_day(size_vcpu, size_gb, size.ephemeral_gib, ec2, rates)
            if ec2 is not None
            else None
        ),
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, decimal.Decimal):
        return _number(value)
    return value


def _whatif_json(report: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = _jsonable(report)
    out["fargate_hourly_usd"] = _number(report["fargate_hourly_usd"], "0.000001")
    out["fargate_monthly_usd"] = _number(report["fargate_monthly_usd"], "0.01")
    if report["ec2_monthly_usd"] is not None:
        out["ec2_monthly_usd"] = _number(report["ec2_monthly_usd"], "0.01")
    return out


def _whatif_table(report: dict[str, Any]) -> list[str]:
    inputs, size = report["inputs"], report["size"]
    hours = _plain(inputs["hours_per_day"])
    asked = (
        f"{_plain(inputs['vcpu'])} vCPU, {_plain(inputs['memory_gb'])} GB, "
        f"{_plain(inputs['storage_gb'])} GB storage, {hours} h/day"
    )
    if inputs["provisioned"]:
        how = "as given, --provisioned"
    elif size["rounded"]:
        how = f"request + {sizing.OVERHEAD_MIB} MiB, rounded up; --provisioned prices it as given"
    else:
        how = f"request + {sizing.OVERHEAD_MIB} MiB fits"
    extra = max(D(0), size["storage_gb"] - pricing.STORAGE_INCLUDED_GB)
    rows = [
        ("region", f"{report['region']} (built-in rates: verify before quoting)"),
        ("what-if", asked),
        ("Fargate size", f"{size['capacity_provisioned']}, {size['storage_gb']} GB ({how})"),
        (
            "Fargate monthly",
            f"{_money(report['fargate_monthly_usd'])}  ({hours} h/day x "
            f"{_plain(report['days_per_month'])} days at "
            f"${_plain(report['fargate_hourly_usd'])}/h; {_plain(extra)} GB over the "
            f"{pricing.STORAGE_INCLUDED_GB} GB included)",
        ),
    ]
    if report["ec2_monthly_usd"] is None:
        rows.append(("EC2 always on", "n/a (no instance type of that size in the rates)"))
    else:
        rows += [
            (
                "EC2 always on",
                f"{_money(report['ec2_monthly_usd'])}  ({report['ec2_instance']} 24 h/day + "
                f"{_plain(inputs['storage_gb'])} GB gp3)",
            ),
            ("Fargate / EC2", f"{report['ratio']:.2f}"),
            ("break-even", f"{report['break_even_hours_per_day']:.1f} h/day on Fargate"),
        ]
    width = max(len(label) for label, _ in rows)
    return [f"{label:<{width}}  {value}" for label, value in rows]


def whatif(
    *,
    vcpu: decimal.Decimal | None,
    memory_gb: decimal.Decimal | None,
    storage_gb: decimal.Decimal | None = None,
    hours_per_day: decimal.Decimal | None = None,
    region: str | None = None,
    provisioned: bool = False,
    ec2_instance: str | None = None,
    rates_file: Path | None = None,
    as_json: bool = False,
) -> int:
    """Print a what-if as a table or JSON; exit code."""
    if vcpu is None or memory_gb is None:
        raise errors.ConfigError("a what-if needs both --vcpu and --memory")
    report = whatif_report(
        vcpu=vcpu,
        memory_gb=memory_gb,
        storage_gb=DEFAULT_STORAGE_GB if storage_gb is None else storage_gb,
        hours_per_day=DEFAULT_HOURS_PER_DAY if hours_per_day is None else hours_per_day,
        region=region or pricing.DEFAULT_REGION,
        provisioned=provisioned,
        ec2_instance=ec2_instance,
        table=load_rates(rates_file),
    )
    if as_json:
        print(json.dumps(_whatif_json(report), indent=2))
    else:
        print("\n".join(_whatif_table(report)))
    return 0


# --- running pods -------------------------------------------------------------------------


def price_pods(
    pods: list[kube.JSON],
    node_regions: Mapping[str, str],
    table: Mapping[str, pricing.Rates],
    *,
    region: str | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Monthly cost at 24 h/day of each pod with ``CapacityProvisioned``; and warnings."""
    rows: list[dict[str, Any]] = []
    warnings: list[str] = []
    for pod in pods:
        meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        text = (meta.get("annotations") or {}).get(CAPACITY_ANNOTATION)
        if text is None:
            continue
        name = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
        try:
            size = pricing.parse_capacity(text)
        except ValueError as exc:
            warnings.append(f"{name}: skipped, {exc}")
            continue
        try:
            storage = sizing.size(spec).ephemeral_gib
        except (sizing.TooLarge, ValueError):
            storage = sizing.EPHEMERAL_DEFAULT_GIB
        where = region or node_regions.get(spec.get("nodeName", "")) or pricing.DEFAULT_REGION
        rates = pricing.rates_for(table, where)
        vcpu, memory_gb = pricing.vcpu_of(size), pricing.memory_gb_of(size)
        rows.append(
            {
                "namespace": meta.get("namespace", ""),
                "name": meta.get("name", ""),
                "capacity_provisioned": text,
                "storage_gb": storage,
                "region": where,
                "monthly_usd": pricing.monthly_fargate(vcpu, memory_gb, storage, 24, rates),
            }
        )
    return rows, warnings


async def _list(api: kube.Kube, path: str, **query: Any) -> list[kube.JSON]:
    items: list[kube.JSON] = []
    token: str | None = None
    while True:
        page = await api.get(path, limit=500, **query, **({"continue": token} if token else {}))
        items += page.get("items") or []
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return items


async def _api(kubeconfig: Path | None) -> kube.Kube:
    return kube.Kube(await client.connect(kubeconfig))


async def running(
    kubeconfig: Path | None,
    *,
    region: str | None = None,
    rates_file: Path | None = None,
    as_json: bool = False,
) -> int:
    """Print the monthly cost of the cluster's Fargate pods at 24 h/day; exit code."""
    table = load_rates(rates_file)
    api = await _api(kubeconfig)
    try:
        pods = await _list(
            api, "/api/v1/pods", fieldSelector="status.phase!=Succeeded,status.phase!=Failed"
        )
        node_regions: dict[str, str] = {}
        if region is None:
            for node in await _list(api, "/api/v1/nodes"):
                labels = (node.get("metadata") or {}).get("labels") or {}
                if REGION_LABEL in labels:
                    node_regions[node["metadata"]["name"]] = labels[REGION_LABEL]
    finally:
        await api.close()
    rows, warnings = price_pods(pods, node_regions, table, region=region)
    rows.sort(key=lambda r: (r["namespace"], r["name"]))
    total = sum((r["monthly_usd"] for r in rows), D(0))
    if as_json:
        document = {
            "hours_per_day": 24,
            "days_per_month": _number(pricing.DAYS_PER_MONTH),
            "pods": [{**r, "monthly_usd": _number(r["monthly_usd"], "0.01")} for r in rows],
            "total_monthly_usd": _number(total, "0.01"),
            "warnings": warnings,
        }
        print(json.dumps(document, indent=2))
        return 0
    for warning in warnings:
        print(f"warning: {warning}")
    if not rows:
        print(f"no running pod has a {CAPACITY_ANNOTATION} annotation")
        return 0
    header = ("NAMESPACE", "NAME", "CAPACITY", "STORAGE", "REGION", "MONTHLY")
    lines = [
        (
            r["namespace"],
            r["name"],
            r["capacity_provisioned"],
            f"{r['storage_gb']} GB",
            r["region"],
            _money(r["monthly_usd"]),
        )
        for r in rows
    ]
    widths = [max(len(str(row[i])) for row in [header, *lines]) for i in range(len(header))]
    for row in [header, *lines]:
        print("  ".join(f"{cell:<{w}}" for cell, w in zip(row, widths, strict=True)).rstrip())
    days = _plain(pricing.DAYS_PER_MONTH)
    print(f"TOTAL {len(rows)} pod(s) at 24 h/day x {days} days: {_money(total)} per month")
    return 0
