"""The temporal view's fast path: same instances as the per-bucket models, read along the primary key.

The temporal route builds its instances column by column, without a pydantic model per
bucket; these tests pin that it still says exactly what the per-bucket entities (built
through ``NoiseLevelObserved``) say, NULLs, NaNs, rounding ties and daily Lden included,
and that ``lastN`` reads only the rows it returns (plan shape, never timing).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta, timezone
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from ngsi.mapping import PERIODS
from ngsi.models import MEASURED_ATTRS
from ngsi.query import TimeRange
from ngsi.selection import Selection
from ngsi.temporal import temporal_instances_sql, temporal_presence_sql
from sonopolis.bootstrap import RoleDsns
from tests.ngsi import seed

pytestmark = pytest.mark.anyio

T0 = datetime(2024, 6, 10, 0, 0, tzinfo=timezone.utc)
NOISE = "NoiseLevelObserved"
STATIC = ("location", "refDevice", "sonometerClass", "aggregationPeriod")


@pytest.fixture
async def api(db: RoleDsns) -> AsyncIterator[httpx.AsyncClient]:
    seed.migrate(db.smart)
    with psycopg.connect(db.smart) as conn:
        seed.add_sensors(conn)
        seed.add_aggregates(conn, "levels_1min", T0, timedelta(minutes=1), 60)
        seed.add_aggregates(conn, "levels_1h", T0, timedelta(hours=1), 24)
        seed.add_aggregates(conn, "levels_1d", datetime(2024, 6, 9, 22, tzinfo=timezone.utc), timedelta(days=1), 2)
        seed.add_lden(conn, date(2024, 6, 10))
        # the awkward rows: missing and NaN levels, spectra partly or wholly missing,
        # float4 values on a 0.05 tie (55.25 is exact in binary, 55.35 is not)
        for minute, setting in (
            (3, "laeq = NULL"), (4, "laeq = 'NaN', lamax = NULL"), (5, "bands = array_fill(NULL::real, ARRAY[30])"),
            (6, "bands[2] = NULL, bands[7] = 'NaN'"), (7, "laeq = 55.25, la50 = 55.35"),
            (8, "bands = NULL, car_horn = 0"),
        ):
            conn.execute(f"UPDATE smart.levels_1min SET {setting} WHERE sensor_id = 'se-jacquard' AND bucket = %s",
                         (T0 + timedelta(minutes=minute),))
    async with seed.context_source(db.smart, max_page=200) as client:
        yield client


def _from_buckets(series_id: str, buckets: list[dict[str, Any]], temporal_values: bool) -> dict[str, Any]:
    """The temporal entity as the spec defines it, assembled from per-bucket entities."""
    buckets = sorted(buckets, key=lambda e: e["dateObservedFrom"]["value"]["@value"])
    out: dict[str, Any] = {"id": series_id, "type": NOISE}
    out.update({name: buckets[0][name] for name in STATIC if name in buckets[0]})
    for name in MEASURED_ATTRS:
        instances = [b[name] for b in buckets if name in b]
        if not instances:
            continue
        if temporal_values:
            out[name] = {"type": "Property", "values": [[i["value"], i["observedAt"]] for i in instances]}
            if "unitCode" in instances[0]:
                out[name]["unitCode"] = instances[0]["unitCode"]
        else:
            out[name] = instances
    return out


@pytest.mark.parametrize("code", ["PT1M", "PT1H", "P1D"])
async def test_temporal_instances_equal_the_per_bucket_entities(api: httpx.AsyncClient, code: str) -> None:
    series_id = f"urn:ngsi-ld:NoiseLevelObserved:se-jacquard:{code}"
    r = await api.get("/ngsi-ld/v1/entities", params={"idPattern": f"^{series_id}:.*", "limit": "200"})
    assert r.status_code == 200
    buckets = r.json()
    assert len(buckets) == {"PT1M": 60, "PT1H": 24, "P1D": 2}[code]
    for temporal_values in (False, True):
        params = {"id": series_id, "timerel": "after", "timeAt": "2000-01-01T00:00:00Z"}
        if temporal_values:
            params["options"] = "temporalValues"
        r = await api.get("/ngsi-ld/v1/temporal/entities", params=params)
        assert r.status_code == 200, r.text
        (entity,) = r.json()
        expected = _from_buckets(series_id, buckets, temporal_values)
        assert entity == expected
        assert list(entity) == list(expected)  # attribute order too


async def test_awkward_rows_come_out_as_the_models_publish_them(api: httpx.AsyncClient) -> None:
    r = await api.get("/ngsi-ld/v1/temporal/entities", params={
        "id": "urn:ngsi-ld:NoiseLevelObserved:se-jacquard:PT1M", "timerel": "between",
        "timeAt": "2024-06-10T00:03:00Z", "endTimeAt": "2024-06-10T00:09:00Z"})
    (entity,) = r.json()
    laeq = {i["observedAt"][11:16]: i["value"] for i in entity["LAeq"]}
    assert "00:03" not in laeq and "00:04" not in laeq  # NULL and NaN: no instance
    # rounding as the models publish it (ngsi.mapping.published_round): the real's 6-digit
    # decimal, half away from zero, as q compares it (55.25 -> 55.3; 55.35 -> 55.4 where the
    # exact float4, 55.3499..., read in binary, would naively give 55.3)
    assert laeq["00:07"] == 55.3
    assert {i["observedAt"][11:16]: i["value"] for i in entity["LA50"]}["00:07"] == 55.4
    bands = {i["observedAt"][11:16]: i["value"] for i in entity["thirdOctaveBands"]}
    assert set(bands) == {"00:03", "00:04", "00:06", "00:07"}  # wholly missing spectra (00:05, 00:08): no instance
    assert len(bands["00:06"]) == 28  # one NULL and one NaN band left out
    assert {i["observedAt"][11:16]: i["value"] for i in entity["carHornCount"]}["00:08"] == 0  # zero is a value


def _scans(plan: dict[str, Any], relation: str) -> list[dict[str, Any]]:
    found = [plan] if plan.get("Relation Name") == relation else []
    for child in plan.get("Plans", []):
        found += _scans(child, relation)
    return found


def test_last_n_reads_only_the_rows_it_returns(db: RoleDsns) -> None:
    """lastN over three days of minutes reads N rows per series along the primary key."""
    seed.migrate(db.smart)
    with psycopg.connect(db.smart, autocommit=True) as conn:
        seed.add_sensors(conn)
        seed.add_aggregates(conn, "levels_1min", T0, timedelta(minutes=1), 3 * 1440)
        conn.execute("ANALYZE smart.levels_1min")
        period = PERIODS["1min"]
        sel = Selection([period], ["se-jacquard", "se-chavanelle"], None, None, None, TimeRange(since=T0))
        query, params = temporal_instances_sql(sql.Identifier("smart"), period, sel, 5, newest=True)
        rows = conn.execute(query, params).fetchall()
        assert [(r[0], r[1]) for r in rows] == [
            (s, T0 + timedelta(minutes=k)) for s in ("se-chavanelle", "se-jacquard") for k in range(3 * 1440 - 5, 3 * 1440)
        ]
        (plan,) = conn.execute(sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) ") + query, params).fetchone()[0]
        scans = _scans(plan["Plan"], "levels_1min")
        assert scans and all(s["Node Type"] == "Index Scan" and s["Index Name"] == "levels_1min_pkey" for s in scans), scans
        assert sum(s["Actual Rows"] * s["Actual Loops"] for s in scans) == 10

        query, params = temporal_presence_sql(sql.Identifier("smart"), period, sel)
        assert sorted(r[0] for r in conn.execute(query, params).fetchall()) == ["se-chavanelle", "se-jacquard"]
        (plan,) = conn.execute(sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) ") + query, params).fetchone()[0]
        scans = _scans(plan["Plan"], "levels_1min")
        assert scans and sum(s["Actual Rows"] * s["Actual Loops"] for s in scans) <= 2  # one probe per series
