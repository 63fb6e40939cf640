"""How many decimals the API and the published files write: one rule, one owner.

The aggregates are stored as float4 (``real``); read as Python floats they carry the
binary noise of 24-bit mantissas (``61.254997``, ``0.93333334``). Sound level meters of
IEC 61672 class 1 are specified to a tenth of a decibel, so nothing below 0.01 dB is
information. The published files (``api.catalog.to_csv``) and the data routes (the
pydantic models of ``api.models``, hence JSON and CSV alike) both round here:

* levels (dB, dB(A), bands): 0.01 dB;
* ratios (coverage, 0..1): 4 decimals, i.e. 0.36 s of an hour;
* positions (WGS84 degrees): 1e-6 degree, about 0.1 m.

Rounding is Python's ``round`` of the float (nearest, ties to even on the binary value).
"""

from __future__ import annotations

LEVEL_DECIMALS = 2
RATIO_DECIMALS = 4
DEGREE_DECIMALS = 6

LEVEL_RULE = "rounded to 0.01 dB"
RATIO_RULE = "rounded to 4 decimals"


def _round(value: float | None, decimals: int) -> float | None:
    """``None`` (and NaN, a missing value in a pandas frame) pass through: no number to round."""
    if value is None or value != value:
        return value
    return round(float(value), decimals)


def level(value: float | None) -> float | None:
    """A level in dB as published: 0.01 dB."""
    return _round(value, LEVEL_DECIMALS)


def ratio(value: float | None) -> float | None:
    """A share in 0..1 as published: 4 decimals."""
    return _round(value, RATIO_DECIMALS)


def degrees(value: float | None) -> float | None:
    """A WGS84 coordinate as published: 1e-6 degree."""
    return _round(value, DEGREE_DECIMALS)
