"""Pre-rendered temporal instances of settled UTC days of 1-minute values.

Why: the NGSI-LD temporal view of a day of minutes is 1,440 buckets x up to 13
attributes (43,200 band levels). Rendering it per request costs ~30 ms of Python
(objects per instance, then JSON); a settled day does not change, so its instances are
rendered once, stored as JSON per attribute (``smart.ngsi_temporal_days``) and
embedded as they are (``orjson.Fragment``) into later answers.

Correctness rests on the stamp: each rendering records how many ``levels_1min`` buckets
it was made from and their total ``n_seconds``. A lookup recomputes both for the days
asked and uses a rendering only while both match. 1 s rows are only ever added (the
writer's ``ON CONFLICT DO NOTHING``), so late frames always raise the total, and a
purge lowers the count: the day is then rendered live until :func:`render_settled`
renders it again. (``ngsi-sync`` detects recomputed buckets by ``n_seconds`` too, and
TimescaleDB's continuous aggregates have that column where they have no refresh time.)
The renderings are made by :func:`ngsi.temporal.temporal_entity` itself, so an answer
from them is byte-for-byte the live answer (tests/ngsi/test_temporal_days.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

import orjson
import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from ngsi.mapping import PERIODS, PeriodSpec
from ngsi.models import MEASURED_ATTRS
from ngsi.query import TimeRange
from ngsi.selection import Selection
from ngsi.settings import NgsiSettings
from ngsi.temporal import sensor_rows_sql, series_columns, series_head, temporal_entity, temporal_instances_sql

log = logging.getLogger(__name__)

PERIOD: PeriodSpec = PERIODS["1min"]
MAX_DAYS = 31
"""Longest window answered from renderings (a month of minutes per series)."""
_DAY_BUCKETS = 24 * 60


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=timezone.utc)


def whole_days(window: TimeRange) -> list[date] | None:
    """The UTC days a ``[since, before)`` window covers exactly, or None if it is not whole days."""
    if window.after is not None or window.since is None or window.before is None:
        return None
    since, before = window.since.astimezone(timezone.utc), window.before.astimezone(timezone.utc)
    if since.time() != time(0) or before.time() != time(0) or not since < before:
        return None
    n = (before.date() - since.date()).days
    return [since.date() + timedelta(days=i) for i in range(n)] if n <= MAX_DAYS else None


@dataclass
class DaySeries:
    """What the renderings say about one sensor over the asked days."""

    n_instances: int  # buckets in the window (what lastN and max_instances are checked against)
    parts: dict[str, list[bytes]]  # attribute -> its instances arrays, day by day (non-empty ones)

    def fragment(self, attr: str) -> orjson.Fragment | None:
        """The attribute's instances over all days as one JSON array, or None if it has none."""
        arrays = [a for a in self.parts.get(attr, []) if a != b"[]"]
        if not arrays:
            return None
        if len(arrays) == 1:
            return orjson.Fragment(arrays[0])
        return orjson.Fragment(b"[" + b",".join(a[1:-1] for a in arrays) + b"]")

    def entity(self, sensor: dict[str, Any], first_day: date, attrs: set[str] | None) -> dict[str, Any]:
        """The temporal entity: head as live (:func:`series_head`), instances the stored bytes."""
        out = series_head(sensor, PERIOD, {"bucket": _midnight(first_day)}, attrs)
        for name in MEASURED_ATTRS:
            if (attrs is None or name in attrs) and (fragment := self.fragment(name)) is not None:
                out[name] = fragment
        return out


def _stamps_sql(schema: sql.Identifier) -> sql.Composed:
    """Per (sensor, UTC day) of the window: buckets and their total n_seconds in levels_1min.

    Always run with ``prepare=False``: psycopg prepares a statement after five runs, and
    PostgreSQL's generic plan for it reads the window of *every* sensor through the
    bucket index and filters (a day of 40 sensors: 57,600 rows, ~25 ms per answer,
    bench/api.py); the custom plan reads one primary-key range per sensor.
    """
    return sql.SQL(
        "SELECT t.sensor_id, (a.bucket AT TIME ZONE 'UTC')::date AS day, count(*)::int AS n, sum(a.n_seconds)::bigint AS n_seconds"
        " FROM unnest(%s::text[]) AS t(sensor_id)"
        " CROSS JOIN LATERAL (SELECT bucket, n_seconds FROM {}.levels_1min"
        "                     WHERE sensor_id = t.sensor_id AND bucket >= %s AND bucket < %s) a"
        " GROUP BY 1, 2"
    ).format(schema)


async def lookup(conn: psycopg.AsyncConnection, schema: str, sensors: Sequence[str], days: list[date],
                 attrs: set[str] | None) -> dict[str, DaySeries]:
    """Sensors whose every day with data in ``days`` has a current rendering, with those renderings.

    A sensor with one stale or missing day is left out (the caller renders it live); a
    sensor without any row in the window is left out too (no series, as live).
    """
    ident = sql.Identifier(schema)
    wanted = [a for a in MEASURED_ATTRS if attrs is None or a in attrs]
    query = sql.SQL(
        "WITH s AS ({stamps})"
        " SELECT s.sensor_id, s.day, s.n, d.attr, d.instances,"
        "        (d.n_buckets = s.n AND d.n_seconds = s.n_seconds) AS current"
        " FROM s LEFT JOIN {schema}.ngsi_temporal_days d ON d.sensor_id = s.sensor_id AND d.day = s.day AND d.attr = ANY(%s)"
        " ORDER BY s.sensor_id, s.day"
    ).format(stamps=_stamps_sql(ident), schema=ident)
    async with conn.cursor(binary=True) as cur:
        await cur.execute(query, (list(sensors), _midnight(days[0]), _midnight(days[-1]) + timedelta(days=1), wanted), prepare=False)
        rows = await cur.fetchall()
    found: dict[str, DaySeries] = {}
    stale: set[str] = set()
    counted: set[tuple[str, date]] = set()
    for sensor_id, day, n, attr, instances, current in rows:
        if attr is None or not current:
            # no rendering (never made, or a day without a single published attribute is
            # never stored: render live), or one made from other rows than today's
            stale.add(sensor_id)
            continue
        series = found.setdefault(sensor_id, DaySeries(0, {}))
        if (sensor_id, day) not in counted:
            counted.add((sensor_id, day))
            series.n_instances += n
        series.parts.setdefault(attr, []).append(bytes(instances))
    return {s: v for s, v in found.items() if s not in stale}


