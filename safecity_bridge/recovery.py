"""Alerts a stopped bridge owed: events committed but never alerted.

The hot path commits an event before it alerts it (so every alert exists in the
journal). A bridge killed between the two (OOM, power cut, a deploy) left the event in
the database with no live alert, no webhook and no camera; the broker does not help,
as the message was already acknowledged or comes back as a duplicate. At start the
bridge rebuilds those incidents from their rows and alerts them, marked ``recovered``;
a sound still fresh enough also turns the cameras. Delivery is at least once: an alert
that went out just before the stop, but whose mark was not yet written, goes out again.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from safecity_bridge.correlation import IncidentState, Plan
from safecity_bridge.localisation import Arrival, SourceEstimate
from safecity_bridge.settings import SensorPosition


def owed_plan(row: dict[str, Any], events: list[dict[str, Any]], sensors: Mapping[str, SensorPosition], *,
              now: datetime, now_mono: float) -> Plan:
    """The incident as the correlator would hold it, planned as new unless part of it was alerted already.

    Arrivals of sensors no longer in the registry are left out (they cannot be placed);
    the stored position and uncertainty stay the record's.
    """
    arrivals = tuple(
        Arrival(sensor_id=e["sensor_id"], position=(p.latitude, p.longitude, p.altitude_m), onset=e["onset"])
        for e in events
        if (p := sensors.get(e["sensor_id"])) is not None
    )
    estimate = SourceEstimate(lat=row["latitude"], lon=row["longitude"], uncertainty_m=row["uncertainty_m"],
                              method=row["locate_method"], sensor_ids=tuple(row["sensor_ids"]))
    incident = IncidentState(
        incident_id=row["incident_id"],
        event_class=row["event_class"],
        opened_at=row["opened_at"],
        first_onset=row["first_onset"],
        arrivals=arrivals,
        n_events=row["n_events"],
        estimate=estimate,
        created_mono=now_mono - max(0.0, (now - row["opened_at"]).total_seconds()),
        confidence=row["confidence"],
    )
    alerted_before = any(e["alerted_at"] is not None for e in events)
    return Plan(incident, is_new=not alerted_before, shift_m=0.0, reaim=False)


def owed_event_ids(events: list[dict[str, Any]]) -> list[Any]:
    return [e["event_id"] for e in events if e["alerted_at"] is None]


def newest_onset(events: list[dict[str, Any]]) -> datetime:
    return max(e["onset"] for e in events if e["alerted_at"] is None)
