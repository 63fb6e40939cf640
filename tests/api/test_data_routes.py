"""Public read routes against real PostgreSQL rows written and aggregated by the ingestion code."""

from __future__ import annotations

import csv
import datetime as dt
import io

import httpx
import pytest

pytestmark = pytest.mark.anyio


async def test_sensors_geojson_and_csv(client: httpx.AsyncClient, smart_dsn: str) -> None:
    r = await client.get("/v1/sensors")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/geo+json")
    body = r.json()
    assert body["type"] == "FeatureCollection"
    ids = [f["id"] for f in body["features"]]
    assert ids == sorted(["se-jacquard", "se-chavanelle", "se-fourneyron"])
    jacquard = next(f for f in body["features"] if f["id"] == "se-jacquard")
    assert jacquard["geometry"] == {"type": "Point", "coordinates": [4.3872, 45.4397]}
    assert jacquard["properties"]["name"] == "Place Jacquard"

    r = await client.get("/v1/sensors", params={"format": "csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert {row["sensor_id"] for row in rows} == set(ids)
    assert float(next(row for row in rows if row["sensor_id"] == "se-jacquard")["latitude"]) == pytest.approx(45.4397)

    one = await client.get("/v1/sensors/se-chavanelle")
    assert one.status_code == 200 and one.json()["properties"]["sensor_id"] == "se-chavanelle"


async def test_hourly_levels_match_raw_rows(client: httpx.AsyncClient, recent_dsn: str) -> None:
    import psycopg

    r = await client.get("/v1/sensors/se-jacquard/levels", params={"period": "1h"})
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert 3 <= len(items) <= 4
    assert all(i["sensor_id"] == "se-jacquard" and i["period"] == "1h" for i in items)
    buckets = [dt.datetime.fromisoformat(i["bucket"]) for i in items]
    assert buckets == sorted(buckets) and all(b.minute == 0 for b in buckets)
    # the API's hourly LAeq is the energetic mean of the raw rows of that hour
    full = next(i for i in items if i["coverage"] > 0.99)
    start = dt.datetime.fromisoformat(full["bucket"])
    with psycopg.connect(recent_dsn) as conn:
        expected = conn.execute(
            "SELECT 10 * log(avg(power(10, laeq / 10.0))) FROM smart.levels WHERE sensor_id = %s AND time >= %s AND time < %s",
            ("se-jacquard", start, start + dt.timedelta(hours=1))).fetchone()[0]
    assert full["laeq"] == pytest.approx(expected, abs=0.05)
    assert full["la10"] >= full["la50"] >= full["la90"]


async def test_filters_pagination_and_link_header(client: httpx.AsyncClient, recent_dsn: str) -> None:
    start = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)).replace(second=0, microsecond=0)
    params = {"period": "15min", "sensor": ["se-jacquard", "se-chavanelle"], "from": start.isoformat(), "limit": 5}
    seen: list[tuple[str, str]] = []
    url: str | None = "/v1/levels"
    pages = 0
    while url:
        r = await client.get(url, params=params if pages == 0 else None)
        assert r.status_code == 200, r.text
        body = r.json()
        seen += [(i["bucket"], i["sensor_id"]) for i in body["items"]]
        assert body["count"] == len(body["items"]) <= 5
        if body["next"]:
            assert r.headers["link"] == f'<{body["next"]}>; rel="next"'
        url = body["next"]
        pages += 1
    assert pages >= 3
    assert len(seen) == len(set(seen)), "a row appeared on two pages"
    assert seen == sorted(seen)
    assert {s for _, s in seen} == {"se-jacquard", "se-chavanelle"}
    assert all(dt.datetime.fromisoformat(b) >= start for b, _ in seen)
    # the same query in one page gives the same rows
    r = await client.get("/v1/levels", params={**params, "limit": 1000})
    assert [(i["bucket"], i["sensor_id"]) for i in r.json()["items"]] == seen


