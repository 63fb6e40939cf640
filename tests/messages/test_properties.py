"""Hostile input on the wire parsers, explored by hypothesis.

Anything can arrive on a broker topic: truncated JSON, binary junk, a valid frame
with one field swapped for something absurd. The parsers must answer every such
input with a ``ValidationError`` (a ``ValueError``) that says what is wrong, never
another exception, and must give back exactly what a valid sender sent.
"""

from __future__ import annotations

import json
import math
import string
from datetime import datetime, timedelta, timezone
from typing import Any

import jsonschema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from messages import level_frame, security_event
from messages.bands import BAND_KEYS
from messages.level_frame import LevelBatch, LevelFrame, SensorStatus
from messages.schema_export import export_all
from messages.security_event import SecurityClass, SecurityEvent

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SCHEMAS = export_all()
PARSERS: tuple[type[BaseModel], ...] = (LevelFrame, LevelBatch, SecurityEvent)

# ---------------------------------------------------------------- strategies

sensor_ids = st.from_regex(r"\A[a-z0-9][a-z0-9_-]{0,62}\Z", fullmatch=True)
aware_times = st.datetimes(
    min_value=datetime(2000, 1, 2), max_value=datetime(2100, 1, 1), timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30))])
)
levels = st.floats(min_value=0.0, max_value=150.0, allow_nan=False)
json_scalars = st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5), max_leaves=20)


@st.composite
def valid_frames(draw: st.DrawFn, sensor_id: str | None = None) -> dict[str, Any]:
    lo, hi = sorted((draw(levels), draw(levels)))
    n_bands = draw(st.integers(min_value=1, max_value=len(BAND_KEYS)))
    return {
        "schema": level_frame.SCHEMA_ID,
        "sensor_id": sensor_id or draw(sensor_ids),
        "time": draw(aware_times).isoformat(),
        "period_s": draw(st.floats(min_value=0.001, max_value=3600.0)),
        "laeq": draw(levels),
        "lafmax": hi,
        "lafmin": lo,
        "lcpeak": draw(st.floats(min_value=0.0, max_value=180.0)),
        "bands": {k: draw(levels) for k in BAND_KEYS[:n_bands]},
        "status": draw(st.sampled_from([s.value for s in SensorStatus])),
        "sources": {"car_horn": draw(st.integers(0, 1000)), "siren": draw(st.integers(0, 1000))},
    }


@st.composite
def valid_batches(draw: st.DrawFn) -> dict[str, Any]:
    sensor = draw(sensor_ids)
    return {"schema": level_frame.BATCH_SCHEMA_ID, "sensor_id": sensor, "frames": draw(st.lists(valid_frames(sensor), min_size=1, max_size=4))}


@st.composite
def valid_events(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "schema": security_event.SCHEMA_ID,
        "event_id": str(draw(st.uuids())),
        "sensor_id": draw(sensor_ids),
        "class": draw(st.sampled_from([c.value for c in SecurityClass])),
        "confidence": draw(st.floats(min_value=0.0, max_value=1.0)),
        "onset": draw(aware_times).isoformat(),
        "level_db": draw(st.floats(min_value=0.0, max_value=180.0)),
        "duration_ms": draw(st.integers(0, 60_000)),
        "model": draw(st.text(alphabet=string.ascii_letters + string.digits + "-._", max_size=64)),
    }


def refused_clearly(model: type[BaseModel], raw: str | bytes | Any) -> BaseModel | None:
    """Parse ``raw``; a refusal must be a ValidationError naming at least one problem."""
    try:
        if isinstance(raw, (str, bytes)):
            return model.model_validate_json(raw)
        return model.model_validate(raw)
    except ValidationError as exc:
        assert isinstance(exc, ValueError)
        assert exc.error_count() >= 1
        assert all(err["msg"] for err in exc.errors()), "every error carries a message"
        assert str(exc).strip()
        return None


# ---------------------------------------------------------------- hostile input


@SETTINGS
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_are_refused_with_a_message(payload: bytes) -> None:
    for model in PARSERS:
        assert refused_clearly(model, payload) is None


@SETTINGS
@given(json_values)
def test_arbitrary_json_never_crashes_a_parser(value: Any) -> None:
    text = json.dumps(value)
    for model in PARSERS:
        refused_clearly(model, text)
        refused_clearly(model, value)


@SETTINGS
@given(valid_frames(), st.sampled_from(sorted(LevelFrame.model_fields) + ["schema", "extra_field", "class", "gunshot"]), json_values)
def test_a_frame_with_one_field_replaced_is_accepted_only_if_still_valid(frame: dict[str, Any], key: str, junk: Any) -> None:
    key = "schema" if key == "schema_" else key
    tampered = {**frame, key: junk}
    parsed = refused_clearly(LevelFrame, json.dumps(tampered))
    if parsed is not None:
        # Whatever got through is a frame the published JSON Schema accepts too.
        jsonschema.validate(json.loads(parsed.model_dump_json(by_alias=True)), SCHEMAS["level-frame-v1.json"])
        assert key in LevelFrame.model_fields or key == "schema", f"extra field {key!r} must never ride along"


