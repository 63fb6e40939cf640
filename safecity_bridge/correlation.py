"""One sound heard by several sensors is one incident.

A gunshot reaches sensors 300 m apart within a second of each other; each edge agent
publishes its own event. The correlator groups events of the same class whose onsets
fall within ``window_s`` of the incident's first onset, or within the time the sound
takes from the incident's first sensor to this one (farther sensors), and whose
sensors are close enough to have heard the same sound. With ``min_sensors_tdoa`` (3+)
distinct sensors it asks :func:`safecity_bridge.localisation.locate` for a TDOA
estimate; otherwise the incident sits at the first sensor's position.

Planning and committing are separate on purpose: the service plans, writes the event
and the incident in one database statement, and only when that commit succeeds (and
the event was not a duplicate) does it :meth:`Correlator.commit` the plan to memory.
A crash between the two loses nothing that the database does not know.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime

from messages.security_event import SecurityEvent
from safecity_bridge.geo import haversine_m
from safecity_bridge.localisation import Arrival, SourceEstimate, locate, speed_of_sound
from safecity_bridge.settings import CorrelationSettings, SensorPosition

log = logging.getLogger(__name__)

TRAVEL_SLACK_S = 0.25
"""Onset detection and clock error on top of the sound's travel time between two sensors."""


class UnknownSensor(LookupError):
    """The event names a sensor absent from the safe-side registry (quarantined)."""


@dataclass(frozen=True)
class IncidentState:
    """What the bridge keeps in memory about an open incident (the DB row is the record)."""

    incident_id: uuid.UUID
    event_class: str
    opened_at: datetime
    first_onset: datetime
    arrivals: tuple[Arrival, ...]
    n_events: int
    estimate: SourceEstimate
    created_mono: float
    confidence: float = 0.0

    @property
    def sensor_ids(self) -> list[str]:
        seen: list[str] = []
        for a in self.arrivals:
            if a.sensor_id not in seen:
                seen.append(a.sensor_id)
        return seen


@dataclass(frozen=True)
class Plan:
    """The incident as it will be once ``event`` is recorded."""

    incident: IncidentState
    is_new: bool
    shift_m: float
    reaim: bool


@dataclass
class Correlator:
    settings: CorrelationSettings
    sensors: dict[str, SensorPosition]
    monotonic: Callable[[], float] = time.monotonic
    detection_radius_m: float = 150.0
    _open: dict[uuid.UUID, IncidentState] = field(default_factory=dict)

    def position(self, sensor_id: str) -> SensorPosition:
        try:
            return self.sensors[sensor_id]
        except KeyError:
            raise UnknownSensor(f"sensor {sensor_id!r} is not in the safe-side registry") from None

    def _matches(self, inc: IncidentState, ev: SecurityEvent, pos: SensorPosition) -> float | None:
        if inc.event_class != ev.event_class.value:
            return None
        dt = abs((ev.onset - inc.first_onset).total_seconds())
        if dt > self.settings.window_s and dt > self._travel_s(inc, pos) + TRAVEL_SLACK_S:
            return None
        for sid in inc.sensor_ids:
            other = self.sensors[sid]
            if haversine_m(pos.latitude, pos.longitude, other.latitude, other.longitude) > self.settings.max_sensor_distance_m:
                return None
        return dt

    def _travel_s(self, inc: IncidentState, pos: SensorPosition) -> float:
        """Seconds the sound takes from the incident's first sensor to this one: the most
        their onsets of one sound can differ, wherever it came from (triangle inequality).

        The window alone split one sound heard by sensors more than ~700 m apart (2 s of
        travel) although ``max_sensor_distance_m`` lets them share it.
        """
        first = min(inc.arrivals, key=lambda a: a.onset)
        metres = haversine_m(pos.latitude, pos.longitude, first.position[0], first.position[1])
        return metres / speed_of_sound(self.settings.temperature_c)

    def plan(self, ev: SecurityEvent, received_at: datetime) -> Plan:
        """The incident ``ev`` belongs to (existing or new), without changing any state."""
        pos = self.position(ev.sensor_id)
        arrival = Arrival(sensor_id=ev.sensor_id, position=(pos.latitude, pos.longitude, pos.altitude_m), onset=ev.onset)
        best: tuple[float, IncidentState] | None = None
        for inc in self._open.values():
            dt = self._matches(inc, ev, pos)
            if dt is not None and (best is None or dt < best[0]):
                best = (dt, inc)
        if best is None:
            estimate = self._estimate((arrival,))
            inc = IncidentState(
                incident_id=uuid.uuid4(),
                event_class=ev.event_class.value,
                opened_at=received_at,
                first_onset=ev.onset,
                arrivals=(arrival,),
                n_events=1,
                estimate=estimate,
                created_mono=self.monotonic(),
                confidence=ev.confidence,
            )
            return Plan(inc, is_new=True, shift_m=0.0, reaim=False)
        old = best[1]
        arrivals = old.arrivals + (arrival,)
        estimate = self._estimate(arrivals) if ev.sensor_id not in old.sensor_ids else old.estimate
        shift = haversine_m(old.estimate.lat, old.estimate.lon, estimate.lat, estimate.lon)
        inc = replace(
            old,
            arrivals=arrivals,
            n_events=old.n_events + 1,
            first_onset=min(old.first_onset, ev.onset),
            estimate=estimate,
            confidence=max(old.confidence, ev.confidence),
        )
        return Plan(inc, is_new=False, shift_m=shift, reaim=shift > self.settings.reaim_min_shift_m)

    def _estimate(self, arrivals: tuple[Arrival, ...]) -> SourceEstimate:
        distinct = {a.sensor_id for a in arrivals}
        if len(distinct) < self.settings.min_sensors_tdoa:
            first = min(arrivals, key=lambda a: a.onset)
            return SourceEstimate(
                lat=first.position[0],
                lon=first.position[1],
                uncertainty_m=self.detection_radius_m,
                method="sensor",
                sensor_ids=tuple(sorted(distinct, key=lambda s: min(a.onset for a in arrivals if a.sensor_id == s))),
            )
        return locate(arrivals, self.settings.temperature_c, detection_radius_m=self.detection_radius_m)

    def commit(self, plan: Plan) -> None:
        self._open[plan.incident.incident_id] = plan.incident

    def prune(self) -> int:
        """Forget incidents no late event can join any more (window plus a margin for transport delays)."""
        horizon = self.monotonic() - (self.settings.window_s + 30.0)
        stale = [k for k, v in self._open.items() if v.created_mono < horizon]
        for k in stale:
            del self._open[k]
        return len(stale)

    @property
    def open_count(self) -> int:
        return len(self._open)
