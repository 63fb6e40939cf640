"""Property tests of the bridge's intake: any bytes on any topic give an event or a reasoned rejection."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from messages.security_event import SecurityEvent
from safecity_bridge.intake import Rejected, parse

NOW = datetime(2026, 11, 23, 12, tzinfo=timezone.utc)
KNOWN = {"ste-01-01"}
TOPICS = st.one_of(st.text(max_size=80), st.sampled_from(["sonopolis-safe/v1/events/ste-01-01", "sonopolis-safe/v1/events/x/y", "sonopolis/v1/levels/ste-01-01"]))
JSONISH = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=30),
    lambda kids: st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=12), kids, max_size=6),
    max_leaves=25,
)
CODES = {"bad_topic", "invalid_json", "invalid_event", "topic_mismatch", "unknown_sensor", "onset_in_future"}


def _outcome(topic: str, payload: bytes) -> SecurityEvent | Rejected:
    try:
        return parse(topic, payload, KNOWN, NOW)
    except Rejected as exc:
        return exc


@settings(max_examples=300, deadline=None)
@given(topic=TOPICS, payload=st.binary(max_size=2000))
def test_arbitrary_bytes_never_crash(topic: str, payload: bytes) -> None:
    out = _outcome(topic, payload)
    assert isinstance(out, Rejected) and out.code in CODES and out.reason


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(["event_id", "sensor_id", "class", "confidence", "onset", "level_db", "duration_ms", "model", "extra"]), junk=JSONISH)
def test_events_with_one_hostile_field(field: str, junk: object) -> None:
    event = {"schema": "sonopolis.security-event/1", "event_id": "6f1c1e9e-3a53-4c1b-9a51-8f0f2f7e1d11", "sensor_id": "ste-01-01",
             "class": "gunshot", "confidence": 0.9, "onset": "2026-11-23T11:59:59.123Z", "level_db": 98.0}
    event[field] = junk
    out = _outcome("sonopolis-safe/v1/events/ste-01-01", json.dumps(event).encode())
    if isinstance(out, Rejected):
        assert out.code in CODES and out.reason
    else:
        assert out.sensor_id == "ste-01-01" and 0 <= out.confidence <= 1


def test_rejection_reasons_name_fields_but_never_echo_values() -> None:
    marker = "resident-said-something-7f3a"
    for field in ("event_id", "class", "onset", "model", "confidence", "extra"):
        event = {"schema": "sonopolis.security-event/1", "sensor_id": "ste-01-01", "class": "gunshot", "confidence": 0.9,
                 "onset": "2026-11-23T11:59:59.123Z", "level_db": 98.0, "model": "m" * 65 if field == "model" else "x"}
        event[field] = marker if field != "model" else marker * 4
        out = _outcome("sonopolis-safe/v1/events/ste-01-01", json.dumps(event).encode())
        assert isinstance(out, Rejected), field
        assert marker not in out.reason and field.split("_")[0] in out.reason, (field, out.reason)