@SETTINGS
@given(valid_events(), st.sampled_from(["class", "confidence", "onset", "level_db", "sensor_id", "event_id", "laeq", "bands", "audio"]), json_values)
def test_an_event_with_one_field_replaced_is_accepted_only_if_still_valid(event: dict[str, Any], key: str, junk: Any) -> None:
    parsed = refused_clearly(SecurityEvent, json.dumps({**event, key: junk}))
    if parsed is not None:
        assert key not in {"laeq", "bands", "audio"}, f"{key!r} must never ride along on the safe path"
        assert parsed.event_class.value in security_event.SECURITY_CLASSES


@SETTINGS
@given(valid_frames(), st.sampled_from(["laeq", "lafmax", "lafmin", "lcpeak"]), st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400"]))
def test_non_finite_levels_are_refused(frame: dict[str, Any], key: str, literal: str) -> None:
    text = json.dumps(frame).replace(f'"{key}": {json.dumps(frame[key])}', f'"{key}": {literal}', 1)
    assert literal in text
    assert refused_clearly(LevelFrame, text) is None


# ---------------------------------------------------------------- round trips


@SETTINGS
@given(valid_frames())
def test_valid_frames_round_trip(frame: dict[str, Any]) -> None:
    parsed = LevelFrame.model_validate_json(json.dumps(frame))
    wire = parsed.model_dump_json(by_alias=True)
    jsonschema.validate(json.loads(wire), SCHEMAS["level-frame-v1.json"])
    again = LevelFrame.model_validate_json(wire)
    assert again == parsed
    assert again.time == datetime.fromisoformat(frame["time"]).astimezone(timezone.utc)
    assert again.time.tzinfo == timezone.utc
    assert [b for b in again.band_array() if b is not None] == list(frame["bands"].values())
    assert all(math.isfinite(v) for v in (again.laeq, again.lafmax, again.lafmin, again.lcpeak))
    assert level_frame.sensor_from_topic(again.topic()) == frame["sensor_id"]


@SETTINGS
@given(valid_batches())
def test_valid_batches_round_trip(batch: dict[str, Any]) -> None:
    parsed = LevelBatch.model_validate_json(json.dumps(batch))
    wire = parsed.model_dump_json(by_alias=True)
    jsonschema.validate(json.loads(wire), SCHEMAS["level-message-v1.json"])
    assert LevelBatch.model_validate_json(wire) == parsed
    assert len(parsed.frames) == len(batch["frames"])


@SETTINGS
@given(valid_batches(), sensor_ids)
def test_a_batch_smuggling_another_sensors_frame_is_refused(batch: dict[str, Any], intruder: str) -> None:
    frames = [*batch["frames"], {**batch["frames"][0], "sensor_id": intruder}]
    parsed = refused_clearly(LevelBatch, json.dumps({**batch, "frames": frames}))
    assert (parsed is None) == (intruder != batch["sensor_id"])


@SETTINGS
@given(valid_events())
def test_valid_events_round_trip(event: dict[str, Any]) -> None:
    parsed = SecurityEvent.model_validate_json(json.dumps(event))
    wire = parsed.to_json()
    jsonschema.validate(json.loads(wire), SCHEMAS["security-event-v1.json"])
    again = SecurityEvent.model_validate_json(wire)
    assert again == parsed
    assert str(again.event_id) == event["event_id"]
    assert security_event.sensor_from_topic(again.topic()) == event["sensor_id"]


# ---------------------------------------------------------------- topics


@SETTINGS
@given(st.text(max_size=200))
def test_sensor_from_topic_never_raises_and_only_returns_a_single_level(topic: str) -> None:
    for module in (level_frame, security_event):
        sensor = module.sensor_from_topic(topic)
        if sensor is not None:
            assert sensor and "/" not in sensor
            assert topic == f"{module.TOPIC_PREFIX}/{sensor}"


@SETTINGS
@given(sensor_ids, st.text(alphabet="/+#abc", min_size=1, max_size=10))
def test_topics_cross_neither_path_nor_level(sensor: str, suffix: str) -> None:
    smart_topic = f"{level_frame.TOPIC_PREFIX}/{sensor}"
    safe_topic = f"{security_event.TOPIC_PREFIX}/{sensor}"
    assert level_frame.sensor_from_topic(smart_topic) == sensor
    assert security_event.sensor_from_topic(safe_topic) == sensor
    assert level_frame.sensor_from_topic(safe_topic) is None, "a safe topic is never read as a smart one"
    assert security_event.sensor_from_topic(smart_topic) is None, "a smart topic is never read as a safe one"
    if "/" in suffix:
        assert level_frame.sensor_from_topic(f"{smart_topic}/{suffix}") is None
