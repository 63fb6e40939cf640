"""The data routes write levels to 0.01 dB and ratios to 4 decimals, in JSON and CSV alike.

The aggregates are float4 (``real``): read as Python floats they came out as
``la50 61.254997`` and ``coverage 0.93333334`` while the published files round levels
to 0.01 dB. One rule (``api.precision``) now serves the routes and the files.
"""

from __future__ import annotations

import csv
import io

import httpx
import pytest

pytestmark = pytest.mark.anyio

LEVELS = ("laeq", "lamax", "lamin", "la10", "la50", "la90")
LDEN = ("lden", "lday", "levening", "lnight")


def decimals(text: str) -> int:
    """Digits after the decimal point of a number as written (``61.25`` -> 2, ``60`` -> 0)."""
    return len(text.partition(".")[2]) if "e" not in text.lower() else 99


def assert_rounded(row: dict, levels: tuple[str, ...], where: str) -> None:
    for name in levels:
        if row.get(name) not in (None, ""):
            assert decimals(str(row[name])) <= 2, f"{where}: {name} = {row[name]} has more than 0.01 dB"
    if row.get("coverage") not in (None, ""):
        assert decimals(str(row["coverage"])) <= 4, f"{where}: coverage = {row['coverage']} has more than 4 decimals"


@pytest.mark.parametrize("period", ["1min", "15min", "1h"])
async def test_levels_are_rounded_in_json_and_csv(client: httpx.AsyncClient, recent_dsn: str, period: str) -> None:
    r = await client.get("/v1/levels", params={"period": period, "limit": 2000, "bands": "true"})
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert items
    for item in items:
        assert_rounded(item, LEVELS, f"JSON {period} {item['sensor_id']} {item['bucket']}")
        assert all(decimals(str(v)) <= 2 for v in (item["bands"] or {}).values())
    # partial buckets are where float4 ratios such as 0.93333334 appeared
    assert period == "1min" or any(0 < i["coverage"] < 1 for i in items)
    c = await client.get("/v1/levels", params={"period": period, "limit": 2000, "format": "csv"})
    rows = list(csv.DictReader(io.StringIO(c.text)))
    assert len(rows) == len(items)
    for row in rows:
        assert_rounded(row, LEVELS, f"CSV {period} {row['sensor_id']} {row['bucket']}")


async def test_lden_is_rounded_in_json_and_csv(client: httpx.AsyncClient, recent_dsn: str) -> None:
    items = (await client.get("/v1/lden")).json()["items"]
    assert items
    for item in items:
        assert_rounded(item, LDEN, f"JSON lden {item['sensor_id']}")
    rows = list(csv.DictReader(io.StringIO((await client.get("/v1/lden", params={"format": "csv"})).text)))
    assert len(rows) == len(items)
    for row in rows:
        assert_rounded(row, LDEN, f"CSV lden {row['sensor_id']}")


async def test_rounding_rule_is_documented_in_openapi(client: httpx.AsyncClient, smart_dsn: str) -> None:
    schemas = (await client.get("/openapi.json")).json()["components"]["schemas"]
    for model, fields in (("LevelRow", LEVELS), ("LdenRow", LDEN)):
        props = schemas[model]["properties"]
        for name in fields:
            assert "0.01 dB" in props[name]["description"], (model, name)
        assert "4 decimals" in props["coverage"]["description"], model
