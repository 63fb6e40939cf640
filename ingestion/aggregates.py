"""Aggregates of the plain PostgreSQL path, maintained incrementally by the service.

A write marks the (sensor, minute) pairs it touched; a refresh recomputes exactly
the 1 min / 15 min / 1 h / local-day buckets containing them, from the 1 s rows
(percentiles cannot be combined from sub-aggregates), and the daily Lden of the
touched local days from the hourly rows. Upserts make a refresh idempotent and safe
to repeat after a crash; a touched bucket left without any measured frame loses its
row (rows computed before migration 4 counted calibration and fault frames). On the TimescaleDB path the same statistics are continuous
aggregates (see :mod:`ingestion.aggsql`) and nothing here runs.

Public entry points: :func:`refresh` (a time range, for tools, tests and catch-up)
and :func:`refresh_touched` (the service's precise incremental refresh).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from psycopg import sql

from ingestion.aggsql import GRANULARITIES, MEASURED, Granularity, lden_expression, scalar_columns

log = logging.getLogger(__name__)

DEFAULT_TIMEZONE = "Europe/Paris"
_TOUCHED = "sonopolis_touched_minutes"
_ORIGIN = "TIMESTAMPTZ '2000-01-01 00:00:00+00'"


@dataclass(frozen=True)
class RefreshResult:
    minutes: int
    """Distinct (sensor, minute) pairs that were touched."""
    buckets: dict[str, int]
    """Rows upserted per aggregate table (incl. ``lden_daily``)."""
    removed: dict[str, int] = field(default_factory=dict)
    """Rows deleted per aggregate table: touched buckets that hold no measured frame."""


def _touched_buckets(g: Granularity) -> str:
    tz = "coalesce(s.timezone, %(default_tz)s)"
    return f"""touched AS (
  SELECT DISTINCT t.sensor_id, {g.bucket('t.minute', tz)} AS bucket, {g.bucket_end('t.minute', tz)} AS bucket_end
  FROM pg_temp.{_TOUCHED} t LEFT JOIN {{sensors}} s ON s.sensor_id = t.sensor_id
)"""


def _bucket_statement(schema: str, g: Granularity) -> sql.Composed:
    names = [name for name, _ in scalar_columns()]
    exprs = ",\n    ".join(expr for _, expr in scalar_columns())
    text = f"""
WITH {_touched_buckets(g)}
INSERT INTO {{table}} (sensor_id, bucket, {", ".join(names)}, coverage)
SELECT tb.sensor_id, tb.bucket,
    {exprs},
    least(1.0, sum(l.period_s) / extract(epoch FROM tb.bucket_end - tb.bucket))::real
FROM touched tb
JOIN {{levels}} l ON l.sensor_id = tb.sensor_id AND l.time >= tb.bucket AND l.time < tb.bucket_end AND {MEASURED}
GROUP BY tb.sensor_id, tb.bucket, tb.bucket_end
ON CONFLICT (sensor_id, bucket) DO UPDATE SET
    {", ".join(f"{n} = EXCLUDED.{n}" for n in [*names, "coverage"])}, refreshed_at = now()
"""
    return sql.SQL(text).format(
        sensors=sql.Identifier(schema, "sensors"),
        table=sql.Identifier(schema, g.table),
        levels=sql.Identifier(schema, "levels"),
    )


def _orphan_statement(schema: str, g: Granularity) -> sql.Composed:
    """Delete the touched buckets' rows when no measured frame is left in them.

    The upsert only reaches buckets with a measured frame. Rows written before
    migration 4 counted every frame, so a minute of calibration (94 dB) or an hour of
    a dead microphone (0 dB) kept its row through the upgrade's recompute, and the
    stale hour went on into the day's Lden and coverage.
    """
    text = f"""
WITH {_touched_buckets(g)}
DELETE FROM {{table}} a USING touched tb
WHERE a.sensor_id = tb.sensor_id AND a.bucket = tb.bucket
  AND NOT EXISTS (SELECT 1 FROM {{levels}} l
                  WHERE l.sensor_id = tb.sensor_id AND l.time >= tb.bucket AND l.time < tb.bucket_end AND {MEASURED})
