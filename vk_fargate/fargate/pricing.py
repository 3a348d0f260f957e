"""What a Fargate pod costs, and what the same size costs on an always-on EC2 instance. Pure.

Why this exists: the seed chapter argues Fargate vs EC2 with three hand-made figures, and
two of them cannot both be right (Fargate cost is linear in hours, so 10 h/day costs
exactly twice 5 h/day). Users weighing Fargate need the arithmetic, done the way AWS
bills (``fargate-facts.md`` §7):

- per second, rounded up to the next whole second, with a one-minute minimum per run;
- on the provisioned size (``CapacityProvisioned``: the request + 256 MiB, rounded up to
  a table combination by ``sizing``), not on the request;
- vCPU-hours + GB-hours, plus ephemeral storage above the 20 GB included.

Money is ``decimal.Decimal`` throughout: rates have six significant decimals and a float
would make "10 h/day is twice 5 h/day" only approximately true. Nothing is rounded here;
callers round for display.

A month is 365.25 / 12 = 30.4375 days (``DAYS_PER_MONTH``): the mean calendar month over
leap years, so twelve "months" add up to a year. AWS's Pricing Calculator uses 730 hours
(365 x 24 / 12, ignoring leap days); ``monthly_ec2`` defaults to that figure so its result
matches the calculator, and callers comparing the two should pass the same month to both
(``costcli`` passes ``24 * DAYS_PER_MONTH`` = 730.5 h to ``monthly_ec2``).

Rates (``RATES``), Linux/x86, on-demand, USD. **Verify them before quoting**: AWS changes
prices, and only the us-east-1 Fargate rates come from ``fargate-facts.md`` (itself marked
"verify before quoting"). The eu-central-1 (Frankfurt) Fargate rates, and every EC2 and EBS
rate, are AWS's published list prices as we know them, not checked against the live price
list. ``merge_rates`` overrides any of them (``vk-fargate cost --rates FILE``).

The EC2 comparison uses the t3 family (burstable: a t3.medium sustains 20 % of each vCPU
without credits) and m5 (sustained CPU). EBS is gp3 per GB-month; a volume is billed for
the whole month whether or not its instance runs.
"""

from __future__ import annotations

import dataclasses
import decimal
import re
from collections.abc import Mapping
from typing import Any

from vk_fargate import errors
from vk_fargate.fargate import sizing

D = decimal.Decimal
Amount = decimal.Decimal | int

SECONDS_PER_HOUR = 3600
MINIMUM_SECONDS = 60  # Fargate bills at least one minute per run
DAYS_PER_MONTH = D("365.25") / 12  # 30.4375: see the module docstring
HOURS_PER_MONTH_AWS = 730  # AWS Pricing Calculator's month (8760 / 12)
STORAGE_INCLUDED_GB = 20
_STORAGE_INCLUDED = D(STORAGE_INCLUDED_GB)
DEFAULT_REGION = "us-east-1"

_CAPACITY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*vCPU\s+(\d+(?:\.\d+)?)\s*GB\s*$")


@dataclasses.dataclass(frozen=True)
class Instance:
    """An EC2 instance type for the always-on comparison."""

    vcpu: decimal.Decimal
    memory_gb: decimal.Decimal
    usd_per_hour: decimal.Decimal


@dataclasses.dataclass(frozen=True)
class Rates:
    """One region's prices. Field names are also the keys of a ``--rates`` file."""

    fargate_vcpu_hour: decimal.Decimal
    fargate_gb_hour: decimal.Decimal
    fargate_storage_gb_hour: decimal.Decimal
    ebs_gp3_gb_month: decimal.Decimal
    storage_included_gb: decimal.Decimal = _STORAGE_INCLUDED
    ec2: Mapping[str, Instance] = dataclasses.field(default_factory=dict)


def _instances(rows: dict[str, tuple[int, int, str]]) -> dict[str, Instance]:
    return {name: Instance(D(cpu), D(mem), D(usd)) for name, (cpu, mem, usd) in rows.items()}


RATES: dict[str, Rates] = {
    "us-east-1": Rates(
        fargate_vcpu_hour=D("0.04048"),
        fargate_gb_hour=D("0.004445"),
        fargate_storage_gb_hour=D("0.000111"),
        ebs_gp3_gb_month=D("0.08"),
        ec2=_instances(
            {
                "t3.small": (2, 2, "0.0208"),
                "t3.medium": (2, 4, "0.0416"),
                "t3.large": (2, 8, "0.0832"),
                "t3.xlarge": (4, 16, "0.1664"),
                "t3.2xlarge": (8, 32, "0.3328"),
                "m5.large": (2, 8, "0.096"),
                "m5.xlarge": (4, 16, "0.192"),
                "m5.2xlarge": (8, 32, "0.384"),
            }
        ),
    ),
    "eu-central-1": Rates(
        fargate_vcpu_hour=D("0.04656"),
        fargate_gb_hour=D("0.00511"),
        fargate_storage_gb_hour=D("0.000127"),
        ebs_gp3_gb_month=D("0.0952"),
        ec2=_instances(
            {
                "t3.small": (2, 2, "0.024"),
                "t3.medium": (2, 4, "0.048"),
                "t3.large": (2, 8, "0.096"),
                "t3.xlarge": (4, 16, "0.192"),
                "t3.2xlarge": (8, 32, "0.384"),
                "m5.large": (2, 8, "0.115"),
                "m5.xlarge": (4, 16, "0.23"),
                "m5.2xlarge": (8, 32, "0.46"),
            }
        ),
    ),
}


