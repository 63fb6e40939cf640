"""Plain-path aggregates checked against hand computations (energetic means, LA10/50/90, Lden)."""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from ingestion import aggregates, registry
from ingestion.writer import write_frames
from messages.bands import BAND_KEYS
from messages.level_frame import LevelFrame
from tests.ingestion.factories import T0, frame_dict, ready_db, sensor


def _energetic(levels: list[float]) -> float:
    return 10 * math.log10(sum(10 ** (x / 10) for x in levels) / len(levels))


def _percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (what percentile_cont does)."""
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo = math.floor(pos)
    return s[lo] + (s[min(lo + 1, len(s) - 1)] - s[lo]) * (pos - lo)


def test_minute_aggregate_matches_hand_computation(db):
    with ready_db(db.smart) as conn:
        # 45 of 60 seconds present: 30 s at 60 dB then 15 s climbing from 70 to 84 dB.
        levels = [60.0] * 30 + [70.0 + i for i in range(15)]
        frames = []
        for i, laeq in enumerate(levels):
            bands = {k: (50.0 if i % 2 else 56.0) for k in BAND_KEYS}
            frames.append(LevelFrame.model_validate(frame_dict("s1", T0 + timedelta(seconds=i), laeq, bands=bands, horns=1 if i == 3 else 0)))
        write_frames(conn, frames)
        result = aggregates.refresh(conn, T0, T0 + timedelta(minutes=1))
        assert result.minutes == 1
        row = conn.execute(
            "SELECT laeq, lamax, lamin, la10, la50, la90, bands, coverage, n_seconds, car_horn FROM smart.levels_1min"
        ).fetchone()
        laeq, lamax, lamin, la10, la50, la90, bands, coverage, n, horns = row
        assert abs(laeq - _energetic(levels)) < 1e-3
        assert abs(laeq - 10 * math.log10(sum(10 ** (x / 10) for x in levels) / 45)) < 1e-3
        assert laeq > sum(levels) / len(levels) + 5, "energetic mean is dominated by the loud seconds"
        assert lamax == 84.0 + 3 and lamin == 60.0 - 4
        assert abs(la10 - _percentile(levels, 0.9)) < 1e-3
        assert abs(la50 - _percentile(levels, 0.5)) < 1e-3
        assert abs(la90 - _percentile(levels, 0.1)) < 1e-3
        band_hand = 10 * math.log10((23 * 10 ** 5.6 + 22 * 10 ** 5.0) / 45)
        assert all(abs(b - band_hand) < 1e-3 for b in bands)
        assert abs(coverage - 0.75) < 1e-6 and n == 45 and horns == 1
        for table in ("levels_15min", "levels_1h", "levels_1d"):
            laeq_t, cov = conn.execute(f"SELECT laeq, coverage FROM smart.{table}").fetchone()
            assert abs(laeq_t - laeq) < 1e-3, table
        assert abs(conn.execute("SELECT coverage FROM smart.levels_15min").fetchone()[0] - 45 / 900) < 1e-6


def test_refresh_is_incremental_and_idempotent(db):
    with ready_db(db.smart) as conn:
        write_frames(conn, [LevelFrame.model_validate(frame_dict("s1", T0 + timedelta(seconds=i), 60.0)) for i in range(10)])
        aggregates.refresh(conn, T0, T0 + timedelta(hours=1))
        late = [LevelFrame.model_validate(frame_dict("s1", T0 + timedelta(seconds=10 + i), 70.0)) for i in range(10)]
        write_frames(conn, late)
        result = aggregates.refresh_touched(conn, [("s1", T0)])
        assert result.buckets["levels_1min"] == 1
        laeq = conn.execute("SELECT laeq FROM smart.levels_1min WHERE sensor_id = 's1'").fetchone()[0]
        assert abs(laeq - _energetic([60.0] * 10 + [70.0] * 10)) < 1e-3
        again = aggregates.refresh_touched(conn, [("s1", T0)])
        assert again.buckets["levels_1min"] == 1
        assert conn.execute("SELECT count(*) FROM smart.levels_1min").fetchone() == (1,)


def _lden_hand(per_hour: dict[datetime, float], tz: ZoneInfo) -> tuple[float, float, float, float]:
    groups: dict[str, list[float]] = {"d": [], "e": [], "n": []}
    for t, lvl in per_hour.items():
        h = t.astimezone(tz).hour
        groups["d" if 6 <= h < 18 else "e" if 18 <= h < 22 else "n"].append(lvl)
    ld, le, ln = (_energetic(groups[k]) for k in "den")
    night_hours = len(groups["n"])  # every hour of the local day is present
    lden = 10 * math.log10((12 * 10 ** (ld / 10) + 4 * 10 ** ((le + 5) / 10) + night_hours * 10 ** ((ln + 10) / 10)) / (16 + night_hours))
    return lden, ld, le, ln


def _write_local_day(conn, sensor_id: str, day: date, tz: ZoneInfo, level_of) -> dict[datetime, float]:
    """Two seconds per real hour of the local day, each hour at its own level."""
    start = datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(timezone.utc)
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), tz).astimezone(timezone.utc)
    per_hour, frames, t = {}, [], start
    while t < end:
        lvl = level_of(t.astimezone(tz).hour)
        per_hour[t] = lvl
        frames += [LevelFrame.model_validate(frame_dict(sensor_id, t + timedelta(seconds=s), lvl)) for s in (0, 1)]
        t += timedelta(hours=1)
    write_frames(conn, frames)
    aggregates.refresh(conn, start, end)
    return per_hour


def test_lden_on_dst_days_uses_the_real_night_length(db):
    tz = ZoneInfo("Europe/Paris")
    with ready_db(db.smart, ["paris", "lyon"]) as conn:
        level_of = lambda h: 45.0 + (h % 6) if (h < 6 or h >= 22) else 60.0 + (h % 4)  # noqa: E731
        cases = {date(2026, 3, 29): 23, date(2026, 10, 25): 25, date(2026, 6, 10): 24}
        for day, hours in cases.items():
            per_hour = _write_local_day(conn, "paris", day, tz, level_of)
            assert len(per_hour) == hours
            lden, ld, le, ln = _lden_hand(per_hour, tz)
            got = conn.execute("SELECT lden, lday, levening, lnight, coverage FROM smart.lden_daily WHERE sensor_id = 'paris' AND day = %s", (day,)).fetchone()
            assert got is not None, day
            assert abs(got[0] - lden) < 1e-3 and abs(got[1] - ld) < 1e-3 and abs(got[2] - le) < 1e-3 and abs(got[3] - ln) < 1e-3, day
            assert abs(got[4] - 2 * hours / (hours * 3600)) < 1e-6
            bucket = conn.execute("SELECT bucket FROM smart.levels_1d WHERE sensor_id = 'paris' AND bucket = %s", (datetime(day.year, day.month, day.day, tzinfo=tz),)).fetchone()
            assert bucket is not None, "daily bucket starts at local midnight"


def test_daily_bucket_follows_the_sensor_time_zone(db):
    with ready_db(db.smart, []) as conn:
        registry.upsert(conn, [sensor("tokyo", timezone="Asia/Tokyo"), sensor("paris")])
        t = datetime(2026, 11, 23, 16, 30, tzinfo=timezone.utc)  # 01:30 next day in Tokyo, 17:30 in Paris
        write_frames(conn, [LevelFrame.model_validate(frame_dict(s, t, 55.0)) for s in ("tokyo", "paris")])
        aggregates.refresh(conn, t, t + timedelta(seconds=1))
        rows = dict(conn.execute("SELECT sensor_id, bucket FROM smart.levels_1d").fetchall())
        assert rows["tokyo"] == datetime(2026, 11, 24, tzinfo=ZoneInfo("Asia/Tokyo"))
        assert rows["paris"] == datetime(2026, 11, 23, tzinfo=ZoneInfo("Europe/Paris"))


def test_rows_committed_during_the_daily_refresh_still_reach_the_days_lden(db, monkeypatch):
    """A catch-up batch committed while ``refresh_daily`` runs: the day's marks used to be
    taken after levels_1h was brought up to date, so Lden was computed without the batch
    and the day stayed stale (82.2 dB of night noise reported as 55.1 dB). The marks are
    now claimed first; the batch's own marks wait for the next daily refresh."""
    from ingestion import maintenance, pending
    from ingestion.maintenance import Maintainer
    from ingestion.settings import IngestSettings
    from ingestion.writer import LevelWriter, row_of
    from smart.db import SmartDbSettings

    def rows(start: datetime, n: int, laeq: float) -> list:  # type: ignore[type-arg]
        return [row_of(LevelFrame.model_validate(frame_dict("s1", start + timedelta(seconds=10 * i), laeq) | {"period_s": 10.0})) for i in range(n)]

    day = datetime(2026, 11, 20, tzinfo=timezone.utc)
    evening_and_night = rows(day.replace(hour=7), 360, 50) + rows(day.replace(hour=17), 360, 55) + rows(day.replace(hour=22), 360, 45)
    late_batch = rows(day.replace(hour=1), 360, 80)  # 02:00 local, loud, arriving late
    conn = ready_db(db.smart, ["s1"])
    writer = LevelWriter()
    maintainer = Maintainer(SmartDbSettings(dsn=db.smart), IngestSettings(), timescale=False)

    def commit(batch: list) -> None:  # type: ignore[type-arg]
        with conn.transaction():  # what the pipeline does: rows and their marks in one transaction
            writer.write(conn, batch)
            pending.mark(conn, batch)
        maintainer.touched(batch)

    commit(evening_and_night)
    real = aggregates.refresh_touched
    landed: list[bool] = []

    def pipeline_commits_meanwhile(c, marks, **kw):  # noqa: ANN001, ANN202
        if kw.get("tables") is None and not landed:
            landed.append(True)
            commit(late_batch)
        return real(c, marks, **kw)

    monkeypatch.setattr(maintenance.aggregates, "refresh_touched", pipeline_commits_meanwhile)
    maintainer.refresh_daily()  # the batch lands while it runs
    assert pending.count(conn) == 60, "the late batch's 60 minutes wait for the next refresh"
    maintainer.refresh_short()
    maintainer.refresh_daily()
    monkeypatch.setattr(maintenance.aggregates, "refresh_touched", real)
    query = "SELECT lden, lnight FROM smart.lden_daily WHERE sensor_id = 's1' AND day = '2026-11-20'"
    incremental = conn.execute(query).fetchone()
    aggregates.refresh(conn, day - timedelta(hours=2), day + timedelta(days=1))
    conn.commit()
    assert landed and maintainer.pending() == 0 and pending.count(conn) == 0
    assert incremental == conn.execute(query).fetchone()
    assert incremental[1] > 76  # the loud late night is in it
    maintainer.close()
    conn.close()