async def test_csv_by_accept_header_with_bands(client: httpx.AsyncClient, recent_dsn: str) -> None:
    r = await client.get("/v1/levels", params={"period": "1h", "bands": "true"}, headers={"Accept": "text/csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert rows and "band_1000" in rows[0] and "laeq" in rows[0]
    assert float(rows[0]["band_1000"]) > 0
    assert {row["sensor_id"] for row in rows} == {"se-jacquard", "se-chavanelle", "se-fourneyron"}


async def test_lden_and_hourly_source_counts(client: httpx.AsyncClient, recent_dsn: str) -> None:
    import psycopg

    r = await client.get("/v1/lden")
    assert r.status_code == 200
    items = r.json()["items"]
    # 3 h of data: partial days, so Lden itself may be null, but a period level and the coverage are there
    assert items and all(0 < i["coverage"] < 1 for i in items)
    assert any(i["lday"] or i["levening"] or i["lnight"] for i in items)
    r = await client.get("/v1/sources/hourly", params={"sensor": "se-fourneyron"})
    assert r.status_code == 200
    counts = r.json()["items"]
    with psycopg.connect(recent_dsn) as conn:
        total = conn.execute("SELECT sum(car_horn) FROM smart.levels WHERE sensor_id = 'se-fourneyron'").fetchone()[0]
    assert sum(c["car_horn"] for c in counts) == total > 0
    assert set(counts[0]) == {"sensor_id", "hour", "car_horn", "siren"}
    csv_r = await client.get("/v1/lden", params={"format": "csv"})
    assert csv_r.text.splitlines()[0] == "sensor_id,day,lden,lday,levening,lnight,coverage"


async def test_latest_levels(client: httpx.AsyncClient, recent_dsn: str) -> None:
    r = await client.get("/v1/latest")
    assert r.status_code == 200
    latest = {x["sensor_id"]: x for x in r.json()}
    assert set(latest) == {"se-jacquard", "se-chavanelle", "se-fourneyron"}
    assert all(30 < x["laeq"] < 90 for x in latest.values())


@pytest.mark.parametrize(("path", "params", "status"), [
    ("/v1/levels", {"period": "2h"}, 422),
    ("/v1/levels", {"from": "yesterday"}, 422),
    ("/v1/levels", {"from": "2025-06-01T00:00:00"}, 400),
    ("/v1/levels", {"from": "2025-06-02T00:00:00Z", "to": "2025-06-01T00:00:00Z"}, 400),
    ("/v1/levels", {"limit": 0}, 422),
    ("/v1/levels", {"limit": 50_000}, 400),
    ("/v1/levels", {"limit": 200_000}, 400),
    ("/v1/lden", {"limit": 2_000_000}, 400),
    ("/v1/levels", {"cursor": "not-a-cursor!"}, 400),
    ("/v1/levels", {"format": "xml"}, 422),
    ("/v1/sensors/nope/levels", {}, 404),
    ("/v1/sensors/bad id!", {}, 422),
    ("/v1/no-such-route", {}, 404),
    ("/v1/lden", {"from": "2025-13-01"}, 422),
])
async def test_bad_input_gives_problem_details(client: httpx.AsyncClient, smart_dsn: str, path: str, params: dict, status: int) -> None:
    r = await client.get(path, params=params)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["status"] == status and body["title"] and body["type"].startswith("https://")
    assert body["instance"] == path.replace(" ", "%20").replace("!", "%21") or body["instance"] == path


@pytest.mark.parametrize("limit", [10_001, 200_000, 5_000_000])
async def test_limit_above_the_configured_cap_is_one_400_naming_the_cap(client: httpx.AsyncClient, smart_dsn: str, limit: int) -> None:
    """Above ``page_max_limit`` (10000 here) is a 400 whatever the size; it was a 400 up to 100000 and a 422 beyond."""
    r = await client.get("/v1/levels", params={"limit": limit})
    assert r.status_code == 400, r.text
    assert "10000" in r.json()["detail"] and "page_max_limit" in r.json()["detail"]


async def test_openapi_advertises_the_configured_page_cap(tmp_path, smart_dsn: str, pool) -> None:  # type: ignore[no-untyped-def]
    """The OpenAPI maximum of ``limit`` is the city's ``page_max_limit``; it advertised 100000 with a cap of 10000."""
    from api.app import create_app
    from tests.api.conftest import make_settings

    for cap in (10_000, 250_000):
        app = create_app(make_settings(tmp_path, page_max_limit=cap), pool)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
            spec = (await c.get("/openapi.json")).json()
            for path in ("/v1/levels", "/v1/sensors/{sensor_id}/levels", "/v1/lden", "/v1/sources/hourly"):
                (param,) = [p for p in spec["paths"][path]["get"]["parameters"] if p["name"] == "limit"]
                assert param["schema"]["maximum"] == cap, (path, param)
                assert param["schema"]["minimum"] == 1
            # a page the city allows is served, whatever FastAPI's own bounds were
            r = await c.get("/v1/levels", params={"limit": cap})
            assert r.status_code == 200, r.text
            assert (await c.get("/v1/levels", params={"limit": cap + 1})).status_code == 400


async def test_not_acceptable(client: httpx.AsyncClient, smart_dsn: str) -> None:
    r = await client.get("/v1/levels", headers={"Accept": "application/xml"})
    assert r.status_code == 406 and r.json()["status"] == 406


async def test_openapi_documents_routes_with_tags(client: httpx.AsyncClient, smart_dsn: str) -> None:
    spec = (await client.get("/openapi.json")).json()
    paths = spec["paths"]
    for p in ("/v1/sensors", "/v1/levels", "/v1/sensors/{sensor_id}/levels", "/v1/lden", "/v1/sources/hourly",
              "/v1/events", "/v1/events/stream", "/v1/admin/webhooks", "/v1/admin/exports", "/v1/transparency",
              "/v1/opendata/datapackage.json", "/v1/opendata/catalog.jsonld", "/v1/opendata/runs"):
        assert p in paths, p
    op = paths["/v1/levels"]["get"]
    assert op["tags"] == ["levels"] and op["description"]
    assert "text/csv" in op["responses"]["200"]["content"]
    assert {t["name"] for t in spec["tags"]} >= {"sensors", "levels", "events", "opendata", "transparency", "admin"}
    assert "examples" in spec["components"]["schemas"]["LevelRow"] or "example" in str(spec["components"]["schemas"]["LevelRow"])


async def test_ngsi_ld_temporal_routes_are_mounted(client: httpx.AsyncClient, recent_dsn: str) -> None:
    end = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    start = end - dt.timedelta(hours=1)
    r = await client.get("/ngsi-ld/v1/temporal/entities", params={
        "type": "NoiseLevelObserved", "id": "urn:ngsi-ld:NoiseLevelObserved:se-jacquard:PT1M", "timerel": "between",
        "timeAt": start.strftime("%Y-%m-%dT%H:%M:%SZ"), "endTimeAt": end.strftime("%Y-%m-%dT%H:%M:%SZ"), "lastN": 1000})
    assert r.status_code == 200, r.text
    entities = r.json()
    assert len(entities) == 1 and entities[0]["id"] == "urn:ngsi-ld:NoiseLevelObserved:se-jacquard:PT1M"
    instances = entities[0]["LAeq"]
    assert 55 <= len(instances) <= 61 and all(i["unitCode"] == "2N" for i in instances)
