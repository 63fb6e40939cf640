"""Checking an inbound message before it may become an alert.

The edge agents are trusted to speak the schema, not trusted to be right: every
message is re-validated against :class:`messages.security_event.SecurityEvent`, its
topic must name the same sensor, the sensor must be in the safe-side registry, its
onset may not lie in the future, each sensor is rate-limited, and an event id already
seen is a duplicate (MQTT QoS 1 re-delivers). A rejection carries a reason code and a
human reason, and the message goes to the safe quarantine: nothing is dropped silently.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pydantic import ValidationError

from messages.security_event import SecurityEvent, sensor_from_topic
from safecity_bridge.settings import RateLimitSettings

MAX_FUTURE = timedelta(seconds=60)


class Rejected(Exception):
    """A message refused at intake; goes to the quarantine with ``code`` and the message."""

    def __init__(self, code: str, reason: str, *, sensor_id: str | None = None, event_id: str | None = None):
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.sensor_id = sensor_id
        self.event_id = event_id


def _summarise(exc: ValidationError) -> str:
    """Key paths and messages only (never the offending values: they are resident data)."""
    parts = [f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()[:5]]
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def parse(topic: str, payload: bytes, known_sensors: set[str], now: datetime) -> SecurityEvent:
    """The validated event, or :class:`Rejected` with the reason."""
    topic_sensor = sensor_from_topic(topic)
    if topic_sensor is None:
        raise Rejected("bad_topic", f"topic {topic[:120]!r} is not sonopolis-safe/v1/events/<sensor_id>")
    try:
        ev = SecurityEvent.model_validate_json(payload)
    except ValidationError as exc:
        code = "invalid_json" if any(e["type"] == "json_invalid" for e in exc.errors()) else "invalid_event"
        raise Rejected(code, _summarise(exc), sensor_id=topic_sensor) from None
    if ev.sensor_id != topic_sensor:
        raise Rejected("topic_mismatch", f"payload sensor {ev.sensor_id!r} published on the topic of {topic_sensor!r}", sensor_id=topic_sensor, event_id=str(ev.event_id))
    if ev.sensor_id not in known_sensors:
        raise Rejected("unknown_sensor", f"sensor {ev.sensor_id!r} is not in the safe-side registry", sensor_id=ev.sensor_id, event_id=str(ev.event_id))
    if ev.onset - now > MAX_FUTURE:
        raise Rejected("onset_in_future", f"onset {ev.onset.isoformat()} is {int((ev.onset - now).total_seconds())} s ahead of the bridge clock", sensor_id=ev.sensor_id, event_id=str(ev.event_id))
    return ev


@dataclass
class RateLimiter:
    """Token bucket per sensor: a flooding (broken or hijacked) sensor cannot drown the room."""

    settings: RateLimitSettings
    monotonic: Callable[[], float] = time.monotonic
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def check(self, ev: SecurityEvent) -> None:
        now = self.monotonic()
        tokens, last = self._buckets.get(ev.sensor_id, (float(self.settings.per_sensor_burst), now))
        tokens = min(float(self.settings.per_sensor_burst), tokens + (now - last) * self.settings.per_sensor_rate_per_s)
        if tokens < 1.0:
            self._buckets[ev.sensor_id] = (tokens, now)
            raise Rejected(
                "rate_limited",
                f"sensor {ev.sensor_id!r} above {self.settings.per_sensor_rate_per_s}/s (burst {self.settings.per_sensor_burst})",
                sensor_id=ev.sensor_id,
                event_id=str(ev.event_id),
            )
        self._buckets[ev.sensor_id] = (tokens - 1.0, now)


@dataclass
class RecentIds:
    """Event ids seen lately (bounded LRU). The database key stays the truth after a restart."""

    capacity: int
    _ids: OrderedDict[uuid.UUID, None] = field(default_factory=OrderedDict)

    def __contains__(self, event_id: uuid.UUID) -> bool:
        return event_id in self._ids

    def add(self, event_id: uuid.UUID) -> None:
        self._ids[event_id] = None
        self._ids.move_to_end(event_id)
        while len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
