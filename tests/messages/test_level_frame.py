"""The smart wire message: what it accepts, what it refuses and why."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import jsonschema
import pytest
from pydantic import ValidationError

from messages.bands import BAND_KEYS, N_BANDS, bands_below
from messages.level_frame import LevelBatch, LevelFrame, sensor_from_topic
from messages.schema_export import export_all


def frame(**over: object) -> dict:
    base = {
        "schema": "sonopolis.level-frame/1",
        "sensor_id": "ste-jaures-01",
        "time": "2026-11-23T10:00:00Z",
        "period_s": 1.0,
        "laeq": 62.0,
        "lafmax": 70.0,
        "lafmin": 55.0,
        "lcpeak": 90.0,
        "bands": {k: 40.0 for k in BAND_KEYS},
    }
    base.update(over)
    return base


def test_thirty_nominal_bands_25hz_to_20khz() -> None:
    assert N_BANDS == 30
    assert BAND_KEYS[0] == "25" and BAND_KEYS[-1] == "20000" and "31.5" in BAND_KEYS


def test_valid_frame_round_trips_and_matches_published_schema() -> None:
    f = LevelFrame.model_validate(frame())
    assert f.time == datetime(2026, 11, 23, 10, tzinfo=timezone.utc)
    wire = json.loads(f.model_dump_json(by_alias=True))
    jsonschema.validate(wire, export_all()["level-frame-v1.json"])
    assert LevelFrame.model_validate(wire) == f


def test_16khz_sensor_omits_bands_above_nyquist() -> None:
    keys = bands_below(8000)
    assert keys[-1] == "6300"
    f = LevelFrame.model_validate(frame(bands={k: 30.0 for k in keys}))
    assert f.band_array()[-1] is None


@pytest.mark.parametrize(
    "over, needle",
    [
        ({"laeq": 151.0}, "less than or equal to 150"),
        ({"laeq": -1.0}, "greater than or equal to 0"),
        ({"bands": {"27": 40.0}}, "unknown third-octave band"),
        ({"bands": {"31.5": 40.0}}, "contiguous from 25 Hz"),
        ({"time": "2026-11-23T10:00:00"}, "UTC offset"),
        ({"lafmin": 80.0}, "exceeds lafmax"),
        ({"sources": {"gunshot": 1}}, "Extra inputs are not permitted"),
        ({"event": "gunshot"}, "Extra inputs are not permitted"),
        ({"sensor_id": "Bad Id"}, "pattern"),
    ],
)
def test_invalid_frames_say_why(over: dict, needle: str) -> None:
    with pytest.raises(ValidationError) as err:
        LevelFrame.model_validate(frame(**over))
    assert needle in str(err.value)


def test_future_frames_refused() -> None:
    f = LevelFrame.model_validate(frame())
    with pytest.raises(ValueError, match="in the future"):
        f.check_not_future(f.time - timedelta(hours=1), timedelta(minutes=2))
    f.check_not_future(f.time, timedelta(minutes=2))


def test_batch_of_one_sensor_only() -> None:
    b = LevelBatch.model_validate({"schema": "sonopolis.level-batch/1", "sensor_id": "ste-jaures-01", "frames": [frame(), frame(time="2026-11-23T10:00:01Z")]})
    assert len(b.frames) == 2
    with pytest.raises(ValidationError, match="holds frames of"):
        LevelBatch.model_validate({"schema": "sonopolis.level-batch/1", "sensor_id": "ste-jaures-02", "frames": [frame()]})


def test_topic_layout() -> None:
    assert sensor_from_topic("sonopolis/v1/levels/ste-jaures-01") == "ste-jaures-01"
    assert sensor_from_topic("sonopolis/v1/levels/a/b") is None
    assert sensor_from_topic("sonopolis-safe/v1/events/x") is None


def test_times_that_cannot_be_utc_or_predate_the_sensor_clock_are_validation_errors() -> None:
    """Not an OverflowError escaping the parser (it stopped the ingestion once); not 1970 data."""
    from messages.security_event import SecurityEvent

    frame = {"schema": "sonopolis.level-frame/1", "sensor_id": "s1", "time": "2026-01-01T00:00:00Z", "period_s": 1.0,
             "laeq": 50.0, "lafmax": 52.0, "lafmin": 48.0, "lcpeak": 70.0, "bands": {"25": 40.0}}
    for when, why in (("0001-01-01T00:00:00+01:00", "cannot be expressed in UTC"), ("1970-01-01T00:00:00Z", "before 2000-01-01")):
        with pytest.raises(ValidationError, match=why):
            LevelFrame.model_validate({**frame, "time": when})
        with pytest.raises(ValidationError, match=why):
            SecurityEvent.model_validate({"sensor_id": "s1", "class": "gunshot", "confidence": 0.9, "onset": when, "level_db": 90.0})
