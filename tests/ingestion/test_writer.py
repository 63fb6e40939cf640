"""COPY write path: rows land exactly once, duplicates are counted, partitions appear."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import psycopg

from ingestion import partitions
from ingestion.writer import LevelWriter, row_of, write_frames
from messages.bands import BAND_KEYS
from messages.level_frame import LevelFrame
from tests.ingestion.factories import T0, frame_dict, ready_db, seconds


def _frames(sensor: str, n: int, start=T0, laeq: float = 60.0) -> list[LevelFrame]:
    return [LevelFrame.model_validate(frame_dict(sensor, t, laeq + (i % 7))) for i, t in enumerate(seconds(start, n))]


def test_copy_writes_rows_with_bands_in_wire_order(db):
    with ready_db(db.smart) as conn:
        bands = {k: 40.0 + i for i, k in enumerate(BAND_KEYS[:27])}  # 16 kHz sensor: top 3 bands omitted
        frame = LevelFrame.model_validate(frame_dict("s1", T0, 62.5, bands=bands, horns=2))
        result = write_frames(conn, [frame])
        assert (result.inserted, result.duplicates) == (1, 0)
        row = conn.execute("SELECT laeq, bands, car_horn, status FROM smart.levels WHERE sensor_id = 's1'").fetchone()
        assert row[0] == 62.5
        assert row[1][:27] == [40.0 + i for i in range(27)]
        assert row[1][27:] == [None, None, None]
        assert row[2:] == (2, "ok")


def test_duplicates_are_idempotent_and_counted(db):
    with ready_db(db.smart) as conn:
        frames = _frames("s1", 100)
        writer = LevelWriter()
        with conn.transaction():
            first = writer.write(conn, [row_of(f) for f in frames])
        # A redelivery overlapping the first batch, plus 20 new seconds and an in-batch duplicate.
        again = frames[50:] + _frames("s1", 20, start=T0 + timedelta(seconds=100)) + frames[:1]
        with conn.transaction():
            second = writer.write(conn, [row_of(f) for f in again])
        assert (first.inserted, first.duplicates) == (100, 0)
        assert (second.inserted, second.duplicates) == (20, 51)
        assert conn.execute("SELECT count(*), count(DISTINCT time) FROM smart.levels").fetchone() == (120, 120)


def test_staging_path_and_text_copy_give_same_rows(db):
    with ready_db(db.smart) as conn:
        frames = _frames("s2", 30)
        for writer in (LevelWriter(direct_first=False), LevelWriter(binary=False)):
            with conn.transaction():
                writer.write(conn, [row_of(f) for f in frames])
        assert conn.execute("SELECT count(*) FROM smart.levels").fetchone() == (30,)
        stored = conn.execute("SELECT laeq FROM smart.levels ORDER BY time").fetchall()
        assert [r[0] for r in stored] == [f.laeq for f in frames]


def test_partitions_are_created_for_late_batches_and_dropped_by_retention(db):
    with ready_db(db.smart) as conn:
        old = T0 - timedelta(days=40)
        write_frames(conn, _frames("s1", 3, start=old) + _frames("s1", 3))
        days = partitions.existing_days(conn)
        assert old.date() in days and T0.date() in days
        with conn.transaction():
            dropped = partitions.drop_older_than(conn, T0.date() - timedelta(days=30))
        assert dropped == [old.date()]
        assert conn.execute("SELECT count(*) FROM smart.levels").fetchone() == (3,)
        with conn.transaction():
            created = partitions.ensure_ahead(conn, T0.date(), 3)
        assert created == [T0.date() - timedelta(days=1)] + [T0.date() + timedelta(days=i) for i in (1, 2, 3)]


def test_smart_role_cannot_touch_the_safe_schema(db):
    with psycopg.connect(db.smart) as conn:
        try:
            conn.execute("CREATE TABLE safe.x (i int)")
            raise AssertionError("smart role could create in the safe schema")
        except psycopg.errors.InsufficientPrivilege:
            pass


def test_partition_names_are_zero_padded_for_every_year() -> None:
    """strftime's %Y gave "levels_p9990601" for 0999-06-01, a name the partition scan could not read back."""
    from datetime import date

    from ingestion import partitions

    assert partitions.partition_name(date(999, 6, 1)) == "levels_p09990601"
    assert partitions.partition_name(date(2026, 12, 7)) == "levels_p20261207"


def test_retention_keeps_the_whole_local_day_of_every_frame_it_still_accepts(db, monkeypatch):
    """The oldest frames the pipeline accepts (just under ``raw_retention_days`` old) belong to
    a Paris day that began at 23:00 UTC the day before; retention dropped that UTC day, so a
    late frame recomputed the day's aggregate from what was left (n_seconds 139 of 145,
    without the hour 00-01 local) over the complete one."""
    from datetime import datetime as real_datetime

    from ingestion import aggregates, maintenance
    from ingestion.maintenance import Maintainer
    from ingestion.settings import IngestSettings
    from ingestion.validation import parse
    from ingestion.writer import LevelWriter
    from smart.db import SmartDbSettings
    from tests.ingestion.factories import frame_dict, payload

    now = real_datetime(2026, 12, 7, 12, 0, tzinfo=timezone.utc)

    class Clock(real_datetime):
        @classmethod
        def now(cls, tz=None):  # noqa: ANN001, ANN206
            return now if tz is None else now.astimezone(tz)

    monkeypatch.setattr(maintenance, "datetime", Clock)
    with ready_db(db.smart) as conn:
        day_start = datetime(2026, 11, 29, 23, 0, tzinfo=timezone.utc)  # 2026-11-30 00:00 in Paris
        write_frames(conn, [LevelFrame.model_validate(frame_dict("s1", day_start + timedelta(minutes=10 * i), 55.0)) for i in range(144)])
        aggregates.refresh(conn, day_start, day_start + timedelta(days=1))
        conn.commit()
        maintainer = Maintainer(SmartDbSettings(dsn=db.smart), IngestSettings(raw_retention_days=7), timescale=False)
        maintainer.housekeeping()
        maintainer.close()
        late = datetime(2026, 11, 30, 12, 30, 30, tzinfo=timezone.utc)  # 6 d 23.5 h old: accepted
        rows = parse("sonopolis/v1/levels/s1", payload(frame_dict("s1", late, 55.0)), is_known=None, now=now,
                     future_tolerance=timedelta(seconds=120), max_age=timedelta(days=7))
        assert isinstance(rows, list), rows
        with conn.transaction():
            LevelWriter().write(conn, rows)
        aggregates.refresh_touched(conn, [("s1", late.replace(second=0))])
        n_seconds, coverage = conn.execute("SELECT n_seconds, coverage FROM smart.levels_1d WHERE bucket = %s", (day_start,)).fetchone()
        assert n_seconds == 145 and abs(coverage - 145 / 86400) < 1e-7
