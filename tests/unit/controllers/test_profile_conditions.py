"""The profile's VpcDnsReady condition from an AWS verdict, with plain values."""

from __future__ import annotations

from vk_fargate.aws import profilecheck
from vk_fargate.controllers import profiles

OTHER = {"type": "Other", "status": "True"}


def _dns(conditions: list[dict[str, str]]) -> dict[str, str]:
    return next(c for c in conditions if c["type"] == profiles.DNS_CONDITION)


def test_dns_off_makes_the_condition_false_with_the_warnings() -> None:
    verdict = profilecheck.Verdict(None, ("VPC vpc-1 has enableDnsSupport off",), ("vpc-1",))
    found = profiles.dns_conditions(verdict, [OTHER])
    assert OTHER in found
    dns = _dns(found)
    assert (dns["status"], dns["reason"]) == ("False", "VpcDnsDisabled")
    assert dns["message"] == "VPC vpc-1 has enableDnsSupport off"


def test_the_transition_time_stays_while_the_status_does() -> None:
    on = profilecheck.Verdict(None, (), ("vpc-1",))
    first = profiles.dns_conditions(on, [])
    stamped = [{**_dns(first), "lastTransitionTime": "2026-01-01T00:00:00Z"}]
    assert _dns(profiles.dns_conditions(on, stamped))["lastTransitionTime"] == (
        "2026-01-01T00:00:00Z"
    )
    off = profilecheck.Verdict(None, ("off",), ("vpc-1",))
    assert _dns(profiles.dns_conditions(off, stamped))["lastTransitionTime"] != (
        "2026-01-01T00:00:00Z"
    )


def test_no_vpc_checked_means_no_dns_condition() -> None:
    stale = [OTHER, {"type": profiles.DNS_CONDITION, "status": "False"}]
    assert profiles.dns_conditions(profilecheck.Verdict(None), stale) == [OTHER]
