"""Correlation of one sound heard by distant sensors, from the physics of its travel."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from messages.security_event import SecurityEvent
from safecity_bridge.correlation import Correlator
from safecity_bridge.geo import LocalFrame, distance_m
from safecity_bridge.localisation import speed_of_sound
from safecity_bridge.settings import CorrelationSettings, SensorPosition
from tests.safecity_bridge.bridge_harness import event

CITY = LocalFrame(45.4397, 4.3872)
T0 = datetime(2030, 3, 1, 22, 0, tzinfo=timezone.utc)


def sensor(sid: str, e: float, n: float) -> SensorPosition:
    lat, lon, _ = CITY.to_geodetic(e, n)
    return SensorPosition(sensor_id=sid, latitude=float(lat), longitude=float(lon))


def test_one_shot_heard_by_sensors_1_km_apart_is_one_incident():
    """Sensors up to ``max_sensor_distance_m`` (1500 m) apart may hear one sound, but its
    onsets there differ by up to that distance over the speed of sound (4.4 s), beyond
    the 2 s window: a shot beside one sensor, heard 2.9 s later 1 km away, was split into
    two incidents (two alerts, two camera moves, one sensor fewer for the TDOA)."""
    a, b = sensor("s-a", 0, 0), sensor("s-b", 1000, 0)
    settings = CorrelationSettings()
    corr = Correlator(settings, {s.sensor_id: s for s in (a, b)})
    travel = distance_m(a.latitude, a.longitude, b.latitude, b.longitude) / speed_of_sound(settings.temperature_c)
    assert travel > settings.window_s  # the case at hand

    first = corr.plan(SecurityEvent.model_validate(event("s-a", onset=T0)), T0)
    corr.commit(first)
    heard_far = corr.plan(SecurityEvent.model_validate(event("s-b", onset=T0 + timedelta(seconds=travel - 0.05))), T0 + timedelta(seconds=3))
    assert not heard_far.is_new and heard_far.incident.incident_id == first.incident.incident_id
    assert heard_far.incident.sensor_ids == ["s-a", "s-b"]

    # Later than the sound could have travelled: another sound, another incident.
    too_late = corr.plan(SecurityEvent.model_validate(event("s-b", onset=T0 + timedelta(seconds=travel + 1.0))), T0 + timedelta(seconds=4))
    assert too_late.is_new