# --- rates ---------------------------------------------------------------------------------


def _decimal(value: Any, where: str) -> decimal.Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str | decimal.Decimal):
        raise errors.ConfigError(f"{where}: expected a number, got {value!r}")
    try:
        number = D(str(value))  # str() so that a YAML float 0.04656 stays 0.04656
    except decimal.InvalidOperation:
        raise errors.ConfigError(f"{where}: {value!r} is not a number") from None
    if not number.is_finite() or number < 0:
        raise errors.ConfigError(f"{where}: {value!r} is not a non-negative number")
    return number


def _merge_instances(base: Mapping[str, Instance], given: Any, where: str) -> dict[str, Instance]:
    if not isinstance(given, Mapping):
        raise errors.ConfigError(f"{where}: expected a mapping of instance types")
    merged = dict(base)
    names = {f.name for f in dataclasses.fields(Instance)}
    for name, fields in given.items():
        at = f"{where}.{name}"
        if not isinstance(fields, Mapping):
            raise errors.ConfigError(f"{at}: expected a mapping with {sorted(names)}")
        unknown = set(fields) - names
        if unknown:
            raise errors.ConfigError(
                f"{at}: unknown keys {sorted(unknown)}; known: {sorted(names)}"
            )
        current = dataclasses.asdict(merged[name]) if name in merged else {}
        current.update({k: _decimal(v, f"{at}.{k}") for k, v in fields.items()})
        missing = names - set(current)
        if missing:
            raise errors.ConfigError(f"{at}: a new instance type needs {sorted(missing)}")
        merged[str(name)] = Instance(**current)
    return merged


_REQUIRED = {"fargate_vcpu_hour", "fargate_gb_hour", "fargate_storage_gb_hour", "ebs_gp3_gb_month"}


def merge_rates(table: Mapping[str, Rates], overrides: Mapping[str, Any]) -> dict[str, Rates]:
    """``table`` with ``overrides`` (region -> field -> value, as read from YAML) applied.

    A known region takes any subset of fields; ``ec2`` merges per instance type. A new
    region needs every Fargate rate and ``ebs_gp3_gb_month``. The input is not modified.
    """
    merged = dict(table)
    fields = {f.name for f in dataclasses.fields(Rates)}
    for region, given in overrides.items():
        where = f"rates[{region}]"
        if not isinstance(given, Mapping):
            raise errors.ConfigError(f"{where}: expected a mapping of rates")
        unknown = set(given) - fields
        if unknown:
            raise errors.ConfigError(
                f"{where}: unknown keys {sorted(unknown)}; known: {sorted(fields)}"
            )
        base = merged.get(str(region))
        values: dict[str, Any] = (
            {f.name: getattr(base, f.name) for f in dataclasses.fields(Rates)} if base else {}
        )
        for key, value in given.items():
            if key == "ec2":
                values["ec2"] = _merge_instances(values.get("ec2", {}), value, f"{where}.ec2")
            else:
                values[key] = _decimal(value, f"{where}.{key}")
        missing = _REQUIRED - set(values)
        if missing:
            raise errors.ConfigError(f"{where}: a new region needs {sorted(missing)}")
        merged[str(region)] = Rates(**values)
    return merged


def rates_for(table: Mapping[str, Rates], region: str) -> Rates:
    try:
        return table[region]
    except KeyError:
        raise errors.ConfigError(
            f"no rates for region {region!r} (known: {', '.join(sorted(table))}); "
            "give them with --rates FILE"
        ) from None


# --- Fargate ------------------------------------------------------------------------------


def fargate_hourly(
    vcpu: Amount, memory_gb: Amount, storage_gb: Amount, rates: Rates
) -> decimal.Decimal:
    """USD per hour of one running pod of this provisioned size."""
    extra_storage = max(D(0), D(storage_gb) - rates.storage_included_gb)
    return (
        D(vcpu) * rates.fargate_vcpu_hour
        + D(memory_gb) * rates.fargate_gb_hour
        + extra_storage * rates.fargate_storage_gb_hour
    )


def billed_seconds(seconds: Amount) -> decimal.Decimal:
    """Per-second billing: rounded up to a whole second, at least one minute per run."""
    if D(seconds) < 0:
        raise ValueError(f"a run cannot last {seconds} seconds")
    whole = D(seconds).to_integral_value(rounding=decimal.ROUND_CEILING)
    return max(whole, D(MINIMUM_SECONDS))


def fargate_cost(
    vcpu: Amount, memory_gb: Amount, storage_gb: Amount, seconds: Amount, rates: Rates
) -> decimal.Decimal:
    """USD for one run of ``seconds`` on the provisioned size (vCPU, GB, ephemeral GB)."""
    hourly = fargate_hourly(vcpu, memory_gb, storage_gb, rates)
    return hourly * billed_seconds(seconds) / SECONDS_PER_HOUR