def test_only_measured_frames_count_in_statistics_and_coverage(db):
    """A calibrator's 94 dB tone and a dead microphone's 0 dB are stored, never published as the street's level.

    They used to be: 50 s at 60 dB plus 10 s of calibration read LAeq 86.2 dB, LAmax 94.2,
    and a microphone dead for half a minute halved LA90 to 0 dB with full coverage.
    """
    with ready_db(db.smart) as conn:
        street = [frame_dict("s1", T0 + timedelta(seconds=i), 60.0) for i in range(50)]
        calibration = [frame_dict("s1", T0 + timedelta(seconds=50 + i), 94.0) | {"status": "calibrating"} for i in range(10)]
        minute2 = T0 + timedelta(minutes=1)
        live = [frame_dict("s1", minute2 + timedelta(seconds=i), 60.0) | {"status": "degraded" if i == 0 else "ok"} for i in range(30)]
        silent = {k: 0.0 for k in BAND_KEYS}
        dead = [frame_dict("s1", minute2 + timedelta(seconds=30 + i), 0.0, bands=silent) | {"status": "fault"} for i in range(20)]
        visit = [frame_dict("s1", minute2 + timedelta(seconds=50 + i), 70.0) | {"status": "maintenance"} for i in range(10)]
        write_frames(conn, [LevelFrame.model_validate(f) for f in street + calibration + live + dead + visit])
        aggregates.refresh(conn, T0, T0 + timedelta(minutes=2))
        rows = conn.execute("SELECT laeq, lamax, la10, la90, coverage, n_seconds FROM smart.levels_1min ORDER BY bucket").fetchall()
        (laeq1, lamax1, la10_1, _, cov1, n1), (laeq2, _, _, la90_2, cov2, n2) = rows
        assert abs(laeq1 - 60.0) < 1e-3 and lamax1 == 63.0 and abs(la10_1 - 60.0) < 1e-3
        assert abs(cov1 - 50 / 60) < 1e-6 and n1 == 50
        assert abs(laeq2 - 60.0) < 1e-3 and abs(la90_2 - 60.0) < 1e-3, "a degraded frame counts; fault and maintenance do not"
        assert abs(cov2 - 30 / 60) < 1e-6 and n2 == 30
        assert conn.execute("SELECT count(*) FROM smart.levels WHERE status <> 'ok'").fetchone()[0] == 41, "all stored"
        only_fault = T0 + timedelta(minutes=5)
        write_frames(conn, [LevelFrame.model_validate(frame_dict("s1", only_fault + timedelta(seconds=i), 0.0, bands=silent) | {"status": "fault"}) for i in range(5)])
        aggregates.refresh(conn, only_fault, only_fault + timedelta(minutes=1))
        assert conn.execute("SELECT count(*) FROM smart.levels_1min WHERE bucket = %s", (only_fault,)).fetchone()[0] == 0


