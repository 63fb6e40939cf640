"""Mapping of contract rows to FIWARE entities, validated against the official schemas."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone
from pathlib import Path

import pytest

from messages.bands import BAND_KEYS
from ngsi.context import ENVIRONMENT_CONTEXT, SONOPOLIS_TERMS, context_document, link_header, parse_link_header
from ngsi.mapping import PERIODS, device_from_row, observation_from_row, parse_observation_id
from ngsi.models import LEVEL_ATTRS
from tests.ngsi.schemas import DEVICE_SCHEMA, NOISE_SCHEMA, validator

SENSOR = {
    "sensor_id": "lyon-bellecour-01",
    "name": "Place Bellecour",
    "latitude": 45.7578,
    "longitude": 4.8320,
    "street": "Place Bellecour",
    "place": "Lyon",
    "sonometer_class": 1,
    "installed_on": date(2024, 3, 1),
    "timezone": "Europe/Paris",
    "active": True,
}


def agg_row(bucket: datetime, laeq: float = 63.24) -> dict:
    bands = [40.0 + i * 0.5 for i in range(len(BAND_KEYS))]
    bands[-1] = None  # omitted above Nyquist
    return {
        "sensor_id": SENSOR["sensor_id"], "bucket": bucket, "laeq": laeq, "lamax": 81.26, "lamin": 48.0,
        "la10": 66.0, "la50": 60.5, "la90": 52.1, "bands": bands, "coverage": 0.98, "car_horn": 3, "siren": 0,
    }


def test_noise_level_observed_normalized_form() -> None:
    start = datetime(2024, 6, 1, 10, 0, tzinfo=timezone.utc)
    ent = observation_from_row(PERIODS["1h"], SENSOR, agg_row(start)).normalized("https://city/ctx.jsonld")
    assert ent["id"] == "urn:ngsi-ld:NoiseLevelObserved:lyon-bellecour-01:PT1H:2024-06-01T10:00:00Z"
    assert ent["type"] == "NoiseLevelObserved"
    assert ent["@context"] == ["https://city/ctx.jsonld"]
    assert ent["LAeq"] == {"type": "Property", "value": 63.2, "unitCode": "2N", "observedAt": "2024-06-01T10:00:00Z"}
    assert ent["dateObservedFrom"]["value"] == {"@type": "DateTime", "@value": "2024-06-01T10:00:00Z"}
    assert ent["dateObservedTo"]["value"]["@value"] == "2024-06-01T11:00:00Z"
    assert ent["location"] == {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [4.8320, 45.7578]}}
    assert ent["refDevice"] == {"type": "Relationship", "object": "urn:ngsi-ld:Device:lyon-bellecour-01"}
    assert ent["sonometerClass"]["value"] == "1"
    assert ent["thirdOctaveBands"]["value"]["1000"] == 40.0 + 16 * 0.5
    assert "20000" not in ent["thirdOctaveBands"]["value"]
    for name in LEVEL_ATTRS:
        if name in ent:
            assert ent[name]["unitCode"] == "2N"
    assert "unitCode" not in ent["carHornCount"] and ent["carHornCount"]["value"] == 3


def test_daily_bucket_spans_the_local_day_across_dst() -> None:
    # 2024-03-31 is the spring-forward day in Paris: 23 h long
    start = datetime(2024, 3, 30, 23, 0, tzinfo=timezone.utc)  # local midnight
    lden = {"lden": 65.04, "lday": 60.0, "levening": 58.0, "lnight": 52.0}
    obs = observation_from_row(PERIODS["1d"], SENSOR, agg_row(start), lden)
    assert (obs.dateObservedTo - obs.dateObservedFrom).total_seconds() == 23 * 3600
    ent = obs.normalized()
    assert ent["Lden"]["value"] == 65.0 and ent["LAeq_d"]["value"] == 60.0 and ent["LANight"]["value"] == 52.0
    assert ent["id"].endswith(":P1D:2024-03-30T23:00:00Z")


def test_id_round_trip() -> None:
    start = datetime(2024, 6, 1, 10, 15, tzinfo=timezone.utc)
    obs = observation_from_row(PERIODS["15min"], SENSOR, agg_row(start))
    sensor, spec, parsed = parse_observation_id(obs.id)
    assert (sensor, spec.name, parsed) == ("lyon-bellecour-01", "15min", start)
    assert parse_observation_id("urn:ngsi-ld:Device:x") is None


def test_context_document_and_link_header() -> None:
    doc = context_document()
    assert ENVIRONMENT_CONTEXT in doc["@context"]
    terms = doc["@context"][-1]
    assert terms["LA90"].startswith("https://") and terms["Lden"].endswith("#Lden")
    url = "https://api.city/ngsi-ld/contexts/sonopolis.jsonld"
    assert parse_link_header(link_header(url)) == url
    assert parse_link_header('<https://x>; rel="next"') is None


@pytest.mark.needs_shared
def test_entities_validate_against_official_schemas(shared_dir: Path) -> None:
    noise = validator(shared_dir, NOISE_SCHEMA)
    device = validator(shared_dir, DEVICE_SCHEMA)
    for name, spec in PERIODS.items():
        start = datetime(2024, 6, 1, 0, 0, tzinfo=timezone.utc) if name != "1d" else datetime(2024, 5, 31, 22, 0, tzinfo=timezone.utc)
        lden = {"lden": 65.0, "lday": 60.0, "levening": 58.0, "lnight": 52.0} if name == "1d" else None
        kv = observation_from_row(spec, SENSOR, agg_row(start), lden).key_values()
        errors = [e.message for e in noise.iter_errors(kv)]
        assert errors == [], (name, errors)
    kv = device_from_row(SENSOR).key_values()
    assert [e.message for e in device.iter_errors(kv)] == []
    # the validator really checks: a wrong class and a missing location are refused
    bad = observation_from_row(PERIODS["1h"], SENSOR, agg_row(datetime(2024, 6, 1, tzinfo=timezone.utc))).key_values()
    bad["sonometerClass"] = "3"
    del bad["location"]
    assert len(list(noise.iter_errors(bad))) == 2
    bad_device = device_from_row(SENSOR).key_values()
    bad_device["controlledProperty"] = ["voices"]
    assert list(device.iter_errors(bad_device))


@pytest.mark.needs_shared
def test_official_normalized_example_has_our_shape(shared_dir: Path) -> None:
    """Our normalized form uses the same attribute shapes as the FIWARE normalized example."""
    example = json.loads((shared_dir / "ngsi/smart-data-models/NoiseLevelObserved/example-normalized.jsonld").read_text())
    ours = observation_from_row(PERIODS["1h"], SENSOR, agg_row(datetime(2024, 6, 1, tzinfo=timezone.utc))).normalized()
    for name in ("LAeq", "LAmax", "dateObservedFrom", "dateObservedTo", "location"):
        assert ours[name]["type"] == example[name]["type"]
        assert type(ours[name]["value"]) is type(example[name]["value"])
    assert set(example["dateObservedFrom"]["value"]) == set(ours["dateObservedFrom"]["value"])


@pytest.mark.needs_shared
def test_no_attribute_falls_into_the_default_context(shared_dir: Path) -> None:
    """Every attribute is defined by the Environment/Device contexts or the Sonopolis terms."""
    root = shared_dir / "ngsi/smart-data-models"
    env = json.loads((root / "NoiseLevelObserved/context.jsonld").read_text())["@context"]
    dev = json.loads((root / "Device/context.jsonld").read_text())["@context"]
    start = datetime(2024, 5, 31, 22, 0, tzinfo=timezone.utc)
    lden = {"lden": 65.0, "lday": 60.0, "levening": 58.0, "lnight": 52.0}
    ent = observation_from_row(PERIODS["1d"], SENSOR, agg_row(start), lden).normalized()
    device = device_from_row(SENSOR).normalized()
    for name in list(ent) + list(device):
        if name not in ("id", "type", "location"):
            assert name in env or name in dev or name in SONOPOLIS_TERMS, name


def test_concise_keeps_value_for_arrays_and_objects() -> None:
    """Concise form: a bare array would read as several instances of a multi-attribute and a bare object as
    sub-attributes, so those values keep their ``value`` member; scalars and GeoJSON go bare."""
    device = device_from_row(SENSOR).concise()
    assert device["controlledProperty"] == {"value": ["noiseLevel"]}
    assert device["deviceCategory"] == {"value": ["sensor", "meter"]}
    assert device["name"] == SENSOR["name"] and device["location"]["type"] == "Point"
    assert device["dateInstalled"] == {"value": {"@type": "DateTime", "@value": "2024-03-01T00:00:00Z"}}
