"""Property tests of the ingestion's message parser: any bytes on any topic give rows or a quarantine reason."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from ingestion.validation import REASON_CODES, Rejected, parse
from messages.bands import BAND_KEYS

NOW = datetime(2026, 11, 23, 12, tzinfo=timezone.utc)
TOPICS = st.one_of(st.text(max_size=80), st.sampled_from(["sonopolis/v1/levels/ste-01-01", "sonopolis/v1/levels/", "sonopolis/v1/levels/a/b", "sonopolis-safe/v1/events/ste-01-01"]))
JSONISH = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=30),
    lambda kids: st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=12), kids, max_size=6),
    max_leaves=25,
)


def _check(result: object) -> None:
    if isinstance(result, Rejected):
        assert result.reason_code in REASON_CODES
        assert result.reason and len(result.reason) < 2000
    else:
        assert isinstance(result, list) and result


@settings(max_examples=300, deadline=None)
@given(topic=TOPICS, payload=st.binary(max_size=2000))
def test_arbitrary_bytes_never_crash(topic: str, payload: bytes) -> None:
    _check(parse(topic, payload, is_known=lambda s: True, now=NOW, future_tolerance=timedelta(minutes=2)))


@settings(max_examples=300, deadline=None)
@given(doc=JSONISH)
def test_arbitrary_json_never_crashes(doc: object) -> None:
    _check(parse("sonopolis/v1/levels/ste-01-01", json.dumps(doc).encode(), is_known=lambda s: True, now=NOW, future_tolerance=timedelta(minutes=2)))


@settings(max_examples=200, deadline=None)
@given(
    laeq=st.floats(allow_nan=True, allow_infinity=True),
    field=st.sampled_from(["laeq", "lafmax", "lcpeak", "period_s", "time", "sensor_id", "bands", "status", "sources"]),
    junk=JSONISH,
)
def test_frames_with_one_hostile_field_are_quarantined_with_a_reason(laeq: float, field: str, junk: object) -> None:
    frame = {"schema": "sonopolis.level-frame/1", "sensor_id": "ste-01-01", "time": "2026-11-23T11:59:00Z", "period_s": 1.0,
             "laeq": 60.0, "lafmax": 65.0, "lafmin": 50.0, "lcpeak": 80.0, "bands": {k: 40.0 for k in BAND_KEYS}}
    frame[field] = junk if field != "laeq" else laeq
    result = parse("sonopolis/v1/levels/ste-01-01", json.dumps(frame).encode(), is_known=lambda s: True, now=NOW, future_tolerance=timedelta(minutes=2))
    _check(result)
    if not isinstance(result, Rejected):
        assert 0 <= result[0].laeq <= 150  # type: ignore[attr-defined]
