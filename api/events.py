"""Open noise events, detected from the database by a small evaluator loop.

Two public event types, and only these (the ``api_events`` table has a CHECK on them;
the smart database holds no security class to begin with):

* ``noise_threshold_exceeded`` — the LAeq over an aligned 5-minute window, as published
  (0.1 dB), is above the configured threshold. LAeq,5min is the energetic mean of the window's frames weighted
  by their duration, ``10·log10(Σ period_s·10^(L/10) / Σ period_s)`` (a frame may last up
  to 3600 s: an unweighted mean let ten loud seconds outweigh a quiet 290 s frame);
  only frames that lie wholly inside the window and measure the street count (status
  ``ok`` or ``degraded``: see ``messages.level_frame.MEASURING_STATUSES``), and a window is judged only
  when they cover at least ``laeq_5min_min_coverage`` of it (one loud second in an
  empty window is not a loud 5 minutes); the event carries that ``coverage``;
* ``sensor_silent`` — an active sensor has sent no frame for ``silent_after_min``.

A window is judged only from ``laeq_5min_settle_s`` after it ends, so frames still in
transit count; an event, once raised, is never updated (webhooks and SSE readers got
its value once, under its id; a later change would leave them contradicting the API). A
window that raised nothing is judged again at each evaluation while it is within
``lookback_min``: a sensor replaying its queue after an outage can still complete it.

Detection is idempotent: each event is keyed by (type, sensor, window start / last
frame time), so re-evaluating the same data, or two API replicas evaluating at once,
never duplicates an event; evaluations take turns (an advisory lock), so events become
visible in id order and a client resuming "after id N" never skips one. New events are
queued for every matching webhook in the same transaction, so none is lost between
detection and delivery.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from api.settings import OpenEventSettings
from messages.level_frame import MEASURING_STATUSES

log = logging.getLogger(__name__)

EVENT_TYPES = ("noise_threshold_exceeded", "sensor_silent")
_EVALUATION_LOCK = 0x50A7_E7E7  # pg_advisory_xact_lock key of the evaluator (one at a time per database)

WINDOW_S = 300.0  # the aligned 5-minute window of noise_threshold_exceeded

_THRESHOLD = """
WITH f AS (
    SELECT sensor_id, time, period_s::float8 AS d, laeq::float8 AS laeq,
           date_bin('5 minutes', time, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS started_at
    FROM {levels}
    WHERE time >= %(since)s AND time < %(until)s AND laeq IS NOT NULL AND status = ANY(%(statuses)s)
), w AS (
    -- A frame counts in the window it lies wholly inside: a frame straddling two windows,
    -- or longer than one, does not tell the level of either.
    SELECT sensor_id, started_at,
           10 * log(sum(d * power(10::float8, laeq / 10.0)) / sum(d)) AS laeq5,
           least(1.0, sum(d) / %(window_s)s) AS coverage
    FROM f
    WHERE time + make_interval(secs => d) <= started_at + interval '5 minutes'
    GROUP BY 1, 2
), judged AS (
    -- The value as published: 0.1 dB, stored as the column's real.
    SELECT sensor_id, started_at, round(laeq5::numeric, 1)::real AS value, round(coverage::numeric, 3) AS coverage
    FROM w
    WHERE coverage >= %(min_coverage)s
)
INSERT INTO {events} (event_type, sensor_id, started_at, value, threshold, coverage)
SELECT 'noise_threshold_exceeded', sensor_id, started_at, value, %(threshold)s, coverage
FROM judged
-- What is published must visibly exceed the threshold it is published with: the rounded
-- value against the threshold as stored. Comparing the unrounded level published 75.04
-- against 75 as "75.0 exceeded 75.0".
WHERE value > %(threshold)s::real
ON CONFLICT (event_type, sensor_id, started_at) DO NOTHING
RETURNING id
"""

_SILENT = """
WITH last AS (
    SELECT s.sensor_id, (SELECT max(l.time) FROM {levels} l WHERE l.sensor_id = s.sensor_id) AS last_time
    FROM {sensors} s WHERE s.active
)
INSERT INTO {events} (event_type, sensor_id, started_at, value, threshold)
SELECT 'sensor_silent', sensor_id, last_time,
       round((extract(epoch FROM %(now)s - last_time) / 60.0)::numeric, 1), %(silent_min)s
FROM last
WHERE last_time IS NOT NULL AND last_time < %(now)s - make_interval(secs => %(silent_min)s * 60)
ON CONFLICT (event_type, sensor_id, started_at) DO NOTHING
RETURNING id
"""

_ENQUEUE = """
INSERT INTO {deliveries} (webhook_id, event_id)
SELECT w.id, e.id FROM {webhooks} w JOIN {events} e ON e.event_type = ANY(w.event_types)
WHERE w.active AND e.id = ANY(%s)
ON CONFLICT DO NOTHING
"""


def _floor_5min(t: dt.datetime) -> dt.datetime:
    epoch = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    return t - (t - epoch) % dt.timedelta(minutes=5)


class EventStore:
    """SQL of the open events, bound to one schema."""

    def __init__(self, schema: str = "smart"):
        s = sql.Identifier(schema)
        rel = lambda name: sql.SQL("{}.{}").format(s, sql.Identifier(name))  # noqa: E731
        self.names = {k: rel(v) for k, v in {
            "levels": "levels", "sensors": "sensors", "events": "api_events",
            "webhooks": "api_webhooks", "deliveries": "api_webhook_deliveries"}.items()}

    def q(self, text: str) -> sql.Composed:
        return sql.SQL(text).format(**self.names)

    async def evaluate(self, conn: AsyncConnection, settings: OpenEventSettings, now: dt.datetime | None = None) -> list[int]:
        """Detect new events up to ``now``; queue them for webhooks; return their ids."""
        now = now or dt.datetime.now(dt.UTC)
        since = _floor_5min(now - dt.timedelta(minutes=settings.lookback_min))  # whole windows only
        # Only windows that ended at least settle_s ago: frames still in transit would
        # change a value that, once published, never changes.
        until = _floor_5min(now - dt.timedelta(seconds=settings.laeq_5min_settle_s))
        async with conn.transaction():
            # Readers resume with "id > last seen", so ids must become visible in id order.
            # A bigserial id is taken at INSERT but seen at COMMIT: two replicas evaluating
            # at once once let a reader pass id 2 while id 1 was still uncommitted, and id 1
            # was never served. One evaluation at a time makes commit order the id order.
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_EVALUATION_LOCK,))
            cur = await conn.execute(self.q(_THRESHOLD), {
                "since": since, "until": until, "statuses": list(MEASURING_STATUSES), "window_s": WINDOW_S,
                "threshold": settings.laeq_5min_threshold_db, "min_coverage": settings.laeq_5min_min_coverage})
            ids = [r[0] for r in await cur.fetchall()]
            cur = await conn.execute(self.q(_SILENT), {"now": now, "silent_min": settings.silent_after_min})
            ids += [r[0] for r in await cur.fetchall()]
            if ids:
                await conn.execute(self.q(_ENQUEUE), (ids,))
        if ids:
            log.info("open events detected: %d new", len(ids))
        return ids

    async def after(self, conn: AsyncConnection, last_id: int, limit: int = 500, types: list[str] | None = None,
                    sensors: list[str] | None = None) -> list[dict[str, Any]]:
        conds = [sql.SQL("id > %s")]
        params: list[Any] = [last_id]
        if types:
            conds.append(sql.SQL("event_type = ANY(%s)"))
            params.append(types)
        if sensors:
            conds.append(sql.SQL("sensor_id = ANY(%s)"))
            params.append(sensors)
        q = sql.SQL("SELECT id, event_type, sensor_id, started_at, value, threshold, coverage FROM {} WHERE {} ORDER BY id LIMIT %s").format(
            self.names["events"], sql.SQL(" AND ").join(conds))
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(q, (*params, limit))
            return await cur.fetchall()

    async def last_id(self, conn: AsyncConnection) -> int:
        cur = await conn.execute(self.q("SELECT coalesce(max(id), 0) FROM {events}"))
        row = await cur.fetchone()
        return int(row[0]) if row else 0


async def evaluator_loop(pool: AsyncConnectionPool, store: EventStore, settings: OpenEventSettings, stop: asyncio.Event) -> None:
    """Evaluate every ``evaluate_every_s`` until ``stop``; a database outage is waited out."""
    from psycopg import OperationalError

    while not stop.is_set():
        try:
            async with pool.connection() as conn:
                await store.evaluate(conn, settings)
        except OperationalError as exc:
            log.warning("event evaluation skipped, database unavailable: %s", type(exc).__name__)
        try:
            await asyncio.wait_for(stop.wait(), timeout=settings.evaluate_every_s)
        except TimeoutError:
            pass