def test_n_seconds_counts_seconds_not_frames(db):
    """A sensor integrating over 10 s: 6 frames fill a minute (n_seconds was the frame count, 6)."""
    with ready_db(db.smart) as conn:
        write_frames(conn, [LevelFrame.model_validate(frame_dict("s1", T0 + timedelta(seconds=10 * i), 60.0) | {"period_s": 10.0}) for i in range(6)])
        aggregates.refresh(conn, T0, T0 + timedelta(minutes=1))
        assert conn.execute("SELECT n_seconds, coverage FROM smart.levels_1min").fetchone() == (60, 1.0)


def test_upgrading_a_plain_schema_recomputes_its_aggregates_over_measured_frames(db, tmp_path):
    """Migration 4 changes what counts; the rows a previous release computed are recomputed at once."""
    import shutil

    import psycopg

    from common.migrations import apply
    from ingestion.schema import MEASURED_ONLY, MIGRATIONS_DIR, migrate

    # The schema as the previous release left it: migrations 1-3 and its aggregate rows.
    for p in MIGRATIONS_DIR.glob("*.sql"):
        if int(p.name[:4]) < MEASURED_ONLY and ".timescale." not in p.name:
            shutil.copy(p, tmp_path / p.name)
    with psycopg.connect(db.smart, autocommit=True) as conn:
        assert apply(conn, "smart", tmp_path) == [1, 2, 3]
    with psycopg.connect(db.smart) as conn:
        registry.upsert(conn, [sensor("s1")])
        frames = [frame_dict("s1", T0 + timedelta(seconds=i), 60.0) for i in range(30)]
        frames += [frame_dict("s1", T0 + timedelta(seconds=30 + i), 94.0) | {"status": "calibrating"} for i in range(30)]
        write_frames(conn, [LevelFrame.model_validate(f) for f in frames])
        conn.execute("INSERT INTO smart.levels_1min (sensor_id, bucket, laeq, coverage, n_seconds, car_horn, siren)"
                     " VALUES ('s1', %s, 91.0, 1.0, 60, 0, 0)", (T0,))  # what the previous release computed
        conn.commit()
        assert migrate(conn) == [MEASURED_ONLY, 5]
        laeq, coverage = conn.execute("SELECT laeq, coverage FROM smart.levels_1min WHERE sensor_id = 's1'").fetchone()
        assert abs(laeq - 60.0) < 1e-3 and abs(coverage - 0.5) < 1e-6
        assert conn.execute("SELECT laeq FROM smart.levels_1d WHERE sensor_id = 's1'").fetchone()[0] is not None


