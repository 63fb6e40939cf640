"""Real data for the API tests: sensors registered and 1 s-style rows written through the
ingestion's own writer, then aggregated by the ingestion's own refresh (plain path).

Rows are spaced ``step_s`` apart with ``period_s = step_s`` so a whole day stays cheap
while coverage and energetic means stay exact.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable

import psycopg

from api.schema import migrate as migrate_api
from ingestion import aggregates, registry
from ingestion.schema import migrate as migrate_ingestion
from ingestion.writer import LevelRow, LevelWriter
from messages.bands import N_BANDS

SENSORS = [
    ("se-jacquard", "Place Jacquard", 45.4397, 4.3872),
    ("se-chavanelle", "Place Chavanelle", 45.4355, 4.3925),
    ("se-fourneyron", "Place Fourneyron", 45.4420, 4.3890),
]


def migrate(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate_ingestion(conn, timescale="off")
        migrate_api(conn)


def add_sensors(conn: psycopg.Connection, sensors: list[tuple] = SENSORS) -> None:
    registry.upsert(conn, [registry.Sensor(sensor_id=s, name=n, latitude=la, longitude=lo, street=n, place="Saint-Étienne")
                           for s, n, la, lo in sensors])
    conn.commit()


def default_level(sensor_index: int, t: dt.datetime) -> float:
    """A plausible daily shape: quieter at night, distinct per sensor."""
    hour = t.hour + t.minute / 60
    return 52.0 + 4 * sensor_index + 8 * math.sin((hour - 8) / 24 * 2 * math.pi) + (t.second % 7) * 0.3


def add_levels(conn: psycopg.Connection, start: dt.datetime, end: dt.datetime, step_s: int = 10,
               sensors: list[str] | None = None, level: Callable[[int, dt.datetime], float] = default_level,
               horns_every: int = 37) -> int:
    """Write rows for each sensor in ``[start, end)`` and refresh the aggregates over it."""
    ids = sensors or [s[0] for s in SENSORS]
    writer = LevelWriter()
    rows = []
    n = 0
    for si, sid in enumerate(ids):
        t = start
        while t < end:
            laeq = round(level(si, t), 2)
            rows.append(LevelRow(sid, t, float(step_s), laeq, laeq + 4, laeq - 5, laeq + 18,
                                 [round(laeq - 15 + (b % 6), 2) for b in range(N_BANDS)], "ok",
                                 1 if n % horns_every == 0 else 0, 0))
            t += dt.timedelta(seconds=step_s)
            n += 1
    with conn.transaction():
        writer.write(conn, rows)
    aggregates.refresh(conn, start, end)
    conn.commit()
    return len(rows)
