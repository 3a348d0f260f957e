"""Fargate pricing, checked against hand arithmetic (shown in the comments).

Rates used: us-east-1 from fargate-facts.md §7 ($0.04048 per vCPU-hour, $0.004445 per
GB-hour, $0.000111 per GB-hour of storage over 20 GB) and the built-in eu-central-1 rates
($0.04656, $0.00511, $0.000127; t3.medium $0.048/h; gp3 $0.0952 per GB-month). Expected
values are written out as literals, not computed with the code under test.
"""

from __future__ import annotations

import decimal

import pytest

from vk_fargate import errors
from vk_fargate.fargate import pricing, sizing

D = decimal.Decimal
US = pricing.RATES["us-east-1"]
FRANKFURT = pricing.RATES["eu-central-1"]


def test_us_east_1_rates_are_the_facts_file_rates() -> None:
    assert US.fargate_vcpu_hour == D("0.04048")
    assert US.fargate_gb_hour == D("0.004445")
    assert US.fargate_storage_gb_hour == D("0.000111")
    assert US.storage_included_gb == 20


def test_a_month_is_a_mean_calendar_month() -> None:
    # 365.25 days / 12 = 30.4375 days = 730.5 hours.
    assert D("30.4375") == pricing.DAYS_PER_MONTH
    assert D("730.5") == 24 * pricing.DAYS_PER_MONTH


# --- per-second billing and the one-minute minimum -------------------------------------------


def test_hourly_rate_of_2_vcpu_4_gb() -> None:
    # 2 x 0.04048 = 0.08096; 4 x 0.004445 = 0.01778; sum 0.09874 $/h (20 GB: no storage).
    assert pricing.fargate_hourly(2, 4, 20, US) == D("0.09874")


def test_billing_is_per_second() -> None:
    # 90 s of 0.09874 $/h: 0.09874 x 90 / 3600 = 0.09874 / 40 = 0.0024685.
    assert pricing.fargate_cost(2, 4, 20, 90, US) == D("0.0024685")
    # One hour is the hourly rate; 1 h + 1 s is one more second, not one more minute.
    assert pricing.fargate_cost(2, 4, 20, 3600, US) == D("0.09874")
    assert pricing.fargate_cost(2, 4, 20, 3601, US) == D("0.09874") * 3601 / 3600


def test_partial_seconds_round_up_to_the_next_second() -> None:
    # 60.2 s bills 61 s: 0.09874 x 61 / 3600.
    assert pricing.billed_seconds(D("60.2")) == 61
    assert pricing.fargate_cost(2, 4, 20, D("60.2"), US) == D("0.09874") * 61 / 3600


@pytest.mark.parametrize("seconds", [0, 1, 10, D("59.5"), 60])
def test_a_short_run_bills_one_minute(seconds: int | D) -> None:
    # A 10 s pod bills 60 s: 0.09874 / 60 = 0.0016456666... $ (not 0.09874 / 360).
    assert pricing.billed_seconds(seconds) == 60
    assert pricing.fargate_cost(2, 4, 20, seconds, US) == D("0.09874") / 60


def test_a_negative_duration_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot last"):
        pricing.fargate_cost(2, 4, 20, -1, US)


# --- storage --------------------------------------------------------------------------------


def test_storage_above_20_gb_is_billed() -> None:
    # 30 GB: 10 GB extra x 0.000111 = 0.00111 $/h on top of 0.09874 -> 0.09985 $/h.
    assert pricing.fargate_hourly(2, 4, 30, US) == D("0.09985")
    # 175 GB (the maximum): 155 x 0.000111 = 0.017205 -> 0.115945 $/h.
    assert pricing.fargate_hourly(2, 4, 175, US) == D("0.115945")


@pytest.mark.parametrize("storage", [0, 10, 20])
def test_storage_up_to_20_gb_is_included(storage: int) -> None:
    assert pricing.fargate_hourly(2, 4, storage, US) == D("0.09874")


# --- months and linearity -------------------------------------------------------------------