async def render_day(conn: psycopg.AsyncConnection, schema: str, sensor: dict[str, Any], day: date) -> int:
    """(Re)render one sensor's UTC day; returns the attributes stored (0: no rows, nothing kept).

    The rows and their stamp are read in one REPEATABLE READ snapshot, so a refresh
    committing meanwhile can only make the new rendering stale, never wrongly current.
    """
    ident = sql.Identifier(schema)
    start = _midnight(day)
    sel = Selection([PERIOD], [sensor["sensor_id"]], None, None, None, TimeRange(since=start, before=start + timedelta(days=1)))
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        async with conn.cursor(binary=True) as cur:
            await cur.execute(_stamps_sql(ident), ([sensor["sensor_id"]], start, start + timedelta(days=1)), prepare=False)
            stamp = await cur.fetchone()
            await cur.execute(*temporal_instances_sql(ident, PERIOD, sel, _DAY_BUCKETS, newest=False))
            names = [d.name for d in cur.description or ()]
            columns = series_columns(names, await cur.fetchall()).get(sensor["sensor_id"])
        await conn.execute(sql.SQL("DELETE FROM {}.ngsi_temporal_days WHERE sensor_id = %s AND day = %s").format(ident),
                           (sensor["sensor_id"], day))
        if stamp is None or columns is None:
            return 0
        entity = temporal_entity(sensor, PERIOD, columns, None, False)
        parts = [(a, orjson.dumps(entity[a])) for a in MEASURED_ATTRS if a in entity]
        async with conn.cursor() as cur:
            await cur.executemany(
                sql.SQL("INSERT INTO {}.ngsi_temporal_days (sensor_id, day, attr, n_buckets, n_seconds, instances)"
                        " VALUES (%s, %s, %s, %s, %s, %s)").format(ident),
                [(sensor["sensor_id"], day, a, stamp[2], stamp[3], body) for a, body in parts],
            )
        return len(parts)


async def render_settled(conn: psycopg.AsyncConnection, schema: str, settings: NgsiSettings, now: datetime) -> int:
    """Render the settled days of the look-back window whose rendering is missing or stale; purge old ones.

    Returns the sensor-days rendered. Days older than the look-back window that become
    stale stay stale (answered live) until they age out: re-checking them all each
    round would re-read the whole kept history.
    """
    ident = sql.Identifier(schema)
    keep = settings.day_documents_keep_days
    if keep == 0:
        return 0
    last = (now - timedelta(seconds=settings.day_documents_settle_s)).astimezone(timezone.utc).date() - timedelta(days=1)
    first = max(last - timedelta(days=settings.day_documents_lookback_days - 1), last - timedelta(days=keep - 1))
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sensor_rows_sql(ident))
        sensors = {r["sensor_id"]: r for r in await cur.fetchall()}
        await cur.execute(
            sql.SQL(
                "WITH s AS ({stamps})"
                " SELECT s.sensor_id, s.day FROM s"
                " WHERE NOT EXISTS (SELECT 1 FROM {schema}.ngsi_temporal_days d WHERE d.sensor_id = s.sensor_id AND d.day = s.day"
                "                   AND d.n_buckets = s.n AND d.n_seconds = s.n_seconds)"
                " ORDER BY s.day, s.sensor_id"
            ).format(stamps=_stamps_sql(ident), schema=ident),
            (list(sensors), _midnight(first), _midnight(last) + timedelta(days=1)),
            prepare=False,
        )
        due = [(r["sensor_id"], r["day"]) for r in await cur.fetchall()]
    await conn.commit()  # each day is rendered in its own REPEATABLE READ transaction
    for sensor_id, day in due:
        await render_day(conn, schema, sensors[sensor_id], day)
    await conn.execute(sql.SQL("DELETE FROM {}.ngsi_temporal_days WHERE day < %s").format(ident), (last - timedelta(days=keep - 1),))
    await conn.commit()
    return len(due)


async def rendering_loop(pool: AsyncConnectionPool, schema: str, settings: NgsiSettings, stop: asyncio.Event) -> None:
    """The API process keeps the renderings current: one pass, then every ``day_documents_interval_s``."""
    while not stop.is_set():
        try:
            async with pool.connection() as conn:
                n = await render_settled(conn, schema, settings, datetime.now(timezone.utc))
            if n:
                log.info("rendered %d settled sensor-days of 1-minute instances", n)
        except psycopg.Error as exc:  # database away or not migrated: the context source renders live meanwhile
            log.warning("day renderings skipped this round (%s): %s", type(exc).__name__, exc)
        try:
            await asyncio.wait_for(stop.wait(), timeout=settings.day_documents_interval_s)
        except TimeoutError:
            pass


__all__ = ["DaySeries", "MAX_DAYS", "PERIOD", "lookup", "render_day", "render_settled", "rendering_loop", "whole_days"]
