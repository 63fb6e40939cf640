"""The column-form conversions publish what the per-value text path publishes, bit for bit.

The temporal view reads aggregates in binary (a ``real`` arrives as its exact float4
value) and rounds whole columns with numpy; the per-entity path (sync, entity routes)
rounds one value at a time with Python's ``round`` on the text PostgreSQL prints. A
0.05 dB tie is where the two could part (55.35 as float4 is 55.3499...), so these
tests check every kind of input against that reference, on a real server too.
"""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import psycopg
from hypothesis import given, settings
from hypothesis import strategies as st

from ngsi.mapping import _bands_objects, _coverages, _levels, bands_object
from ngsi.models import iso_z, iso_z_column
from sonopolis.bootstrap import RoleDsns

FLOAT4 = st.floats(min_value=-20.0, max_value=160.0, width=32, allow_nan=False)
TIES = st.integers(min_value=0, max_value=1600).map(lambda k: float(np.float32(k / 10 + 0.05)))


def _text_reference(x: float, ndigits: int) -> float:
    """What the text protocol gives: the float4's shortest decimal, parsed, then round()."""
    return round(float(str(np.float32(x))), ndigits)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(FLOAT4, TIES), min_size=1, max_size=60))
def test_binary_float4_rounds_like_its_text(values: list[float]) -> None:
    expected = [_text_reference(v, 1) for v in values]
    assert _levels(values) == expected  # exact float4 values, as a binary cursor returns them
    assert _levels([float(str(np.float32(v))) for v in values]) == expected  # their text, parsed


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=-0.5, max_value=1.5, width=32), min_size=1, max_size=40))
def test_coverage_is_clamped_and_rounded_like_its_text(values: list[float]) -> None:
    assert _coverages(values) == [_text_reference(min(1.0, max(0.0, v)), 4) for v in values]


def test_missing_values_and_spectra() -> None:
    assert _levels([None, float("nan"), 55.25, 55.35]) == [None, None, 55.2, 55.4]
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


def test_real_server_binary_and_text_reads_publish_the_same(db: RoleDsns) -> None:
    """Every 0.05 tie from 0 to 160 dB, stored as real, read both ways."""
    ties = [k / 10 + 0.05 for k in range(1600)]
    with psycopg.connect(db.smart) as conn:
        query = "SELECT unnest(%s::real[]) AS v, %s::real[] AS spectrum"
        text = conn.cursor().execute(query, (ties, ties[:30])).fetchall()
        binary = conn.cursor(binary=True).execute(query, (ties, ties[:30])).fetchall()
    assert [type(r[0]) for r in text[:1]] == [float]
    assert _levels([r[0] for r in binary]) == _levels([r[0] for r in text]) == [round(r[0], 1) for r in text]
    assert _bands_objects([binary[0][1]]) == _bands_objects([text[0][1]])