def test_monthly_is_hourly_times_hours_times_days() -> None:
    # 0.25vCPU 0.5GB: 0.25 x 0.04048 + 0.5 x 0.004445 = 0.01012 + 0.0022225 = 0.0123425 $/h;
    # 24 h/day x 30.4375 days = 730.5 h -> 0.0123425 x 730.5 = 9.01619625 $.
    assert pricing.monthly_fargate(D("0.25"), D("0.5"), 20, 24, US) == D("9.01619625")


@pytest.mark.parametrize("hours", [1, 3, 5, 8, 12])
def test_cost_is_linear_in_hours(hours: int) -> None:
    once = pricing.monthly_fargate(2, 5, 30, hours, FRANKFURT)
    assert pricing.monthly_fargate(2, 5, 30, 2 * hours, FRANKFURT) == 2 * once


def test_each_daily_run_bills_at_least_a_minute() -> None:
    # 0.001 h/day = 3.6 s a day, billed 60 s: 0.09874 / 60 x 30.4375 per month, which is
    # more than 0.001 x 0.09874 x 30.4375 = 0.0030054...
    monthly = pricing.monthly_fargate(2, 4, 20, D("0.001"), US)
    assert monthly == D("0.09874") * 60 / 3600 * D("30.4375")
    assert monthly > D("0.001") * D("0.09874") * D("30.4375")


def test_zero_hours_a_day_costs_nothing_and_more_than_24_is_refused() -> None:
    assert pricing.monthly_fargate(2, 4, 20, 0, US) == 0
    with pytest.raises(ValueError, match="between 0 and 24"):
        pricing.monthly_fargate(2, 4, 20, 25, US)


def test_monthly_ec2() -> None:
    # t3.medium us-east-1: 0.0416 x 730 = 30.368; 30 GB gp3 x 0.08 = 2.40 -> 32.768 $.
    assert pricing.monthly_ec2("t3.medium", 30, US) == D("32.768")
    # A 730.5 h month: 0.0416 x 730.5 = 30.3888 + 2.40 = 32.7888.
    assert pricing.monthly_ec2("t3.medium", 30, US, hours=D("730.5")) == D("32.7888")
    with pytest.raises(errors.ConfigError, match=r"no rate for EC2 instance 'x9\.huge'"):
        pricing.monthly_ec2("x9.huge", 30, US)


@pytest.mark.parametrize(
    ("vcpu", "memory", "instance"),
    [(2, 4, "t3.medium"), (1, 1, "t3.small"), (2, 5, "t3.large"), (4, 8, "t3.xlarge")],
)
def test_cheapest_covering_instance(vcpu: int, memory: int, instance: str) -> None:
    assert pricing.ec2_for(vcpu, memory, US) == instance


def test_no_instance_covers_a_huge_size() -> None:
    assert pricing.ec2_for(16, 64, US) is None


# --- the seed's Frankfurt example -----------------------------------------------------------


def test_seed_frankfurt_example_as_a_request() -> None:
    # "2 CPU / 4 GB / 30 GB disk" as a pod request: 4096 + 256 MiB = 4352 MiB -> 2vCPU 5GB.
    size = pricing.whatif_size(2, 4, 30)
    assert size.capacity_provisioned == "2vCPU 5GB"
    assert size.ephemeral_gib == 30
    # 2 x 0.04656 = 0.09312; 5 x 0.00511 = 0.02555; 10 x 0.000127 = 0.00127 -> 0.11994 $/h.
    assert pricing.fargate_hourly(2, 5, 30, FRANKFURT) == D("0.11994")
    # 5 h/day: 0.11994 x 5 = 0.5997 $/day x 30.4375 = 18.25336875 $/month.
    five = pricing.monthly_fargate(2, 5, 30, 5, FRANKFURT)
    assert five == D("18.25336875")
    # 10 h/day: 1.1994 $/day x 30.4375 = 36.5067375 $/month: exactly twice.
    ten = pricing.monthly_fargate(2, 5, 30, 10, FRANKFURT)
    assert ten == D("36.5067375")
    assert ten == 2 * five


