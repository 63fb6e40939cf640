"""Open-data exports: publication delay, great-expectations gate (pass and fail), Frictionless and DCAT-AP metadata."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pandas as pd
import psycopg
import pytest

from api.catalog import validate_package
from api.exports import NotYetPublishable, check_publishable, day_bounds
from api.quality import run_gate
from api.settings import ApiSettings, ExportSettings
from tests.api import seed

pytestmark = pytest.mark.anyio

DAY = (dt.datetime.now(ZoneInfo("Europe/Paris")) - dt.timedelta(days=3)).date()


@pytest.fixture
def day_dsn(smart_dsn: str) -> str:
    """One full local day of data (every 30 s) for the three sensors."""
    start, end = day_bounds(DAY, "Europe/Paris")
    with psycopg.connect(smart_dsn) as conn:
        seed.add_levels(conn, start, end, step_s=30)
    return smart_dsn


async def test_export_passes_gate_and_publishes_valid_package(client: httpx.AsyncClient, day_dsn: str, settings: ApiSettings,
                                                              admin: dict) -> None:
    r = await client.post("/v1/admin/exports", params={"day": DAY.isoformat()}, headers=admin)
    assert r.status_code == 200, r.text
    runs = r.json()
    assert [(x["dataset"], x["status"]) for x in runs] == [("levels_15min", "published"), ("levels_1h", "published"), ("lden_daily", "published")]
    by = {x["dataset"]: x for x in runs}
    assert by["levels_1h"]["rows"] == 3 * 24 and by["levels_15min"]["rows"] == 3 * 96 and by["lden_daily"]["rows"] == 3
    root = Path(settings.exports.directory)
    hourly = root / "levels_1h" / f"levels_1h_{DAY.isoformat()}.csv"
    rows = list(csv.DictReader(io.StringIO(hourly.read_text())))
    assert len(rows) == 72 and rows[0]["bucket"].endswith("Z")
    # the gate report is kept for published batches too
    report = (await client.get(f"/v1/opendata/quality-reports/{by['levels_1h']['id']}")).json()
    assert report["success"] and report["rows"] == 72 and not report["failed"]
    kinds = {c["expectation"] for c in report["checks"]}
    assert {"expect_compound_columns_to_be_unique", "expect_column_values_to_be_between", "expect_column_mean_to_be_between",
            "expect_column_values_to_not_be_null", "expect_column_unique_value_count_to_be_between"} <= kinds
    # Frictionless: descriptor lists exactly the published files and validates with their CSVs
    package = (await client.get("/v1/opendata/datapackage.json")).json()
    paths = sorted(res["path"] for res in package["resources"])
    assert paths == sorted(["sensors.csv", f"levels_1h/levels_1h_{DAY}.csv", f"levels_15min/levels_15min_{DAY}.csv", f"lden_daily/lden_daily_{DAY}.csv"])
    assert package["licenses"][0]["name"] == "etalab-2.0"
    assert "smartdatamodels.org" in json.dumps(package["sources"])
    validation = validate_package(root)
    assert validation["valid"], validation["errors"]
    # DCAT-AP catalogue
    cat = (await client.get("/v1/opendata/catalog.jsonld")).json()
    assert cat["@type"] == "dcat:Catalog" and cat["dct:license"]["@id"].startswith("https://www.etalab.gouv.fr")
    datasets = {d["dct:identifier"]: d for d in cat["dcat:dataset"]}
    assert set(datasets) == {"sonopolis-levels_1h", "sonopolis-levels_15min", "sonopolis-lden_daily", "sonopolis-sensors"}
    dist = datasets["sonopolis-levels_1h"]["dcat:distribution"][0]
    assert dist["dcat:downloadURL"]["@id"] == f"https://data.example.org/v1/opendata/files/levels_1h/levels_1h_{DAY}.csv"
    assert datasets["sonopolis-levels_1h"]["dct:rights"]["rdfs:label"] == "FIWARE Smart Data Models (smartdatamodels.org), CC-BY-4.0"
    # the published file is downloadable, the reports folder is not
    f = await client.get(f"/v1/opendata/files/levels_1h/levels_1h_{DAY}.csv")
    assert f.status_code == 200 and f.text == hourly.read_text()
    assert (await client.get("/v1/opendata/files/../../etc/passwd.csv")).status_code in (400, 404)


async def test_failing_batch_is_not_published_and_report_is_kept(client: httpx.AsyncClient, day_dsn: str, settings: ApiSettings,
                                                                 admin: dict) -> None:
    start, end = day_bounds(DAY, "Europe/Paris")
    with psycopg.connect(day_dsn) as conn:
        # a broken sensor: implausible hourly values, and one sensor missing half the day
        conn.execute("UPDATE smart.levels_1h SET laeq = 190, la90 = la10 + 5 WHERE sensor_id = 'se-jacquard' AND bucket = %s", (start + dt.timedelta(hours=5),))
        conn.execute("DELETE FROM smart.levels_1h WHERE sensor_id IN ('se-chavanelle', 'se-fourneyron') AND bucket >= %s", (start + dt.timedelta(hours=2),))
    r = await client.post("/v1/admin/exports", params={"day": DAY.isoformat(), "dataset": "levels_1h"}, headers=admin)
    run = r.json()[0]
    assert run["status"] == "rejected" and run["file_path"] is None
    assert not (Path(settings.exports.directory) / "levels_1h" / f"levels_1h_{DAY}.csv").exists()
    assert (await client.get("/v1/opendata/datapackage.json")).status_code == 404
    report = (await client.get(f"/v1/opendata/quality-reports/{run['id']}")).json()
    assert not report["success"]
    failed = " ".join(report["failed"])
    assert "expect_column_values_to_be_between(laeq)" in failed
    assert "expect_column_pair_values_a_to_be_greater_than_b" in failed
    rejected = (await client.get("/v1/opendata/runs", params={"status": "rejected"})).json()
    assert [x["id"] for x in rejected] == [run["id"]]
    # the report file is kept too
    kept = sorted((Path(settings.exports.directory) / "reports" / DAY.isoformat()).glob("levels_1h-*.json"))
    assert len(kept) == 1 and json.loads(kept[0].read_text())["success"] is False
    with psycopg.connect(day_dsn) as conn:
        stored = conn.execute("SELECT status, report->>'success' FROM smart.api_export_runs WHERE id = %s", (run["id"],)).fetchone()
    assert stored == ("rejected", "false")


def test_gate_catches_duplicates_and_non_monotonic_time() -> None:
    t0 = pd.Timestamp("2025-06-01T00:00:00Z")
    ok = pd.DataFrame({"sensor_id": ["a", "a", "b", "b"], "bucket": [t0, t0 + pd.Timedelta("1h"), t0, t0 + pd.Timedelta("1h")],
                       "laeq": [55.0, 56.0, 60.0, 61.0], "la10": [58.0] * 4, "la50": [55.0] * 4, "la90": [50.0] * 4, "coverage": [1.0] * 4})
    s = ExportSettings()
    assert run_gate(ok, "levels_1h", s, expected_sensors=2)["success"]
    dup = pd.concat([ok, ok.iloc[[1]]], ignore_index=True)
    report = run_gate(dup, "levels_1h", s, expected_sensors=2)
    assert not report["success"] and any("compound_columns_to_be_unique" in f for f in report["failed"])
    backwards = ok.iloc[[1, 0, 2, 3]].reset_index(drop=True)
    report = run_gate(backwards, "levels_1h", s, expected_sensors=2)
    assert not report["success"] and report["failed"] == ["expect_column_values_to_be_between(step_s)"]
    low_coverage = ok.assign(coverage=[0.1] * 4)
    assert "expect_column_mean_to_be_between(coverage)" in run_gate(low_coverage, "levels_1h", s, 2)["failed"]
    missing_sensors = run_gate(ok, "levels_1h", s, expected_sensors=10)
    assert "expect_column_unique_value_count_to_be_between(sensor_id)" in missing_sensors["failed"]


async def test_publication_delay_refuses_recent_days(client: httpx.AsyncClient, smart_dsn: str, admin: dict) -> None:
    today = dt.datetime.now(ZoneInfo("Europe/Paris")).date()
    r = await client.post("/v1/admin/exports", params={"day": (today - dt.timedelta(days=1)).isoformat()}, headers=admin)
    # yesterday ended less than 24 h ago: nothing newer than the delay is published
    assert r.status_code == 400 and "publication delay" in r.json()["detail"]
    settings = ExportSettings(publication_delay_h=48)
    end = day_bounds(DAY, "Europe/Paris")[1]
    check_publishable(DAY, settings, now=end + dt.timedelta(hours=48))
    with pytest.raises(NotYetPublishable):
        check_publishable(DAY, settings, now=end + dt.timedelta(hours=47, minutes=59))


async def test_days_at_the_edge_of_the_calendar_are_refused_not_a_server_error(client: httpx.AsyncClient, smart_dsn: str,
                                                                              admin: dict) -> None:
    # Found by schemathesis: 0001-01-01 in Paris starts in year 0 UTC (OverflowError, a 500).
    for day in ("0001-01-01", "9999-12-31"):
        r = await client.post("/v1/admin/exports", params={"day": day}, headers=admin)
        assert r.status_code == 400, r.text
        assert "outside the representable dates" in r.json()["detail"]


async def test_published_sensors_keep_their_positions_and_text_cells_stay_text(client: httpx.AsyncClient, day_dsn: str, settings: ApiSettings,
                                                                             admin: dict) -> None:
    """Positions were rounded like levels (every sensor at one point, ~1 km off); a name starting with '='
    was written as a formula in both CSV outputs; the public run list showed the server's paths."""
    with psycopg.connect(day_dsn) as conn:
        conn.execute("UPDATE smart.sensors SET name = '=HYPERLINK(\"http://evil.example\",\"x\")', street = '@SUM(1+1)' "
                     "WHERE sensor_id = (SELECT min(sensor_id) FROM smart.sensors)")
        positions = {r[0]: (r[1], r[2]) for r in conn.execute("SELECT sensor_id, latitude, longitude FROM smart.sensors")}
    r = await client.post("/v1/admin/exports", params={"day": DAY.isoformat()}, headers=admin)
    assert r.status_code == 200, r.text
    published = list(csv.DictReader(io.StringIO((Path(settings.exports.directory) / "sensors.csv").read_text())))
    assert {row["sensor_id"]: (float(row["latitude"]), float(row["longitude"])) for row in published} == positions
    injected = [row for row in published if row["name"].startswith("'=")]
    assert len(injected) == 1 and injected[0]["street"] == "'@SUM(1+1)"
    api_csv = list(csv.DictReader(io.StringIO((await client.get("/v1/sensors", params={"format": "csv"})).text)))
    assert [row["name"] for row in api_csv if "HYPERLINK" in row["name"]] == [injected[0]["name"]]
    assert {row["active"] for row in api_csv} <= {"true", "false"}
    runs = (await client.get("/v1/opendata/runs")).json()
    assert runs and all(not x["file_path"].startswith("/") and str(settings.exports.directory) not in x["file_path"] for x in runs if x["file_path"])


