"""Published values are rounded by one rule, the one ``q`` compares with, bit for bit.

The rule (``ngsi.mapping.published_round``) is PostgreSQL's ``round(x::numeric, n)`` of
the ``real``: its 6-significant-digit decimal, half away from zero. The temporal view
reads aggregates in binary (a ``real`` arrives as its exact float4 value) and rounds
whole columns with numpy; the per-entity path (sync, entity routes) reads text; ``q``
rounds in SQL. A 0.05 dB tie is where they could part (55.35 as float4 is 55.3499...,
60.25 is exact), so these tests check every kind of input against that rule, and the
rule against a real server.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import psycopg
from hypothesis import given, settings
from hypothesis import strategies as st

from ngsi.mapping import PUBLISHED_ROUNDING, _bands_objects, _coverages, _levels, bands_object, published_round
from ngsi.models import iso_z, iso_z_column
from sonopolis.bootstrap import RoleDsns

FLOAT4 = st.floats(min_value=-20.0, max_value=160.0, width=32, allow_nan=False)
TIES = st.integers(min_value=-200, max_value=1600).map(lambda k: float(np.float32(k / 10 + 0.05)))
COVERAGE_TIES = st.integers(min_value=0, max_value=9999).map(lambda k: float(np.float32(k / 10_000 + 0.00005)))


def _reference(x: float, ndigits: int) -> float:
    """The rule spelled out: the float4's decimal to 6 significant digits, half away from zero."""
    d = Decimal(f"{float(np.float32(x)):.6g}").quantize(Decimal(1).scaleb(-ndigits), rounding=ROUND_HALF_UP)
    return float(d) + 0.0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(FLOAT4, TIES), min_size=1, max_size=60))
def test_binary_and_text_float4_round_by_the_one_rule(values: list[float]) -> None:
    expected = [_reference(v, 1) for v in values]
    assert _levels(values) == expected  # exact float4 values, as a binary cursor returns them
    assert _levels([float(str(np.float32(v))) for v in values]) == expected  # their text, parsed
    assert [published_round(v, 1) for v in values] == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.floats(min_value=-0.5, max_value=1.5, width=32), COVERAGE_TIES), min_size=1, max_size=40))
def test_coverage_is_clamped_and_rounded_by_the_one_rule(values: list[float]) -> None:
    assert _coverages(values) == [_reference(min(1.0, max(0.0, v)), 4) for v in values]


def test_ties_go_half_up_on_the_decimal() -> None:
    # 60.25 is exact in binary (half-even would give 60.2); 59.05 and 45.65 are a hair
    # below as float4 (the binary value would give 59.0 and 45.6): all as PostgreSQL rounds them
    assert _levels([60.25, 59.05, 45.65, 70.15, 40.45, 63.35]) == [60.3, 59.1, 45.7, 70.2, 40.5, 63.4]
    assert _levels([-0.04, -0.05]) == [0.0, -0.1]  # no negative zero, half away from zero
    assert str(_levels([-0.04])[0]) == "0.0"


def test_missing_values_and_spectra() -> None:
    assert _levels([None, float("nan"), 55.25, 55.35]) == [None, None, 55.3, 55.4]
    spectra = [[50.04] * 30, None, [], [None] * 30, [41.26, None, float("nan")], [60.0] * 32]
    out = _bands_objects(spectra)
    assert out[0] == {k: 50.0 for k in out[0]} and len(out[0]) == 30
    assert out[1] is None and out[2] is None and out[3] is None  # absent, empty, all-NULL: no bands
    assert out[4] == {"25": 41.3}  # NULL and NaN bands left out
    assert len(out[5]) == 30  # longer than the band list: cut to it
    assert [bands_object(s) for s in spectra] == out  # one at a time says the same


def test_a_column_of_stamps_is_spelled_like_one_stamp() -> None:
    stamps = [datetime(2024, 3, 31, 0, 59, 59, 999_999, tzinfo=timezone.utc), datetime(1999, 12, 31, 23, 0, tzinfo=timezone.utc)]
    assert iso_z_column(stamps) == [iso_z(s) for s in stamps] == ["2024-03-31T00:59:59Z", "1999-12-31T23:00:00Z"]


def test_real_server_rounds_as_published(db: RoleDsns) -> None:
    """Every 0.05 tie from -20 to 160 dB and random reals, stored as real, read both ways,
    and rounded by the server with the expression ``q`` compares (``ngsi.selection``)."""
    rng = np.random.default_rng(7)
    ties = [k / 10 + 0.05 for k in range(-200, 1600)] + [60.249998, 60.250004, 59.049999]
    values = ties + [float(v) for v in rng.uniform(-20, 160, 20_000).astype(np.float32)]
    coverages = [k / 10_000 + 0.00005 for k in range(10_000)] + [-0.1, 1.2]
    rounding = PUBLISHED_ROUNDING.format("v", 1)
    with psycopg.connect(db.smart) as conn:
        query = f"SELECT v, {rounding} AS rounded FROM unnest(%s::real[]) WITH ORDINALITY AS t(v, i) ORDER BY i"  # noqa: S608
        text = conn.cursor().execute(query, (values,)).fetchall()
        binary = conn.cursor(binary=True).execute(query, (values,)).fetchall()
        spectra = conn.cursor(binary=True).execute("SELECT %s::real[]", (ties[:30],)).fetchall()
        spectra_text = conn.cursor().execute("SELECT %s::real[]", (ties[:30],)).fetchall()
        cov_sql = "least(greatest(v, 0::real), 1::real)"
        cov = conn.execute(
            f"SELECT v, {PUBLISHED_ROUNDING.format(cov_sql, 4)} FROM unnest(%s::real[]) WITH ORDINALITY AS t(v, i) ORDER BY i",  # noqa: S608
            (coverages,)).fetchall()
    assert [type(r[0]) for r in text[:1]] == [float]
    server = [r[1] for r in text]
    assert [r[1] for r in binary] == server
    assert _levels([r[0] for r in binary]) == _levels([r[0] for r in text]) == server
    assert _bands_objects(spectra[0]) == _bands_objects(spectra_text[0])
    assert list(_bands_objects(spectra[0])[0].values()) == server[:30]  # type: ignore[union-attr]
    assert _coverages([r[0] for r in cov]) == [r[1] for r in cov]
