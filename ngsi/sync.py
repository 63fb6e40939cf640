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

Only settled buckets are read (ended ``settle_s`` ago) so late frames land first.
Frames that arrive later still (a sensor or the ingestion catching up after an outage)
recompute buckets the cursor has passed: every bucket published (or parked) is recorded
with its ``n_seconds`` in ``smart.ngsi_published``, and each round a look-back pass
re-examines the buckets that ended within ``revisit_hours``, behind the cursor, and
(re)sends those that now qualify but were never published or whose ``n_seconds``
changed. Bookkeeping older than the window is pruned (see docs/ngsi.md for the cost).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
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

DEVICE_LOOKBACK = timedelta(minutes=10)
"""How far behind the devices cursor a registry change that committed late is still picked up."""

BATCH_FACTOR = 5
"""Rows read per batch = chunk_size * BATCH_FACTOR (several upserts per cursor commit)."""

Meta = tuple[str, datetime, int, float]
"""(sensor_id, bucket, n_seconds, coverage) of a published observation, for ``ngsi_published``."""

Keyed = list[tuple[tuple[datetime, str], dict[str, Any], Meta | None]]


@dataclass
class StreamReport:
    pushed: int = 0
    rejected: int = 0
    pending: int = 0
    revisited: int = 0
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
        self._devices_sent: dict[str, datetime] = {}  # sensor -> updated_at of the version sent (look-back)

    async def run_once(self) -> SyncReport:
        """Push everything that is due; raise ``BrokerUnavailable`` if the broker is down."""
        report = SyncReport()
        devices = await self._sync_devices()
        if devices.caught_up:
            await self._revisit_devices(devices)
        report.streams["devices"] = devices
        for name in self._settings.periods:
            stream = await self._sync_period(PERIODS[name])
            if stream.caught_up and self._settings.revisit_hours > 0:
                await self._revisit_period(PERIODS[name], stream)
            report.streams[name] = stream
        log.info("NGSI-LD sync round: %d entities pushed (%s)", report.pushed,
                 ", ".join(f"{k}={v.pushed}/{v.rejected}r/{v.pending}p/{v.revisited}rv" for k, v in report.streams.items()))
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

    def _window_start(self, period: PeriodSpec) -> datetime:
        """Earliest bucket start the look-back re-examines: buckets that ended within ``revisit_hours``."""
        length = period.length if period.length is not None else timedelta(hours=25)  # a local day, DST included
        return self._now() - timedelta(hours=self._settings.revisit_hours) - length

    async def _commit_batch(
        self, stream: str, position: tuple[datetime, str] | None, outcome: UpsertOutcome, streams_ok: int,
        published: Sequence[tuple[Meta, bool]] = (),
    ) -> None:
        """Move the cursor, park/unpark entities and record what was published, atomically."""
        s = self._schema
        async with self._conn.transaction():
            if published:
                async with self._conn.cursor() as cur:
                    await cur.executemany(
                        sql.SQL(
                            "INSERT INTO {}.ngsi_published (stream, sensor_id, bucket, n_seconds, coverage, rejected)"
                            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (stream, bucket, sensor_id) DO UPDATE SET"
                            " n_seconds = excluded.n_seconds, coverage = excluded.coverage, rejected = excluded.rejected,"
                            " pushed_at = now()"
                        ).format(s),
                        [(stream, *meta, rejected) for meta, rejected in published],
                    )
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
        self, stream: str, keyed: Keyed, mode: str, report: StreamReport, *, move_cursor: bool = True,
        record_from: datetime | None = None,
    ) -> bool:
        """Upsert one batch, commit the cursor; False when the stream must stop (pending).

        Observations (``meta`` set) with ``bucket >= record_from`` are recorded in
        ``ngsi_published``; the look-back pass (``move_cursor=False``) leaves the cursor alone.
        """
        outcome = await self._client.upsert([entity for _, entity, _ in keyed], mode=mode)  # type: ignore[arg-type]
        position: tuple[datetime, str] | None = keyed[-1][0]
        blocked = False
        if outcome.pending:
            blocked = True
            first = next(i for i, (_, e, _) in enumerate(keyed) if e["id"] in outcome.pending)
            position = keyed[first - 1][0] if first > 0 else None
            passed = {e["id"] for _, e, _ in keyed[:first]}
            outcome.ok = [eid for eid in outcome.ok if eid in passed]
            outcome.rejected = {k: v for k, v in outcome.rejected.items() if k in passed}
        published: list[tuple[Meta, bool]] = []
        if record_from is not None:
            ok = set(outcome.ok)
            for _, entity, meta in keyed:
                if meta is None or meta[1] < record_from:
                    continue
                if entity["id"] in ok:
                    published.append((meta, False))
                elif entity["id"] in outcome.rejected:
                    published.append((meta, True))
        await self._commit_batch(stream, position if move_cursor else None, outcome, len(outcome.ok), published)
        report.pushed += len(outcome.ok)
        report.rejected += len(outcome.rejected)
        report.pending += len(outcome.pending)
        if outcome.rejected:
            log.warning("NGSI-LD %s: %d entities refused by the broker and parked (e.g. %s)", stream, len(outcome.rejected), next(iter(outcome.rejected)))
        return not blocked

    def _devices(self) -> sql.Composed:
        """The registry columns a ``Device`` entity is built from."""
        return sql.SQL(
            "SELECT sensor_id, name, latitude, longitude, street, place, sonometer_class, installed_on,"
            " timezone, active, updated_at FROM {}.sensors"
        ).format(self._schema)

    async def _sync_devices(self) -> StreamReport:
        report = StreamReport()
        batch = self._settings.chunk_size * BATCH_FACTOR
        while True:
            at, key = await self.cursor("devices")
            async with self._conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(
                    sql.SQL("{} WHERE (updated_at, sensor_id) > (%s, %s) ORDER BY updated_at, sensor_id LIMIT %s").format(self._devices()),
                    (at, key, batch),
                )
                rows = await cur.fetchall()
            await self._conn.commit()
            if not rows:
                report.caught_up = True
                return report
            if not await self._push_devices(rows, report):
                return report
            if len(rows) < batch:
                report.caught_up = True
                return report

    async def _push_devices(self, rows: list[dict[str, Any]], report: StreamReport, *, move_cursor: bool = True) -> bool:
        """Upsert these sensors' ``Device`` entities; remember the versions sent (for the look-back)."""
        keyed: Keyed = [((r["updated_at"], r["sensor_id"]), device_from_row(r).normalized(self._context_url), None) for r in rows]
        if not await self._push("devices", keyed, "update", report, move_cursor=move_cursor):
            return False
        self._devices_sent.update((r["sensor_id"], r["updated_at"]) for r in rows)
        return True

    async def _revisit_devices(self, report: StreamReport) -> None:
        """Send the sensors changed within ``DEVICE_LOOKBACK`` behind the cursor that were never sent.

        ``updated_at`` is when a registry transaction *started* (``now()``): one that
        started first but committed after another one the cursor already passed became
        visible behind the cursor, and its ``Device`` never reached the broker (the
        sensor's observations then pointed at a device the broker did not have).
        Those are the sensors of the window whose version this process has not sent
        (after a restart, each of the window once more: ``update`` is idempotent).
        """
        at, _ = await self.cursor("devices")
        async with self._conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                sql.SQL("{} WHERE updated_at > %s ORDER BY updated_at, sensor_id").format(self._devices()), (at - DEVICE_LOOKBACK,),
            )
            rows = [r for r in await cur.fetchall() if self._devices_sent.get(r["sensor_id"]) != r["updated_at"]]
        await self._conn.commit()
        if rows:
            before = report.pushed
            await self._push_devices(rows, report, move_cursor=False)
            report.revisited += report.pushed - before
            log.info("NGSI-LD devices look-back: %d sensor(s) whose registry change committed behind the cursor re-sent", len(rows))

    def _select(self, period: PeriodSpec) -> tuple[sql.Composable, sql.Composable]:
        """(SELECT ... FROM aggregate a JOIN sensors s [LEFT JOIN lden_daily l], end-of-bucket expression)."""
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
        select = sql.SQL(
            "SELECT a.sensor_id, a.bucket, a.laeq, a.lamax, a.lamin, a.la10, a.la50, a.la90, a.bands, a.coverage,"
            " a.n_seconds, a.car_horn, a.siren, s.name, s.latitude, s.longitude, s.sonometer_class, s.timezone{lden}"
        ).format(lden=lden)
        return select, end_expr

    def _keyed(self, period: PeriodSpec, rows: list[dict[str, Any]]) -> Keyed:
        keyed: Keyed = []
        for r in rows:
            entity = observation_from_row(period, r, r, r if period.length is None else None)
            meta: Meta = (r["sensor_id"], r["bucket"], int(r["n_seconds"]), float(r["coverage"]))
            keyed.append(((r["bucket"], r["sensor_id"]), entity.normalized(self._context_url), meta))
        return keyed

    async def _sync_period(self, period: PeriodSpec) -> StreamReport:
        report = StreamReport()
        batch = self._settings.chunk_size * BATCH_FACTOR
        select, end_expr = self._select(period)
        query = sql.SQL(
            "{select} WHERE (a.bucket, a.sensor_id) > (%s, %s) AND {end} <= %s AND a.coverage >= %s"
            " ORDER BY a.bucket, a.sensor_id LIMIT %s"
        ).format(select=select, end=end_expr)
        record_from = self._window_start(period) if self._settings.revisit_hours > 0 else None
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
            if not await self._push(period.name, self._keyed(period, rows), "replace", report, record_from=record_from):
                return report
            if len(rows) < batch:
                report.caught_up = True
                return report

    async def _revisit_period(self, period: PeriodSpec, report: StreamReport) -> None:
        """Look-back: (re)send buckets behind the cursor that late frames made due or changed.

        One narrow anti-join over the window finds the keys (aggregate rows of the window
        whose ``n_seconds`` differs from the recorded one, or with no record), at most
        ``revisit_max`` of them; the full rows are then read by primary key in batches.
        Pending entities stay unrecorded and are retried next round.
        """
        s = self._schema
        window_start = self._window_start(period)
        at, key = await self.cursor(period.name)
        settled = self._now() - timedelta(seconds=self._settings.settle_s)
        select, end_expr = self._select(period)
        async with self._conn.transaction():
            # bookkeeping older than the window can never be looked at again
            await self._conn.execute(
                sql.SQL("DELETE FROM {}.ngsi_published WHERE stream = %s AND bucket < %s").format(s),
                (period.name, window_start),
            )
        if at < window_start:
            return
        keys_query = sql.SQL(
            "SELECT a.sensor_id, a.bucket FROM {s}.{t} a"
            " LEFT JOIN {s}.ngsi_published p ON p.stream = %s AND p.bucket = a.bucket AND p.sensor_id = a.sensor_id"
            " WHERE a.bucket >= %s AND a.bucket <= %s AND (a.bucket, a.sensor_id) <= (%s, %s) AND a.coverage >= %s"
            " AND p.n_seconds IS DISTINCT FROM a.n_seconds"
            " ORDER BY a.bucket, a.sensor_id LIMIT %s"
        ).format(s=s, t=sql.Identifier(period.table))
        async with self._conn.cursor() as cur:
            await cur.execute(
                keys_query,
                (period.name, window_start, at, at, key, self._settings.min_coverage, self._settings.revisit_max),
            )
            keys = await cur.fetchall()
        await self._conn.commit()
        if not keys:
            return
        if len(keys) == self._settings.revisit_max:
            report.caught_up = False  # more next round
        rows_query = sql.SQL(
            "{select} JOIN unnest(%s::text[], %s::timestamptz[]) AS k(sensor_id, bucket)"
            " ON a.sensor_id = k.sensor_id AND a.bucket = k.bucket"
            " WHERE {end} <= %s AND a.coverage >= %s ORDER BY a.bucket, a.sensor_id"
        ).format(select=select, end=end_expr)
        batch = self._settings.chunk_size * BATCH_FACTOR
        for i in range(0, len(keys), batch):
            part = keys[i : i + batch]
            async with self._conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(
                    rows_query, ([k[0] for k in part], [k[1] for k in part], settled, self._settings.min_coverage)
                )
                rows = await cur.fetchall()
            await self._conn.commit()
            if not rows:
                continue
            before = report.pushed
            ok = await self._push(period.name, self._keyed(period, rows), "replace", report, move_cursor=False, record_from=window_start)
            report.revisited += report.pushed - before
            if not ok:
                report.caught_up = False
                return
        log.info("NGSI-LD %s look-back: %d late or recomputed buckets re-sent", period.name, report.revisited)
