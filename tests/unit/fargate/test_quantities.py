"""Tests of Kubernetes quantity parsing: suffixes, exponents, rounding up, invalid input."""

from __future__ import annotations

import decimal
from collections.abc import Callable

import pytest

from vk_fargate.fargate import quantities

D = decimal.Decimal


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("2", D(2)),
        (2, D(2)),
        ("0", D(0)),
        ("250m", D("0.25")),
        ("1500m", D("1.5")),
        ("0.5", D("0.5")),
        (0.5, D("0.5")),
        (".5", D("0.5")),
        ("1.25", D("1.25")),
        ("1e3", D(1000)),
        ("1E3", D(1000)),
        ("2.5e-3", D("0.0025")),
        ("1k", D(1000)),
        ("1M", D(10**6)),
        ("1G", D(10**9)),
        ("1T", D(10**12)),
        ("1E", D(10**18)),  # exa, not an exponent
        ("1Ki", D(1024)),
        ("1Mi", D(2**20)),
        ("1Gi", D(2**30)),
        ("1.5Gi", D(3 * 2**29)),
        ("1Ti", D(2**40)),
        ("100n", D("1e-7")),
        ("3u", D("3e-6")),
        (" 64Mi ", D(64 * 2**20)),
    ],
)
def test_parse(text: str | int | float, value: decimal.Decimal) -> None:
    assert quantities.parse(text) == value


@pytest.mark.parametrize(
    ("text", "millis"),
    [
        ("250m", 250),
        ("1", 1000),
        (2, 2000),
        ("0.5", 500),
        ("1.5", 1500),
        ("0.1", 100),
        ("1e1", 10000),
        ("100m", 100),
        ("0", 0),
        # Rounded up to a whole millicore.
        ("0.0001", 1),
        ("1500u", 2),
        ("250.1m", 251),
        ("1001u", 2),
    ],
)
def test_millicores(text: str | int, millis: int) -> None:
    assert quantities.millicores(text) == millis


@pytest.mark.parametrize(
    ("text", "mib"),
    [
        ("512Mi", 512),
        ("1Gi", 1024),
        ("2Gi", 2048),
        ("0.5Gi", 512),
        ("1024Ki", 1),
        (str(2**20), 1),
        ("0", 0),
        # Rounded up to a whole MiB.
        ("1", 1),
        ("1Ki", 1),
        ("1025Ki", 2),
        ("1M", 1),  # 10^6 bytes = 0.95 MiB
        ("1G", 954),  # 10^9 bytes = 953.67 MiB
        ("128M", 123),  # 122.07 MiB
        ("1e9", 954),
        ("1Ti", 1024 * 1024),
    ],
)
def test_mebibytes(text: str, mib: int) -> None:
    assert quantities.mebibytes(text) == mib


@pytest.mark.parametrize(
    "text", ["", "abc", "Mi", "1.2.3", "1 ki", "1mi", "1e", "1Mib", "one", "Gi1", "1.5x"]
)
def test_invalid_quantities_are_value_errors(text: str) -> None:
    with pytest.raises(ValueError, match="is not a quantity"):
        quantities.parse(text)


@pytest.mark.parametrize("text", ["-1", "-250m", "-1Gi", -2, "NaN", "Infinity", "inf"])
def test_negative_and_non_finite_quantities_are_value_errors(text: str | int) -> None:
    with pytest.raises(ValueError, match="is not a non-negative quantity"):
        quantities.parse(text)


@pytest.mark.parametrize("fn", [quantities.millicores, quantities.mebibytes])
def test_the_unit_helpers_reject_what_parse_rejects(fn: Callable[[str], int]) -> None:
    with pytest.raises(ValueError):
        fn("-1")
    with pytest.raises(ValueError):
        fn("lots")
