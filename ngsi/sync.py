"""One round of publication: new sensors and settled aggregates -> the broker, behind a cursor.

Streams (``devices`` then each configured period) are read in key order
(``bucket, sensor_id``; ``updated_at, sensor_id`` for devices) from the position stored
in ``smart.ngsi_sync_cursor`` and pushed in batches. After each batch the cursor moves,
in the same transaction that parks the refused entities in ``smart.ngsi_rejected``:

* delivered -> passed; refused (4xx in a 207) -> parked with the reason and passed;
* still failing transiently after the retry budget -> the cursor stops just before the
  first of them and the stream waits for the next round;
* broker down (:class:`~ngsi.client.BrokerUnavailable`) -> the round stops, the cursor
  stays at the last delivered batch, the next round catches up from there.

Re-sends (after a crash between the upsert and the cursor commit) are harmless:
``replace`` makes the stored entity equal to the one sent.

Only settled buckets are read (ended ``settle_s`` ago) so late frames land first;
a bucket recomputed after being published is not re-sent (see docs/ngsi.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from ngsi.client import BrokerClient, Problem, UpsertOutcome
from ngsi.mapping import PERIODS, PeriodSpec, device_from_row, observation_from_row
from ngsi.settings import NgsiSettings

log = logging.getLogger(__name__)

BATCH_FACTOR = 5
"""Rows read per batch = chunk_size * BATCH_FACTOR (several upserts per cursor commit)."""


@dataclass
class StreamReport:
    pushed: int = 0
    rejected: int = 0
    pending: int = 0
    caught_up: bool = False


@dataclass
class SyncReport:
    streams: dict[str, StreamReport] = field(default_factory=dict)

    @property
    def pushed(self) -> int:
        return sum(s.pushed for s in self.streams.values())

    @property
    def caught_up(self) -> bool:
        return all(s.caught_up for s in self.streams.values())


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Syncer:
    """Publishes one database's smart data to one broker; ``conn`` is the smart role's."""

    def __init__(
        self,
        conn: psycopg.AsyncConnection,
        client: BrokerClient,
        settings: NgsiSettings,
        *,
        schema: str = "smart",
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        if settings.context_url is None:
            raise ValueError("ngsi.context_url is not set: the broker needs the URL of the Sonopolis @context")
        self._conn = conn
        self._client = client
        self._settings = settings
        self._schema = sql.Identifier(schema)
        self._now = now
        self._context_url = settings.context_url

    async def run_once(self) -> SyncReport:
        """Push everything that is due; raise ``BrokerUnavailable`` if the broker is down."""
        report = SyncReport()
        report.streams["devices"] = await self._sync_devices()
        for name in self._settings.periods:
            report.streams[name] = await self._sync_period(PERIODS[name])
        log.info("NGSI-LD sync round: %d entities pushed (%s)", report.pushed,
                 ", ".join(f"{k}={v.pushed}/{v.rejected}r/{v.pending}p" for k, v in report.streams.items()))
        return report

    # -- cursor -----------------------------------------------------------------------------
    async def cursor(self, stream: str) -> tuple[datetime, str]:
        async with self._conn.cursor() as cur:
            await cur.execute(
                sql.SQL("SELECT position_at, position_key FROM {}.ngsi_sync_cursor WHERE stream = %s").format(self._schema),
                (stream,),
            )
            row = await cur.fetchone()
        await self._conn.commit()
        if row is not None:
            return row[0], row[1]
        if stream == "devices":
            return datetime(1970, 1, 1, tzinfo=timezone.utc), ""
        return self._now() - timedelta(days=self._settings.backfill_days), ""

    async def _commit_batch(self, stream: str, position: tuple[datetime, str] | None, outcome: UpsertOutcome, streams_ok: int) -> None:
        """Move the cursor and park/unpark entities atomically."""
        s = self._schema
        async with self._conn.transaction():
            if position is not None:
                await self._conn.execute(
                    sql.SQL(
                        "INSERT INTO {}.ngsi_sync_cursor (stream, position_at, position_key, pushed) VALUES (%s, %s, %s, %s)"
                        " ON CONFLICT (stream) DO UPDATE SET position_at = excluded.position_at,"
                        " position_key = excluded.position_key, pushed = ngsi_sync_cursor.pushed + excluded.pushed, updated_at = now()"
                    ).format(s),
                    (stream, position[0], position[1], streams_ok),
                )
            for eid, problem in outcome.rejected.items():
                await self._park(stream, eid, problem)
            if outcome.ok:
                await self._conn.execute(
                    sql.SQL("DELETE FROM {}.ngsi_rejected WHERE entity_id = ANY(%s)").format(s), (list(outcome.ok),)
                )

    async def _park(self, stream: str, eid: str, problem: Problem) -> None:
        await self._conn.execute(
            sql.SQL(
                "INSERT INTO {}.ngsi_rejected (entity_id, stream, status, problem_type, reason) VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (entity_id) DO UPDATE SET status = excluded.status, problem_type = excluded.problem_type,"
                " reason = excluded.reason, attempts = ngsi_rejected.attempts + 1, last_seen = now()"
            ).format(self._schema),
            (eid, stream, problem.status, problem.type, problem.reason[:1000]),
        )

    # -- streams ----------------------------------------------------------------------------
    async def _push(
        self, stream: str, keyed: list[tuple[tuple[datetime, str], dict[str, Any]]], mode: str, report: StreamReport
    ) -> bool:
        """Upsert one batch, commit the cursor; False when the stream must stop (pending)."""
        outcome = await self._client.upsert([entity for _, entity in keyed], mode=mode)  # type: ignore[arg-type]
        position: tuple[datetime, str] | None = keyed[-1][0]
        blocked = False
        if outcome.pending:
            blocked = True
            first = next(i for i, (_, e) in enumerate(keyed) if e["id"] in outcome.pending)
            position = keyed[first - 1][0] if first > 0 else None
            passed = {e["id"] for _, e in keyed[:first]}
            outcome.ok = [eid for eid in outcome.ok if eid in passed]
            outcome.rejected = {k: v for k, v in outcome.rejected.items() if k in passed}
        await self._commit_batch(stream, position, outcome, len(outcome.ok))
        report.pushed += len(outcome.ok)
        report.rejected += len(outcome.rejected)
        report.pending += len(outcome.pending)
        if outcome.rejected:
            log.warning("NGSI-LD %s: %d entities refused by the broker and parked (e.g. %s)", stream, len(outcome.rejected), next(iter(outcome.rejected)))
        return not blocked

    async def _sync_devices(self) -> StreamReport:
        report = StreamReport()
        batch = self._settings.chunk_size * BATCH_FACTOR
        while True:
            at, key = await self.cursor("devices")
            async with self._conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(
                    sql.SQL(
                        "SELECT sensor_id, name, latitude, longitude, street, place, sonometer_class, installed_on,"
                        " timezone, active, updated_at FROM {}.sensors WHERE (updated_at, sensor_id) > (%s, %s)"
                        " ORDER BY updated_at, sensor_id LIMIT %s"
                    ).format(self._schema),
                    (at, key, batch),
                )
                rows = await cur.fetchall()
            await self._conn.commit()
            if not rows:
                report.caught_up = True
                return report
            keyed = [((r["updated_at"], r["sensor_id"]), device_from_row(r).normalized(self._context_url)) for r in rows]
            if not await self._push("devices", keyed, "update", report):
                return report
            if len(rows) < batch:
                report.caught_up = True
                return report

    async def _sync_period(self, period: PeriodSpec) -> StreamReport:
        report = StreamReport()
        batch = self._settings.chunk_size * BATCH_FACTOR
        s = self._schema
        if period.length is None:
            end_expr = sql.SQL("((a.bucket AT TIME ZONE s.timezone) + interval '1 day') AT TIME ZONE s.timezone")
            lden = sql.SQL(
                ", l.lden, l.lday, l.levening, l.lnight FROM {s}.{t} a JOIN {s}.sensors s USING (sensor_id)"
                " LEFT JOIN {s}.lden_daily l ON l.sensor_id = a.sensor_id AND l.day = (a.bucket AT TIME ZONE s.timezone)::date"
            ).format(s=s, t=sql.Identifier(period.table))
        else:
            end_expr = sql.SQL("a.bucket + {}::interval").format(sql.Literal(f"{int(period.length.total_seconds())} seconds"))
            lden = sql.SQL(" FROM {s}.{t} a JOIN {s}.sensors s USING (sensor_id)").format(s=s, t=sql.Identifier(period.table))
        query = sql.SQL(
            "SELECT a.sensor_id, a.bucket, a.laeq, a.lamax, a.lamin, a.la10, a.la50, a.la90, a.bands, a.coverage,"
            " a.car_horn, a.siren, s.name, s.latitude, s.longitude, s.sonometer_class, s.timezone{lden}"
            " WHERE (a.bucket, a.sensor_id) > (%s, %s) AND {end} <= %s AND a.coverage >= %s"
            " ORDER BY a.bucket, a.sensor_id LIMIT %s"
        ).format(lden=lden, end=end_expr)
        while True:
            at, key = await self.cursor(period.name)
            settled = self._now() - timedelta(seconds=self._settings.settle_s)
            async with self._conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(query, (at, key, settled, self._settings.min_coverage, batch))
                rows = await cur.fetchall()
            await self._conn.commit()
            if not rows:
                report.caught_up = True
                return report
            keyed = []
            for r in rows:
                entity = observation_from_row(period, r, r, r if period.length is None else None)
                keyed.append(((r["bucket"], r["sensor_id"]), entity.normalized(self._context_url)))
            if not await self._push(period.name, keyed, "replace", report):
                return report
            if len(rows) < batch:
                report.caught_up = True
                return report
