"""Sensor registry: upsert/list, GeoJSON and TOML loaders with clear errors, the CLI."""

from __future__ import annotations

import json
from datetime import date

import psycopg
import pytest
from typer.testing import CliRunner

from ingestion import registry
from ingestion.schema import migrate
from ingestion.settings import IngestSettings
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


@pytest.mark.parametrize("zone", ["Europe/Paris", "UTC", "America/New_York", "Asia/Tokyo", "Africa/Monrovia"])
def test_zones_with_whole_hour_offsets_are_accepted(zone):
    # Monrovia was at -00:44:30 until 1972: before 2000, no aggregate ever meets it
    assert registry.Sensor(sensor_id="s1", name="A", latitude=45.0, longitude=4.0, timezone=zone).timezone == zone


@pytest.mark.parametrize(("zone", "offset"), [
    ("Asia/Kolkata", "UTC+05:30"), ("Asia/Kathmandu", "UTC+05:45"), ("Australia/Adelaide", "UTC+10:30"),
    ("America/St_Johns", "UTC-03:30"),  # Adelaide above: +10:30 is its summer time on 2000-01-01 (+09:30 in winter)
    ("Australia/Lord_Howe", "UTC+10:30"),  # +10:30 standard time, +11 in summer (a 30 min DST shift)
    ("America/Caracas", "UTC-04:30"),  # -04:30 from 2007 to 2016 only
])
def test_zones_with_off_hour_offsets_are_refused_with_the_reason(zone, offset):
    """Lden periods come from UTC-aligned hourly buckets: in such a zone they would be shifted by 30 or 45 min."""
    with pytest.raises(ValueError, match="Lden") as err:
        registry.Sensor(sensor_id="s1", name="A", latitude=45.0, longitude=4.0, timezone=zone)
    text = str(err.value)
    assert repr(zone) in text and offset in text and "not a whole number of hours" in text


def test_a_sensor_file_with_an_off_hour_zone_is_refused_and_stored_rows_still_list(db, tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[[sensors]]\nsensor_id = "kol"\nname = "Kolkata"\nlatitude = 22.57\nlongitude = 88.36\ntimezone = "Asia/Kolkata"\n')
    with pytest.raises(registry.RegistryError) as err:
        registry.load_file(path)
    assert "sensors[0] (kol): timezone:" in str(err.value) and "'Asia/Kolkata' is not supported" in str(err.value)
    with psycopg.connect(db.smart) as conn:
        migrate(conn)
        # a row registered before the check (or by hand) is still listed, not an error
        conn.execute("INSERT INTO smart.sensors (sensor_id, name, latitude, longitude, timezone) VALUES ('kol', 'K', 22.57, 88.36, 'Asia/Kolkata')")
        assert [(s.sensor_id, s.timezone) for s in registry.list_sensors(conn)] == [("kol", "Asia/Kolkata")]


def test_the_default_zone_of_the_ingestion_is_checked_too():
    assert IngestSettings(local_timezone="America/New_York").local_timezone == "America/New_York"
    for zone in ("Asia/Kathmandu", "Mars/Olympus"):
        with pytest.raises(ValueError, match=zone):
            IngestSettings(local_timezone=zone)
