"""Sensor registry: upsert/list, GeoJSON and TOML loaders with clear errors, the CLI."""

from __future__ import annotations

import json
from datetime import date

import psycopg
import pytest
from typer.testing import CliRunner

from ingestion import registry
from ingestion.schema import migrate
from sonopolis.cli import app

GEOJSON = {
    "type": "FeatureCollection",
    "features": [
        {"type": "Feature", "id": "se-jaures", "geometry": {"type": "Point", "coordinates": [4.3872, 45.4397]},
         "properties": {"name": "Place Jean Jaurès", "street": "Place Jean Jaurès", "place": "Saint-Étienne",
                        "sonometer_class": 1, "installed_on": "2026-05-04", "calibration_offset_db": -0.4}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [4.39, 45.44]},
         "properties": {"sensor_id": "se-marengo", "name": "Rue Marengo"}},
    ],
}


def test_geojson_file_loads_lon_lat_in_rfc7946_order(tmp_path):
    path = tmp_path / "s.geojson"
    path.write_text(json.dumps(GEOJSON))
    sensors = registry.load_file(path)
    assert [s.sensor_id for s in sensors] == ["se-jaures", "se-marengo"]
    assert (sensors[0].latitude, sensors[0].longitude) == (45.4397, 4.3872)
    assert sensors[0].installed_on == date(2026, 5, 4) and sensors[0].sonometer_class == 1
    assert sensors[1].timezone == "Europe/Paris" and sensors[1].active


def test_bad_records_are_all_reported_with_their_place(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(
        '[[sensors]]\nsensor_id = "A B"\nname = "x"\nlatitude = 95.0\nlongitude = 2.0\n'
        '[[sensors]]\nsensor_id = "ok"\nname = "y"\nlatitude = 45.0\nlongitude = 2.0\ntimezone = "Mars/Olympus"\n'
        '[[sensors]]\nsensor_id = "ok"\nname = "z"\nlatitude = 45.0\nlongitude = 2.0\ncamera = "no"\n'
    )
    with pytest.raises(registry.RegistryError) as err:
        registry.load_file(path)
    text = str(err.value)
    assert "sensors[0]" in text and "sensor_id" in text and "latitude" in text
    assert "Mars/Olympus" in text
    assert "camera" in text, "unknown fields are refused: the registry holds no camera"


def test_upsert_list_deactivate(db):
    with psycopg.connect(db.smart) as conn:
        migrate(conn)
        s = registry.Sensor(sensor_id="s1", name="A", latitude=45.0, longitude=4.0)
        assert registry.upsert(conn, [s]) == 1
        registry.upsert(conn, [s.model_copy(update={"name": "B", "sonometer_class": 1})])
        listed = registry.list_sensors(conn)
        assert [(x.sensor_id, x.name, x.sonometer_class) for x in listed] == [("s1", "B", 1)]
        assert registry.active_ids(conn) == {"s1"}
        assert registry.deactivate(conn, "s1") and registry.active_ids(conn) == frozenset()
        assert not registry.deactivate(conn, "nope")


def test_sensors_cli_loads_and_lists(db, tmp_path, monkeypatch):
    path = tmp_path / "city.geojson"
    path.write_text(json.dumps(GEOJSON))
    monkeypatch.setenv("SONOPOLIS_SMART_DB__DSN", db.smart)
    runner = CliRunner()
    result = runner.invoke(app, ["sensors", "--load", str(path), "--json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output[result.output.index("["):])
    assert {s["sensor_id"] for s in listed} == {"se-jaures", "se-marengo"}
    result = runner.invoke(app, ["sensors", "--deactivate", "se-marengo"])
    assert result.exit_code == 0, result.output
    assert "se-marengo" in result.output and "(inactive)" in result.output
    bad = runner.invoke(app, ["sensors", "--deactivate", "ghost"])
    assert bad.exit_code == 1
