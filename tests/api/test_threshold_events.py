"""``noise_threshold_exceeded`` measures a 5-minute LAeq for real: duration-weighted, over
frames that measure the street, only when they cover the window, judged once settled.

Each case was a wrong public event before (one loud second raised "LAeq,5min 80 dB";
ten loud 1 s frames outweighed a quiet 290 s one; a calibrator's tone counted as street
noise; a value computed before the window's last seconds arrived stayed for good).
Frames go through the ingestion's own writer into the real PostgreSQL schema.
"""

from __future__ import annotations

import datetime as dt
import math

import psycopg
import pytest
from pydantic import ValidationError

from api.events import EventStore
from api.settings import OpenEventSettings
from messages.bands import BAND_KEYS
from messages.level_frame import LevelFrame
from tests.api import seed
from tests.ingestion.factories import frame_dict

pytestmark = pytest.mark.anyio

W = dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.UTC)  # an aligned 5-minute window start
MIN = dt.timedelta(minutes=1)
SEC = dt.timedelta(seconds=1)
SETTLE_S = 120.0
SETTINGS = OpenEventSettings(laeq_5min_threshold_db=75.0, laeq_5min_min_coverage=0.9, laeq_5min_settle_s=SETTLE_S, run_in_api=False)
SETTLED = W + 5 * MIN + dt.timedelta(seconds=SETTLE_S)  # the first time window W may be judged

SENSORS = [(f"se-{n}", f"Capteur {n}", 45.44, 4.39) for n in
           ("lone", "long", "loud", "cal", "fault", "maint", "degraded", "late", "replay", "wide", "edge", "over")]


def laeq(parts: list[tuple[float, float]]) -> float:
    """Energetic, duration-weighted mean of (seconds, dB) parts, computed here independently."""
    return 10 * math.log10(sum(s * 10 ** (db / 10) for s, db in parts) / sum(s for s, _ in parts))


def frames(sensor: str, start: dt.datetime, n: int, db: float, *, period_s: float = 1.0, status: str = "ok") -> list[LevelFrame]:
    out = []
    for i in range(n):
        d = frame_dict(sensor, start + i * dt.timedelta(seconds=period_s), db,
                       bands={k: max(0.0, db - 10 + b % 5) for b, k in enumerate(BAND_KEYS)})
        d.update(period_s=period_s, status=status)
        out.append(LevelFrame.model_validate(d))
    return out


@pytest.fixture
def dsn(db) -> str:  # type: ignore[no-untyped-def]
    seed.migrate(db.smart)
    with psycopg.connect(db.smart) as conn:
        seed.add_sensors(conn, SENSORS)
    return db.smart


def store(dsn: str, *batches: list[LevelFrame]) -> None:
    from ingestion.writer import write_frames

    with psycopg.connect(dsn, autocommit=True) as conn:
        write_frames(conn, [f for b in batches for f in b])


async def evaluate(dsn: str, now: dt.datetime, settings: OpenEventSettings = SETTINGS) -> list[int]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        return await EventStore().evaluate(conn, settings, now=now)