def test_seed_frankfurt_example_as_the_billed_size() -> None:
    # Priced as 2vCPU 4GB (what the seed seems to have done): 0.09312 + 4 x 0.00511
    # (0.02044) + 0.00127 = 0.11483 $/h.
    size = pricing.whatif_size(2, 4, 30, provisioned=True)
    assert size.capacity_provisioned == "2vCPU 4GB"
    five = pricing.monthly_fargate(2, 4, 30, 5, FRANKFURT)
    ten = pricing.monthly_fargate(2, 4, 30, 10, FRANKFURT)
    # 0.11483 x 5 x 30.4375 = 17.475690625; x 10: 34.95138125.
    assert five == D("17.475690625")
    assert ten == D("34.95138125")
    assert ten == 2 * five
    # The seed's "$35/month at 10 h/day" matches to the dollar; its "$10/month at 5 h/day"
    # does not: the rates give about $17.48, and $10 would take 10 / (0.11483 x 30.4375)
    # = 2.86 h/day.
    assert round(ten) == 35
    assert round(five) == 17
    hours_for_ten_dollars = pricing.break_even_hours_per_day(2, 4, 30, 10, FRANKFURT)
    assert D("2.86") < hours_for_ten_dollars < D("2.87")


def test_seed_frankfurt_ec2_comparison() -> None:
    # t3.medium (2 vCPU, 4 GiB) on demand: 0.048 x 730 = 35.04; 30 GB gp3 x 0.0952 = 2.856
    # -> 37.896 $/month, not the seed's $21 (which is below the instance alone).
    assert pricing.ec2_for(2, 4, FRANKFURT) == "t3.medium"
    assert pricing.monthly_ec2("t3.medium", 30, FRANKFURT) == D("37.896")


# --- CapacityProvisioned ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "millis", "mib"),
    [
        ("0.25vCPU 0.5GB", 250, 512),
        ("0.5vCPU 1GB", 500, 1024),
        ("2vCPU 4GB", 2000, 4096),
        ("2vCPU 9GB", 2000, 9216),
        ("16vCPU 120GB", 16000, 122880),
        (" 1vCPU  2GB ", 1000, 2048),
    ],
)
def test_parse_capacity_provisioned(text: str, millis: int, mib: int) -> None:
    assert pricing.parse_capacity(text) == sizing.Size(millis, mib)


def test_parse_reads_back_every_combination() -> None:
    for size in sizing.combinations():
        assert pricing.parse_capacity(size.capacity_provisioned) == size


@pytest.mark.parametrize(
    "text", ["", "2vCPU", "2 4", "2vCPU 4GiB", "-1vCPU 2GB", "2vcpu 4gb", "LoggingDisabled"]
)
def test_parse_refuses_other_text(text: str) -> None:
    with pytest.raises(ValueError, match="not a CapacityProvisioned value"):
        pricing.parse_capacity(text)


# --- what-if sizing -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vcpu", "memory", "expected"),
    [
        # 512 + 256 = 768 MiB > 0.5 GB -> 0.25vCPU 1GB.
        (D("0.25"), D("0.5"), "0.25vCPU 1GB"),
        # 1 vCPU + 8 GB: 8448 MiB > 8 GB, and 1 vCPU tops out at 8 -> 2vCPU 9GB (facts §1).
        (1, 8, "2vCPU 9GB"),
        # 3.75 GB + 256 MiB = 4096 MiB exactly -> fits 2vCPU 4GB.
        (2, D("3.75"), "2vCPU 4GB"),
        (2, 4, "2vCPU 5GB"),
    ],
)
def test_whatif_request_gets_overhead_and_rounding(
    vcpu: int | D, memory: int | D, expected: str
) -> None:
    assert pricing.whatif_size(vcpu, memory, 20).capacity_provisioned == expected


def test_whatif_storage_has_a_20_gb_floor_and_a_175_gb_ceiling() -> None:
    assert pricing.whatif_size(2, 4, 5).ephemeral_gib == 20
    assert pricing.whatif_size(2, 4, 5, provisioned=True).ephemeral_gib == 20
    with pytest.raises(errors.ConfigError, match="175"):
        pricing.whatif_size(2, 4, 176)
    with pytest.raises(errors.ConfigError, match="175"):
        pricing.whatif_size(2, 4, 176, provisioned=True)