def test_upgrade_removes_the_old_rows_of_buckets_without_measured_frames(db, tmp_path, monkeypatch):
    """A whole minute (or hour) of calibration or fault had a row before migration 4; the
    recompute upserted only buckets with measured frames, so those rows stayed: a 94 dB
    calibration minute, and a dead microphone's 0 dB hour that went on into the day's Lden
    (Lnight 49.42 dB instead of 50.00, Lden 61.20 instead of 61.34, coverage counting
    the fault's 2 s)."""
    import shutil

    import psycopg

    from common.migrations import apply
    from ingestion.schema import MEASURED_ONLY, MIGRATIONS_DIR, migrate

    for p in MIGRATIONS_DIR.glob("*.sql"):
        if int(p.name[:4]) < MEASURED_ONLY and ".timescale." not in p.name:
            shutil.copy(p, tmp_path / p.name)
    with psycopg.connect(db.smart, autocommit=True) as conn:
        assert apply(conn, "smart", tmp_path) == [1, 2, 3]
    tz = ZoneInfo("Europe/Paris")
    day = date(2026, 11, 20)
    start = datetime(2026, 11, 20, tzinfo=tz).astimezone(timezone.utc)
    with psycopg.connect(db.smart) as conn:
        registry.upsert(conn, [sensor("s1")])
        frames, status_of = [], {}
        for h in range(24):  # two seconds per hour: 50 dB by night, 60 dB by day, hour 03 a dead microphone
            t = start + timedelta(hours=h)
            status_of[t] = "fault" if h == 3 else "ok"
            lvl = 0.0 if h == 3 else (60.0 if 6 <= h < 22 else 50.0)
            bands = {k: 0.0 for k in BAND_KEYS} if h == 3 else None
            frames += [frame_dict("s1", t + timedelta(seconds=s), lvl, bands=bands) | {"status": status_of[t]} for s in (0, 1)]
        calibration = start + timedelta(hours=10, minutes=30)
        frames += [frame_dict("s1", calibration + timedelta(seconds=i), 94.0) | {"status": "calibrating"} for i in range(60)]
        write_frames(conn, [LevelFrame.model_validate(f) for f in frames])
        # What the previous release computed: the same statements, counting every frame.
        monkeypatch.setattr(aggregates, "MEASURED", "true")
        monkeypatch.setattr(aggregates, "_STATEMENTS", {})
        aggregates.refresh(conn, start, start + timedelta(days=1))
        conn.commit()
        monkeypatch.undo()
        assert conn.execute("SELECT laeq FROM smart.levels_1min WHERE bucket = %s", (calibration,)).fetchone()[0] == 94.0
        assert migrate(conn) == [MEASURED_ONLY, 5]
        assert conn.execute("SELECT count(*) FROM smart.levels_1min WHERE bucket = %s", (calibration,)).fetchone()[0] == 0
        fault_hour = start + timedelta(hours=3)
        assert conn.execute("SELECT count(*) FROM smart.levels_1h WHERE bucket = %s", (fault_hour,)).fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM smart.levels_15min WHERE bucket = %s", (fault_hour,)).fetchone()[0] == 0
        lden, lnight, coverage = conn.execute("SELECT lden, lnight, coverage FROM smart.lden_daily WHERE day = %s", (day,)).fetchone()
        assert abs(lnight - 50.0) < 1e-3
        hand = 10 * math.log10((12 * 10 ** 6.0 + 4 * 10 ** 6.5 + 8 * 10 ** 6.0) / 24)
        assert abs(lden - hand) < 1e-3
        assert abs(coverage - 46 / 86400) < 1e-6