"""
    return sql.SQL(text).format(
        sensors=sql.Identifier(schema, "sensors"),
        table=sql.Identifier(schema, g.table),
        levels=sql.Identifier(schema, "levels"),
    )


def _lden_orphan_statement(schema: str) -> sql.Composed:
    """Delete the touched local days' Lden when the day has no hourly row left (see :func:`_orphan_statement`)."""
    text = f"""
WITH days AS (
  SELECT DISTINCT t.sensor_id, coalesce(s.timezone, %(default_tz)s) AS tz,
         (t.minute AT TIME ZONE coalesce(s.timezone, %(default_tz)s))::date AS day
  FROM pg_temp.{_TOUCHED} t LEFT JOIN {{sensors}} s ON s.sensor_id = t.sensor_id
)
DELETE FROM {{lden}} d USING days
WHERE d.sensor_id = days.sensor_id AND d.day = days.day
  AND NOT EXISTS (SELECT 1 FROM {{h1}} x
                  WHERE x.sensor_id = days.sensor_id
                    AND x.bucket >= (days.day::timestamp AT TIME ZONE days.tz)
                    AND x.bucket < ((days.day + 1)::timestamp AT TIME ZONE days.tz))
"""
    return sql.SQL(text).format(
        sensors=sql.Identifier(schema, "sensors"),
        h1=sql.Identifier(schema, "levels_1h"),
        lden=sql.Identifier(schema, "lden_daily"),
    )


def _lden_statement(schema: str) -> sql.Composed:
    hour = "extract(hour FROM h.bucket AT TIME ZONE h.tz)"
    periods = {
        "lday": f"{hour} >= 6 AND {hour} < 18",
        "levening": f"{hour} >= 18 AND {hour} < 22",
        "lnight": f"({hour} < 6 OR {hour} >= 22)",
    }
    # Hourly rows carry energetic means; weighting them by their seconds present
    # gives exactly the energetic mean of the 1 s values over each period.
    period_cols = ",\n    ".join(
        f"10 * log10(sum(h.secs * power(10::float8, h.laeq::float8 / 10)) FILTER (WHERE {cond})"
        f" / nullif(sum(h.secs) FILTER (WHERE {cond}), 0)) AS {name}"
        for name, cond in periods.items()
    )
    text = f"""
WITH days AS (
  SELECT DISTINCT t.sensor_id, coalesce(s.timezone, %(default_tz)s) AS tz,
         (t.minute AT TIME ZONE coalesce(s.timezone, %(default_tz)s))::date AS day
  FROM pg_temp.{_TOUCHED} t LEFT JOIN {{sensors}} s ON s.sensor_id = t.sensor_id
), b AS (
  SELECT sensor_id, tz, day,
         (day::timestamp AT TIME ZONE tz) AS t0, ((day + 1)::timestamp AT TIME ZONE tz) AS t1
  FROM days
), h AS (
  SELECT b.sensor_id, b.day, b.tz, b.t0, b.t1, x.bucket, x.laeq, x.coverage * 3600.0 AS secs
  FROM b JOIN {{h1}} x ON x.sensor_id = b.sensor_id AND x.bucket >= b.t0 AND x.bucket < b.t1
), p AS (
  SELECT h.sensor_id, h.day, extract(epoch FROM h.t1 - h.t0) AS day_seconds,
    {period_cols},
    sum(h.secs) AS secs
  FROM h GROUP BY h.sensor_id, h.day, h.t0, h.t1
)
INSERT INTO {{lden}} (sensor_id, day, lden, lday, levening, lnight, coverage)
SELECT sensor_id, day,
    ({lden_expression('lday', 'levening', 'lnight', '(day_seconds / 3600 - 16)')})::real,
    lday::real, levening::real, lnight::real, least(1.0, secs / day_seconds)::real
FROM p
ON CONFLICT (sensor_id, day) DO UPDATE SET lden = EXCLUDED.lden, lday = EXCLUDED.lday,
    levening = EXCLUDED.levening, lnight = EXCLUDED.lnight, coverage = EXCLUDED.coverage, refreshed_at = now()
"""
    return sql.SQL(text).format(
        sensors=sql.Identifier(schema, "sensors"),
        h1=sql.Identifier(schema, "levels_1h"),
        lden=sql.Identifier(schema, "lden_daily"),
    )


_STATEMENTS: dict[str, list[tuple[str, str, sql.Composed]]] = {}


def _statements(schema: str) -> list[tuple[str, str, sql.Composed]]:
    """(table, ``"delete"`` or ``"upsert"``, statement), in the order they must run."""
    if schema not in _STATEMENTS:
        stmts = []
        for g in GRANULARITIES:
            stmts += [(g.table, "delete", _orphan_statement(schema, g)), (g.table, "upsert", _bucket_statement(schema, g))]
        stmts += [("lden_daily", "delete", _lden_orphan_statement(schema)), ("lden_daily", "upsert", _lden_statement(schema))]
        _STATEMENTS[schema] = stmts
    return _STATEMENTS[schema]