def monthly_fargate(
    vcpu: Amount,
    memory_gb: Amount,
    storage_gb: Amount,
    hours_per_day: Amount,
    rates: Rates,
    days: Amount = DAYS_PER_MONTH,
) -> decimal.Decimal:
    """USD per month for one pod run once a day for ``hours_per_day`` (0 h: never started)."""
    hours = D(hours_per_day)
    if not 0 <= hours <= 24:
        raise ValueError(f"hours per day must be between 0 and 24, not {hours_per_day}")
    if hours == 0:
        return D(0)
    per_day = fargate_cost(vcpu, memory_gb, storage_gb, hours * SECONDS_PER_HOUR, rates)
    return per_day * D(days)


def break_even_hours_per_day(
    vcpu: Amount,
    memory_gb: Amount,
    storage_gb: Amount,
    monthly_usd: Amount,
    rates: Rates,
    days: Amount = DAYS_PER_MONTH,
) -> decimal.Decimal:
    """Hours a day at which the pod costs ``monthly_usd`` a month (may exceed 24)."""
    hourly = fargate_hourly(vcpu, memory_gb, storage_gb, rates)
    return D(monthly_usd) / (hourly * D(days))


# --- EC2 ----------------------------------------------------------------------------------


def monthly_ec2(
    instance: str, storage_gb: Amount, rates: Rates, hours: Amount = HOURS_PER_MONTH_AWS
) -> decimal.Decimal:
    """USD per month for an on-demand instance running ``hours`` plus a gp3 volume."""
    try:
        hourly = rates.ec2[instance].usd_per_hour
    except KeyError:
        raise errors.ConfigError(
            f"no rate for EC2 instance {instance!r} (known: {', '.join(sorted(rates.ec2))}); "
            "add it with --rates FILE"
        ) from None
    return hourly * D(hours) + D(storage_gb) * rates.ebs_gp3_gb_month


def ec2_for(vcpu: Amount, memory_gb: Amount, rates: Rates) -> str | None:
    """The cheapest instance type with at least ``vcpu`` and ``memory_gb`` (None: none)."""
    fitting = [
        (spec.usd_per_hour, name)
        for name, spec in rates.ec2.items()
        if spec.vcpu >= D(vcpu) and spec.memory_gb >= D(memory_gb)
    ]
    return min(fitting)[1] if fitting else None


# --- sizes --------------------------------------------------------------------------------


def parse_capacity(text: str) -> sizing.Size:
    """``CapacityProvisioned`` text (``0.25vCPU 0.5GB``) as a Size; ValueError otherwise."""
    match = _CAPACITY.match(text)
    if match is None:
        raise ValueError(f"not a CapacityProvisioned value: {text!r}")
    vcpu, memory = D(match[1]), D(match[2])
    return sizing.Size(int(vcpu * 1000), int(memory * sizing.GIB))


def vcpu_of(size: sizing.Size) -> decimal.Decimal:
    return D(size.vcpu_millis) / 1000


def memory_gb_of(size: sizing.Size) -> decimal.Decimal:
    return D(size.mem_mib) / sizing.GIB


def whatif_size(
    vcpu: Amount, memory_gb: Amount, storage_gb: Amount, *, provisioned: bool = False
) -> sizing.Size:
    """The size Fargate would bill for a what-if.

    By default the figures are a pod's *request*: Fargate adds 256 MiB and rounds up, so
    2 vCPU + 4 GB becomes ``2vCPU 5GB``. With ``provisioned`` they are the billed size
    itself and must be a table combination. Storage is GB of ephemeral storage, 20 at least.
    """
    millis = int((D(vcpu) * 1000).to_integral_value(rounding=decimal.ROUND_CEILING))
    mib = int((D(memory_gb) * sizing.GIB).to_integral_value(rounding=decimal.ROUND_CEILING))
    storage_mib = int((D(storage_gb) * sizing.GIB).to_integral_value(decimal.ROUND_CEILING))
    if provisioned:
        wanted = sizing.Size(millis, mib)
        if wanted not in set(sizing.combinations()):
            raise errors.ConfigError(
                f"{wanted.capacity_provisioned} is not a Fargate size; see the table in "
                "fargate-facts.md §1, or drop --provisioned to price it as a request"
            )
        storage = max(sizing.EPHEMERAL_DEFAULT_GIB, -(-storage_mib // sizing.GIB))
        if storage > sizing.EPHEMERAL_MAX_GIB:
            raise errors.ConfigError(
                f"ephemeral storage {storage} GB is over the {sizing.EPHEMERAL_MAX_GIB} GB maximum"
            )
        return dataclasses.replace(wanted, ephemeral_gib=storage)
    requests = {"cpu": f"{millis}m", "memory": f"{mib}Mi", "ephemeral-storage": f"{storage_mib}Mi"}
    spec = {"containers": [{"name": "whatif", "resources": {"requests": requests}}]}
    try:
        return sizing.size(spec)
    except sizing.TooLarge as exc:
        raise errors.ConfigError(str(exc)) from None
