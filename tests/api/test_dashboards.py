"""Grafana provisioning: committed dashboards equal the generated ones and every panel's SQL runs on real data."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from pathlib import Path

import psycopg
import pytest
import yaml

from dashboards import build
from sonopolis.bootstrap import RoleDsns
from sonopolis.reader import READER_ROLE

GRAFANA = Path(build.__file__).resolve().parent / "grafana"


def test_committed_dashboards_are_the_generated_ones() -> None:
    for name, text in build.render().items():
        assert (build.OUT / name).read_text(encoding="utf-8") == text, f"{name} is stale: run python -m dashboards.build"


def test_provisioning_files_point_at_the_dashboards_datasource() -> None:
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "sonopolis.yaml").read_text())["datasources"][0]
    assert ds["type"] == "grafana-postgresql-datasource" and ds["jsonData"]["timescaledb"] is True
    # The read-only role (any viewer can send SQL through the datasource), its password
    # from the Compose secret file, never inline (it was an environment variable nothing set).
    assert ds["user"] == "${SONOPOLIS_GRAFANA_DB_USER}"  # Grafana has no ${VAR:-default}: compose sets it
    assert "password" not in ds and ds["secureJsonData"]["password"] == "$__file{/run/secrets/db-smart-reader-password}"
    compose = yaml.safe_load((GRAFANA.parents[1] / "docker-compose.yml").read_text())["services"]["grafana"]
    assert "db-smart-reader-password" in compose["secrets"]
    assert compose["environment"]["SONOPOLIS_GRAFANA_DB_USER"] == READER_ROLE
    assert not {"db-smart-password", "db-smart-dsn"} & set(compose["secrets"]), "Grafana never holds the read-write role's password"
    for name in build.DASHBOARDS:
        board = json.loads((build.OUT / name).read_text())
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == ds["uid"], (name, panel["title"])
    kinds = {p["type"] for p in build.city_overview()["panels"]}
    assert "geomap" in kinds


def _expand(sql: str, start: dt.datetime, end: dt.datetime, sensor: str) -> str:
    """Expand the Grafana macros used by the panels the way Grafana's PostgreSQL datasource does."""
    sql = re.sub(r"\$__timeFilter\(([^()]*(?:\([^()]*\))?[^()]*)\)",
                 lambda m: f"{m.group(1)} BETWEEN '{start.isoformat()}' AND '{end.isoformat()}'", sql)
    return sql.replace("$sensor", sensor)


@pytest.mark.parametrize("name", sorted(build.DASHBOARDS))
def test_every_panel_query_runs_and_returns_rows(name: str, recent_dsn: str, db: RoleDsns) -> None:
    """As Grafana's read-only role: a panel that needs more than SELECT fails here."""
    board = build.DASHBOARDS[name]()
    end = dt.datetime.now(dt.UTC)
    start = end - dt.timedelta(days=2)
    queries = [t["rawSql"] for p in board["panels"] for t in p["targets"]]
    queries += [v["query"] for v in board["templating"]["list"]]
    with psycopg.connect(db.reader) as conn:
        for sql in queries:
            cur = conn.execute(_expand(sql, start, end, "se-jacquard"))  # type: ignore[arg-type]
            rows = cur.fetchall()
            assert rows, f"{name}: no rows for\n{sql}"
            cols = [c.name for c in cur.description]
            if "time" in cols:
                assert all(r[cols.index("time")] is not None for r in rows)
        spectrum = next(t["rawSql"] for p in build.sensor_detail()["panels"] for t in p["targets"] if "bands[" in t["rawSql"])
        bands = conn.execute(_expand(spectrum, start, end, "se-jacquard")).fetchall()  # type: ignore[arg-type]
    if name == "sensor_detail.json":
        assert len(bands) == 30 and bands[0][0] == "25" and bands[-1][0] == "20000"


def test_spectrum_weights_each_hour_by_its_measured_duration(smart_dsn: str) -> None:
    """1 h at 60 dB and, the next hour, 36 s at 80 dB: 63.0 dB over the 3,636 s measured, not 77.0."""
    spectrum = next(t["rawSql"] for p in build.sensor_detail()["panels"] for t in p["targets"] if "bands[" in t["rawSql"])
    start = dt.datetime(2026, 11, 23, 10, tzinfo=dt.UTC)
    with psycopg.connect(smart_dsn) as conn:
        for hour, level, coverage, seconds in ((0, 60.0, 1.0, 3600), (1, 80.0, 0.01, 36)):
            conn.execute(
                "INSERT INTO smart.levels_1h (sensor_id, bucket, laeq, lamax, lamin, la10, la50, la90, bands, coverage, n_seconds,"
                " car_horn, siren) VALUES ('se-jacquard', %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 0, 0)",
                (start + dt.timedelta(hours=hour), level, level, level, level, level, level, [level] * 30, coverage, seconds),
            )
        rows = conn.execute(_expand(spectrum, start, start + dt.timedelta(hours=2), "se-jacquard")).fetchall()  # type: ignore[arg-type]
    expected = 10 * math.log10((3600 * 10**6 + 36 * 10**8) / 3636)
    assert len(rows) == 30
    assert all(abs(level - expected) < 1e-6 for _hz, level in rows), rows[:3]
    assert round(dict(rows)["1000"], 1) == 63.0