def loud_events(dsn: str) -> dict[tuple[str, dt.datetime], tuple[int, float, float | None]]:
    """(sensor, window start) -> (id, value, coverage) of every noise_threshold_exceeded event."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT sensor_id, started_at, id, value, coverage FROM smart.api_events"
                            " WHERE event_type = 'noise_threshold_exceeded' ORDER BY id").fetchall()
    return {(s, t): (i, v, c) for s, t, i, v, c in rows}


async def test_a_lone_loud_second_is_not_a_loud_five_minutes(dsn: str) -> None:
    store(dsn, frames("se-lone", W + 10 * SEC, 1, 80.0),                  # 1 s of 300
          frames("se-lone", W + 5 * MIN, 269, 80.0),                      # 269 s: 89.7 %, just short
          frames("se-loud", W, 270, 80.0))                                # 270 s: exactly 90 %
    await evaluate(dsn, W + 11 * MIN)
    events = loud_events(dsn)
    assert ("se-lone", W) not in events, "one measured second raised an LAeq,5min event"
    assert ("se-lone", W + 5 * MIN) not in events, "a window measured over less than the minimum coverage was judged"
    _, value, coverage = events[("se-loud", W)]
    assert (value, coverage) == (80.0, pytest.approx(0.9))
    assert set(events) == {("se-loud", W)}


async def test_frames_weigh_by_their_duration(dsn: str) -> None:
    # A 290 s frame at 60 dB and ten 1 s frames at 85 dB: LAeq,5min 70.6 dB (the plain mean of
    # the 11 rows said 84.6): below 75 dB, no event.
    quiet = laeq([(290, 60.0), (10, 85.0)])
    assert round(quiet, 1) == 70.6
    store(dsn, frames("se-long", W, 1, 60.0, period_s=290.0), frames("se-long", W + 290 * SEC, 10, 85.0))
    # The same shape over 74 dB really exceeds: its event says 77.6 dB, not the rows' plain mean 89.6.
    loud = laeq([(290, 74.0), (10, 90.0)])
    store(dsn, frames("se-loud", W, 1, 74.0, period_s=290.0), frames("se-loud", W + 290 * SEC, 10, 90.0))
    # A frame longer than the window, or straddling two, does not measure either window.
    store(dsn, frames("se-wide", W, 1, 90.0, period_s=600.0),
          frames("se-wide", W + 10 * MIN, 270, 70.0), frames("se-wide", W + 14 * MIN + 50 * SEC, 1, 110.0, period_s=20.0))
    await evaluate(dsn, W + 20 * MIN)
    events = loud_events(dsn)
    assert ("se-long", W) not in events, f"LAeq,5min is {quiet:.1f} dB, under the 75 dB threshold"
    _, value, coverage = events[("se-loud", W)]
    assert value == round(loud, 1) == 77.6 and coverage == 1.0
    assert not {k for k in events if k[0] == "se-wide"}, "a 600 s frame, or one straddling a window edge, was taken as the window's level"


async def test_only_frames_that_measure_the_street_count(dsn: str) -> None:
    store(dsn,
          # a calibrator's 114 dB tone for 30 s in a quiet window: the street was at 55 dB
          frames("se-cal", W, 270, 55.0), frames("se-cal", W + 270 * SEC, 30, 114.0, status="calibrating"),
          # a technician at the sensor
          frames("se-maint", W, 270, 60.0), frames("se-maint", W + 270 * SEC, 30, 100.0, status="maintenance"),
          # 20 s of digital silence (fault, 0 dB) do not pull a loud street under the threshold, nor count as measured
          frames("se-fault", W, 280, 77.0), frames("se-fault", W + 280 * SEC, 20, 0.0, status="fault"),
          frames("se-fault", W + 5 * MIN, 200, 80.0), frames("se-fault", W + 5 * MIN + 200 * SEC, 100, 80.0, status="fault"),
          # clipped (degraded) frames are a lower bound of a loud street: they count
          frames("se-degraded", W, 300, 80.0, status="degraded"))
    await evaluate(dsn, W + 20 * MIN)
    events = loud_events(dsn)
    assert ("se-cal", W) not in events, "calibration frames were counted as street noise"
    assert ("se-maint", W) not in events, "maintenance frames were counted as street noise"
    _, value, coverage = events[("se-fault", W)]
    assert (value, coverage) == (77.0, pytest.approx(280 / 300, abs=1e-3)), "fault frames entered the level"
    assert ("se-fault", W + 5 * MIN) not in events, "fault frames counted towards the coverage"
    _, value, coverage = events[("se-degraded", W)]
    assert (value, coverage) == (80.0, 1.0)
    assert len(events) == 2


async def test_a_window_is_judged_once_settled_and_its_event_never_changes(dsn: str) -> None:
    # 280 s at 76 dB are stored when the window ends; 15 s at 95 dB arrive late, within the
    # settle delay, and the last 5 s later still.
    store(dsn, frames("se-late", W, 280, 76.0))
    assert await evaluate(dsn, W + 5 * MIN + 10 * SEC) == [], "a window was judged before its late frames could arrive"
    assert loud_events(dsn) == {}
    store(dsn, frames("se-late", W + 280 * SEC, 15, 95.0))
    ids = await evaluate(dsn, SETTLED)
    settled = round(laeq([(280, 76.0), (15, 95.0)]), 1)
    assert settled == 83.0
    assert len(ids) == 1 and loud_events(dsn) == {("se-late", W): (ids[0], settled, pytest.approx(295 / 300, abs=1e-3))}

    # Published means final: frames arriving after the event change neither its id nor its value,
    # and re-evaluating publishes nothing twice (no new id, no webhook delivery for an old event).
    store(dsn, frames("se-late", W + 295 * SEC, 5, 95.0))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO smart.api_webhooks (id, url, secret, event_types)"
                     " VALUES (gen_random_uuid(), 'https://h.example.org/x', 's', ARRAY['noise_threshold_exceeded'])")
    for later in (SETTLED + 30 * SEC, SETTLED + 5 * MIN):
        assert await evaluate(dsn, later) == []
    assert loud_events(dsn) == {("se-late", W): (ids[0], settled, pytest.approx(295 / 300, abs=1e-3))}
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM smart.api_webhook_deliveries").fetchone() == (0,)


async def test_a_window_completed_by_a_replay_raises_its_event_late(dsn: str) -> None:
    # The link drops after 150 s; at settle time the window is half measured: nothing yet.
    store(dsn, frames("se-replay", W, 150, 80.0))
    assert await evaluate(dsn, SETTLED) == []
    assert loud_events(dsn) == {}
    # The sensor replays its edge queue ten minutes later: the window is judged on the full data.
    store(dsn, frames("se-replay", W + 150 * SEC, 150, 70.0))
    ids = await evaluate(dsn, W + 15 * MIN)
    assert loud_events(dsn) == {("se-replay", W): (ids[0], round(laeq([(150, 80.0), (150, 70.0)]), 1), 1.0)}


async def test_the_published_value_visibly_exceeds_the_threshold(dsn: str) -> None:
    # LAeq,5min 75.04 dB is above 75 dB, but published at 0.1 dB it reads "75.0 exceeded 75.0":
    # no event. 75.05 dB is published as 75.1: an event.
    assert laeq([(300, 75.04)]) > 75.0
    store(dsn, frames("se-edge", W, 300, 75.04), frames("se-over", W, 300, 75.05),
          # with a threshold in tenths: 72.54 dB reads 72.5 (no event), 72.56 dB reads 72.6 (an event)
          frames("se-edge", W + 5 * MIN, 300, 72.54), frames("se-over", W + 5 * MIN, 300, 72.56))
    await evaluate(dsn, W + 6 * MIN + dt.timedelta(seconds=SETTLE_S))
    # (a lookback that no longer reaches the first window, judged against 75 dB above)
    tenths = SETTINGS.model_copy(update={"laeq_5min_threshold_db": 72.5, "lookback_min": 5.0})
    await evaluate(dsn, W + 11 * MIN + dt.timedelta(seconds=SETTLE_S), tenths)
    events = loud_events(dsn)
    assert {k: v for k, (_, v, _) in events.items()} == {("se-over", W): 75.1, ("se-over", W + 5 * MIN): 72.6}
    with psycopg.connect(dsn) as conn:
        published = conn.execute("SELECT value, threshold FROM smart.api_events WHERE event_type = 'noise_threshold_exceeded'"
                                 " ORDER BY id").fetchall()
    assert published == [(75.1, 75.0), (72.6, 72.5)]


def test_settings_refuse_a_lookback_that_would_let_windows_pass_unjudged() -> None:
    with pytest.raises(ValidationError, match="must exceed laeq_5min_settle_s"):
        OpenEventSettings(lookback_min=5, laeq_5min_settle_s=300)
    with pytest.raises(ValidationError, match="must exceed laeq_5min_settle_s"):
        OpenEventSettings(lookback_min=30, evaluate_every_s=900)
    OpenEventSettings(lookback_min=10, laeq_5min_settle_s=300, evaluate_every_s=30)