def _prepare_touched(conn: psycopg.Connection) -> None:
    conn.execute(
        sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} (sensor_id text NOT NULL, minute timestamptz NOT NULL) ON COMMIT DELETE ROWS").format(
            sql.Identifier(_TOUCHED)
        )
    )
    conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier("pg_temp", _TOUCHED)))


SHORT_TABLES: tuple[str, ...] = ("levels_1min", "levels_15min", "levels_1h")
DAILY_TABLES: tuple[str, ...] = ("levels_1d", "lden_daily")
"""The service refreshes the short buckets often and the whole-day ones less often
(a daily bucket is recomputed from up to 86,400 rows per sensor); Lden reads levels_1h."""


def pin_join_shape(conn: psycopg.Connection) -> None:
    """Nested loops over index ranges of ``(sensor_id, time)``, for the current transaction only.

    The refresh is driven by a small set of touched (sensor, minute) pairs. Once a day's
    partition has statistics the planner may pick a merge or hash join on sensor_id
    alone, rescanning a sensor's whole day for every touched minute (bench/api.py: 662 s
    instead of ~40 s for one day of 40 sensors). tests/ingestion/test_aggregates_plan.py
    checks the plans this gives.
    """
    conn.execute("SET LOCAL enable_mergejoin = off")
    conn.execute("SET LOCAL enable_hashjoin = off")


def _run(conn: psycopg.Connection, schema: str, default_tz: str, tables: Collection[str] | None = None) -> RefreshResult:
    n = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("pg_temp", _TOUCHED))).fetchone()
    minutes = int(n[0]) if n else 0
    counts: dict[str, int] = {}
    removed: dict[str, int] = {}
    if minutes:
        conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier("pg_temp", _TOUCHED)))
        pin_join_shape(conn)
        for table, action, stmt in _statements(schema):
            if tables is not None and table not in tables:
                continue
            n = conn.execute(stmt, {"default_tz": default_tz}).rowcount
            (removed if action == "delete" else counts)[table] = n
    log.debug("aggregate refresh: %d touched minutes, upserts %s, removed %s", minutes, counts, removed)
    return RefreshResult(minutes, counts, removed)


def refresh(conn: psycopg.Connection, start: datetime, end: datetime, *, schema: str = "smart", default_tz: str = DEFAULT_TIMEZONE) -> RefreshResult:
    """Recompute every bucket (and local day's Lden) holding a 1 s row in ``[start, end)``.

    Whole buckets are recomputed, including their rows outside the range. Runs in
    ``conn.transaction()`` and commits when the caller has no transaction open.
    """
    with conn.transaction():
        _prepare_touched(conn)
        conn.execute(
            sql.SQL(
                "INSERT INTO {} SELECT DISTINCT sensor_id, date_bin(INTERVAL '1 minute', time, " + _ORIGIN + ")"
                " FROM {} WHERE time >= %s AND time < %s"
            ).format(sql.Identifier("pg_temp", _TOUCHED), sql.Identifier(schema, "levels")),
            (start, end),
        )
        return _run(conn, schema, default_tz)


def refresh_touched(
    conn: psycopg.Connection,
    touched: Iterable[tuple[str, datetime]],
    *,
    schema: str = "smart",
    default_tz: str = DEFAULT_TIMEZONE,
    tables: Collection[str] | None = None,
) -> RefreshResult:
    """Recompute the buckets holding the given (sensor_id, minute start) pairs.

    ``tables`` limits the refresh (e.g. :data:`SHORT_TABLES`); ``lden_daily`` reads
    ``levels_1h``, so refresh that first.
    """
    pairs = list(touched)
    with conn.transaction():
        _prepare_touched(conn)
        if pairs:
            with conn.cursor() as cur, cur.copy(sql.SQL("COPY {} (sensor_id, minute) FROM STDIN").format(sql.Identifier("pg_temp", _TOUCHED))) as copy:
                for pair in pairs:
                    copy.write_row(pair)
        return _run(conn, schema, default_tz, tables)


__all__ = ["DAILY_TABLES", "SHORT_TABLES", "RefreshResult", "refresh", "refresh_touched"]