def test_dcat_datasets_state_their_spatial_coverage(tmp_path: Path) -> None:
    """Each DCAT-AP dataset gives the extent of the published sensor positions (dct:spatial); it had no spatial coverage."""
    from api.catalog import dcat_catalog

    root = tmp_path / "opendata"
    (root / "lden_daily").mkdir(parents=True)
    (root / "sensors.csv").write_text(
        "sensor_id,name,latitude,longitude,street,place,sonometer_class,installed_on,timezone,active\n"
        "se-a,A,45.4355,4.3925,,,2,,Europe/Paris,true\nse-b,B,45.442,4.389,,,2,,Europe/Paris,true\n"
        "se-c,C,45.43,4.4,,,2,,Europe/Paris,false\n")
    (root / "lden_daily" / "lden_daily_2026-03-29.csv").write_text("sensor_id,day,lden,lday,levening,lnight,coverage\n")
    cat = dcat_catalog(root, ExportSettings(directory=root))
    assert cat["dcat:dataset"]
    for ds in cat["dcat:dataset"]:
        spatial = ds["dct:spatial"]
        assert spatial["@type"] == "dct:Location"
        assert spatial["dcat:bbox"] == {
            "@value": "POLYGON((4.389 45.43, 4.4 45.43, 4.4 45.442, 4.389 45.442, 4.389 45.43))",
            "@type": "http://www.opengis.net/ont/geosparql#wktLiteral"}


