"""Kubernetes resource quantities (``250m``, ``2``, ``512Mi``, ``1G``, ``1e3``). Pure."""

from __future__ import annotations

import decimal

SUFFIXES = {
    "n": decimal.Decimal("1e-9"),
    "u": decimal.Decimal("1e-6"),
    "m": decimal.Decimal("1e-3"),
    "": decimal.Decimal(1),
    "k": decimal.Decimal(10) ** 3,
    "M": decimal.Decimal(10) ** 6,
    "G": decimal.Decimal(10) ** 9,
    "T": decimal.Decimal(10) ** 12,
    "P": decimal.Decimal(10) ** 15,
    "E": decimal.Decimal(10) ** 18,
    "Ki": decimal.Decimal(2) ** 10,
    "Mi": decimal.Decimal(2) ** 20,
    "Gi": decimal.Decimal(2) ** 30,
    "Ti": decimal.Decimal(2) ** 40,
    "Pi": decimal.Decimal(2) ** 50,
    "Ei": decimal.Decimal(2) ** 60,
}


def parse(text: str | int | float) -> decimal.Decimal:
    """The quantity's value in base units; ValueError for anything else."""
    raw = str(text).strip()
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if suffix and raw.endswith(suffix):
            number, factor = raw[: -len(suffix)], SUFFIXES[suffix]
            break
    else:
        number, factor = raw, SUFFIXES[""]
    try:
        value = decimal.Decimal(number)
    except decimal.InvalidOperation:
        raise ValueError(f"{text!r} is not a quantity") from None
    if not value.is_finite() or value < 0:
        raise ValueError(f"{text!r} is not a non-negative quantity")
    return value * factor


def millicores(text: str | int | float) -> int:
    """CPU in millicores, rounded up as the scheduler does."""
    return int((parse(text) * 1000).to_integral_value(rounding=decimal.ROUND_CEILING))


def mebibytes(text: str | int | float) -> int:
    """Memory or storage in MiB, rounded up."""
    return int((parse(text) / SUFFIXES["Mi"]).to_integral_value(rounding=decimal.ROUND_CEILING))
