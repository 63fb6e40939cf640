"""Grafana dashboards of the smart data, generated from one place and committed as JSON.

``python -m dashboards.build`` rewrites ``dashboards/grafana/dashboards/*.json``; a test
checks the committed files equal the generated ones and runs every panel's SQL
against a real database, so a renamed column breaks a test rather than a control room.

Panels read only the smart aggregates (``docs/CONTRACTS.md``) through the datasource
``sonopolis-timescaledb`` (``provisioning/datasources/sonopolis.yaml``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from messages.bands import BAND_KEYS

OUT = Path(__file__).resolve().parent / "grafana" / "dashboards"
DS = {"type": "grafana-postgresql-datasource", "uid": "sonopolis-timescaledb"}
LAEQ_STEPS = [{"color": "#2a9d8f", "value": None}, {"color": "#e9c46a", "value": 55}, {"color": "#f4a261", "value": 65}, {"color": "#e63946", "value": 75}]

SENSOR_VARIABLE = {
    "name": "sensor", "label": "Capteur / sensor", "type": "query", "datasource": DS, "refresh": 1,
    "query": "SELECT sensor_id AS __value, name || ' (' || sensor_id || ')' AS __text FROM smart.sensors WHERE active ORDER BY sensor_id",
    "definition": "sensors", "current": {}, "options": [], "multi": False, "includeAll": False,
}


def _target(sql: str, fmt: str = "table", ref: str = "A") -> dict[str, Any]:
    return {"refId": ref, "datasource": DS, "editorMode": "code", "format": fmt, "rawQuery": True, "rawSql": sql}


def _dashboard(uid: str, title: str, panels: list[dict[str, Any]], variables: list[dict[str, Any]] | None = None,
               time_from: str = "now-24h") -> dict[str, Any]:
    for i, p in enumerate(panels, start=1):
        p["id"] = i
        p.setdefault("datasource", DS)
    return {"uid": uid, "title": title, "tags": ["sonopolis", "noise"], "timezone": "browser", "schemaVersion": 39,
            "version": 1, "editable": True, "refresh": "1m", "time": {"from": time_from, "to": "now"},
            "templating": {"list": variables or []}, "panels": panels,
            "description": "Anonymous aggregate noise levels (no audio is recorded, stored or transmitted)."}


def city_overview() -> dict[str, Any]:
    latest = ("SELECT s.sensor_id, s.name, s.latitude, s.longitude, l.laeq, l.bucket AS time\n"
              "FROM smart.sensors s LEFT JOIN LATERAL (\n"
              "  SELECT laeq, bucket FROM smart.levels_1min m WHERE m.sensor_id = s.sensor_id\n"
              "  AND m.bucket > now() - interval '1 hour' ORDER BY bucket DESC LIMIT 1) l ON true\n"
              "WHERE s.active ORDER BY s.sensor_id")
    geomap = {
        "type": "geomap", "title": "Carte — LAeq actuel (1 min) / current LAeq", "gridPos": {"x": 0, "y": 0, "w": 14, "h": 18},
        "targets": [_target(latest)],
        "fieldConfig": {"defaults": {"unit": "dB", "decimals": 1, "thresholds": {"mode": "absolute", "steps": LAEQ_STEPS},
                                     "color": {"mode": "thresholds"}}, "overrides": []},
        "options": {"view": {"id": "fit", "allLayers": True}, "controls": {"showZoom": True},
                    "basemap": {"type": "default", "name": "Basemap"},
                    "layers": [{"type": "markers", "name": "LAeq", "location": {"mode": "coords", "latitude": "latitude", "longitude": "longitude"},
                                "config": {"size": {"fixed": 9}, "color": {"field": "laeq", "fixed": "#bbbbbb"}, "showLegend": True,
                                           "text": {"field": "name", "mode": "field"}}, "tooltip": True}]},
    }
    table = {"type": "table", "title": "Capteurs / sensors", "gridPos": {"x": 14, "y": 0, "w": 10, "h": 18}, "targets": [_target(latest)],
             "fieldConfig": {"defaults": {"unit": "dB", "thresholds": {"mode": "absolute", "steps": LAEQ_STEPS}}, "overrides": []}}
    hourly = {"type": "timeseries", "title": "LAeq horaire, tous capteurs / hourly LAeq", "gridPos": {"x": 0, "y": 18, "w": 24, "h": 9},
              "targets": [_target("SELECT bucket AS time, sensor_id AS metric, laeq FROM smart.levels_1h\n"
                                  "WHERE $__timeFilter(bucket) ORDER BY 1", fmt="time_series")],
              "fieldConfig": {"defaults": {"unit": "dB"}, "overrides": []}}
    return _dashboard("sonopolis-city", "Sonopolis — vue d'ensemble / city overview", [geomap, table, hourly])


def sensor_detail() -> dict[str, Any]:
    series = {"type": "timeseries", "title": "LAeq / LA90 (1 min) — $sensor", "gridPos": {"x": 0, "y": 0, "w": 24, "h": 10},
              "targets": [_target("SELECT bucket AS time, laeq AS \"LAeq\", la90 AS \"LA90\", la10 AS \"LA10\"\n"
                                  "FROM smart.levels_1min WHERE sensor_id = '$sensor' AND $__timeFilter(bucket) ORDER BY 1", fmt="time_series")],
              "fieldConfig": {"defaults": {"unit": "dB", "custom": {"lineWidth": 1}}, "overrides": []}}
    values = ", ".join(f"('{k}', {i + 1})" for i, k in enumerate(BAND_KEYS))
    # energetic mean of the hours, each weighted by its measured duration (coverage: seconds
    # measured / 3600, every hourly bucket being 3600 s): an hour with 36 s of data weighs 1 %
    # of a full one
    spectrum_sql = ("SELECT b.hz AS \"band (Hz)\",\n"
                    "  10 * log(sum(l.coverage * power(10, l.bands[b.pos] / 10.0)) / nullif(sum(l.coverage), 0)) AS \"level (dB)\"\n"
                    f"FROM smart.levels_1h l CROSS JOIN (VALUES {values}) AS b(hz, pos)\n"
                    "WHERE l.sensor_id = '$sensor' AND $__timeFilter(l.bucket) AND l.bands[b.pos] IS NOT NULL\n"
                    "GROUP BY b.hz, b.pos ORDER BY b.pos")
    spectrum = {"type": "barchart", "title": "Spectre tiers d'octave / third-octave spectrum — $sensor",
                "gridPos": {"x": 0, "y": 10, "w": 16, "h": 10}, "targets": [_target(spectrum_sql)],
                "options": {"xField": "band (Hz)", "orientation": "vertical", "showValue": "never"},
                "fieldConfig": {"defaults": {"unit": "dB"}, "overrides": []}}
    sources = {"type": "barchart", "title": "Klaxons et sirènes par heure / horns and sirens per hour",
               "gridPos": {"x": 16, "y": 10, "w": 8, "h": 10},
               "targets": [_target("SELECT bucket AS time, car_horn AS \"car horns\", siren AS sirens FROM smart.levels_1h\n"
                                   "WHERE sensor_id = '$sensor' AND $__timeFilter(bucket) ORDER BY 1")],
               "options": {"xField": "time"}}
    coverage = {"type": "stat", "title": "Couverture / coverage (1 h)", "gridPos": {"x": 0, "y": 20, "w": 24, "h": 4},
                "targets": [_target("SELECT bucket AS time, coverage FROM smart.levels_1h\n"
                                    "WHERE sensor_id = '$sensor' AND $__timeFilter(bucket) ORDER BY 1", fmt="time_series")],
                "fieldConfig": {"defaults": {"unit": "percentunit", "min": 0, "max": 1}, "overrides": []}}
    return _dashboard("sonopolis-sensor", "Sonopolis — détail capteur / sensor detail", [series, spectrum, sources, coverage], [SENSOR_VARIABLE])


def lden_calendar() -> dict[str, Any]:
    calendar = {"type": "status-history", "title": "Calendrier Lden / Lden calendar (dB(A))", "gridPos": {"x": 0, "y": 0, "w": 24, "h": 14},
                "targets": [_target("SELECT day::timestamptz AS time, sensor_id AS metric, lden FROM smart.lden_daily\n"
                                    "WHERE $__timeFilter(day::timestamptz) ORDER BY 1", fmt="time_series")],
                "options": {"showValue": "auto", "rowHeight": 0.9},
                "fieldConfig": {"defaults": {"unit": "dB", "decimals": 1, "color": {"mode": "thresholds"},
                                             "thresholds": {"mode": "absolute", "steps": [{"color": "#2a9d8f", "value": None}, {"color": "#e9c46a", "value": 55},
                                                                                          {"color": "#f4a261", "value": 65}, {"color": "#e63946", "value": 68}]}},
                                "overrides": []}}
    night = {"type": "timeseries", "title": "Lnight par jour / Lnight per day", "gridPos": {"x": 0, "y": 14, "w": 24, "h": 8},
             "targets": [_target("SELECT day::timestamptz AS time, sensor_id AS metric, lnight FROM smart.lden_daily\n"
                                 "WHERE $__timeFilter(day::timestamptz) ORDER BY 1", fmt="time_series")],
             "fieldConfig": {"defaults": {"unit": "dB"}, "overrides": []}}
    return _dashboard("sonopolis-lden", "Sonopolis — calendrier Lden / Lden calendar", [calendar, night], time_from="now-90d")


DASHBOARDS = {"city_overview.json": city_overview, "sensor_detail.json": sensor_detail, "lden_calendar.json": lden_calendar}


def render() -> dict[str, str]:
    return {name: json.dumps(build(), indent=2, ensure_ascii=False) + "\n" for name, build in DASHBOARDS.items()}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text, encoding="utf-8")
        print(f"wrote {OUT / name}")


if __name__ == "__main__":
    main()