def test_dcat_distributions_follow_dcat_ap_3(tmp_path: Path) -> None:
    """DCAT-AP 3.0: a Distribution has no ``dct:temporal`` (the Dataset's period covers its files) and its
    ``dcat:byteSize`` is an ``xsd:nonNegativeInteger``; distributions carried a period each and a size typed xsd:decimal."""
    from api.catalog import dcat_catalog

    root = tmp_path / "opendata"
    (root / "lden_daily").mkdir(parents=True)
    header = "sensor_id,day,lden,lday,levening,lnight,coverage\n"
    for day in ("2026-03-28", "2026-03-29"):
        (root / "lden_daily" / f"lden_daily_{day}.csv").write_text(header)
    cat = dcat_catalog(root, ExportSettings(directory=root))
    (ds,) = cat["dcat:dataset"]
    assert ds["dct:temporal"]["dcat:startDate"]["@value"] == "2026-03-28"
    assert ds["dct:temporal"]["dcat:endDate"]["@value"] == "2026-03-29"
    assert len(ds["dcat:distribution"]) == 2
    for dist in ds["dcat:distribution"]:
        assert "dct:temporal" not in dist, dist
        assert dist["dcat:byteSize"] == {"@value": str(len(header)), "@type": "xsd:nonNegativeInteger"}