def test_whatif_provisioned_must_be_a_fargate_size() -> None:
    with pytest.raises(errors.ConfigError, match="2vCPU 3GB is not a Fargate size"):
        pricing.whatif_size(2, 3, 20, provisioned=True)


def test_whatif_too_large_is_a_config_error() -> None:
    # 120 GB + 256 MiB does not fit the largest size, 16vCPU 120GB.
    with pytest.raises(errors.ConfigError, match="largest Fargate size"):
        pricing.whatif_size(16, 120, 20)


# --- rate overrides -------------------------------------------------------------------------


def test_override_one_rate_keeps_the_others_and_the_builtin_table() -> None:
    merged = pricing.merge_rates(pricing.RATES, {"us-east-1": {"fargate_vcpu_hour": "0.05"}})
    assert merged["us-east-1"].fargate_vcpu_hour == D("0.05")
    assert merged["us-east-1"].fargate_gb_hour == D("0.004445")
    assert merged["eu-central-1"] == FRANKFURT
    assert pricing.RATES["us-east-1"].fargate_vcpu_hour == D("0.04048")
    # 2 x 0.05 + 4 x 0.004445 = 0.1 + 0.01778 = 0.11778 $/h.
    assert pricing.fargate_hourly(2, 4, 20, merged["us-east-1"]) == D("0.11778")


def test_yaml_floats_keep_their_decimal_digits() -> None:
    merged = pricing.merge_rates(pricing.RATES, {"us-east-1": {"fargate_gb_hour": 0.00511}})
    assert merged["us-east-1"].fargate_gb_hour == D("0.00511")


def test_override_adds_a_region_and_an_instance() -> None:
    merged = pricing.merge_rates(
        pricing.RATES,
        {
            "eu-west-1": {
                "fargate_vcpu_hour": "0.04048",
                "fargate_gb_hour": "0.004445",
                "fargate_storage_gb_hour": "0.000111",
                "ebs_gp3_gb_month": "0.088",
                "ec2": {"t3.medium": {"vcpu": 2, "memory_gb": 4, "usd_per_hour": "0.0456"}},
            },
            "us-east-1": {"ec2": {"t3.medium": {"usd_per_hour": "0.03"}}},
        },
    )
    ireland = merged["eu-west-1"]
    assert ireland.storage_included_gb == 20
    # 0.0456 x 730 = 33.288; 30 x 0.088 = 2.64 -> 35.928.
    assert pricing.monthly_ec2("t3.medium", 30, ireland) == D("35.928")
    # The us-east-1 t3.medium keeps its size, takes the new price; other types stay.
    assert merged["us-east-1"].ec2["t3.medium"] == pricing.Instance(D(2), D(4), D("0.03"))
    assert merged["us-east-1"].ec2["t3.large"] == US.ec2["t3.large"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"us-east-1": {"vcpu": "1"}}, "unknown keys"),
        ({"us-east-1": {"fargate_vcpu_hour": "cheap"}}, "not a number"),
        ({"us-east-1": {"fargate_vcpu_hour": -1}}, "non-negative"),
        ({"us-east-1": {"fargate_vcpu_hour": True}}, "expected a number"),
        ({"us-east-1": "0.05"}, "expected a mapping"),
        ({"ap-south-1": {"fargate_vcpu_hour": "0.04"}}, "a new region needs"),
        ({"us-east-1": {"ec2": {"z1.big": {"usd_per_hour": "1"}}}}, "a new instance type"),
        ({"us-east-1": {"ec2": {"t3.medium": {"price": "1"}}}}, "unknown keys"),
    ],
)
def test_bad_overrides_are_config_errors(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(errors.ConfigError, match=message):
        pricing.merge_rates(pricing.RATES, overrides)


def test_unknown_region_names_the_known_ones() -> None:
    with pytest.raises(errors.ConfigError, match="eu-central-1, us-east-1"):
        pricing.rates_for(pricing.RATES, "mars-1")
