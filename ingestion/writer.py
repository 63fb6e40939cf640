"""Batch writes of 1 s level rows with ``COPY``, idempotent on (sensor_id, time).

The write path, fastest first:

1. ``COPY ... (FORMAT BINARY)`` straight into ``levels`` inside a savepoint. At-least-once
   delivery makes duplicates rare (a redelivery after a crash), so this is what
   almost every batch takes.
2. When that hits a duplicate key, the savepoint is rolled back and the batch goes
   through a temporary staging table: ``COPY`` into it, then
   ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``. The rows not inserted are the
   duplicates, counted, never an error.

``bench/ingest.py`` measures this against a naive INSERT per message and a raw COPY.
Nothing here commits: the caller owns the transaction, so rows and the broker
acknowledgements that follow their commit stay in step.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import NamedTuple

import psycopg
from psycopg import sql

from ingestion import partitions
from messages.level_frame import LevelFrame

log = logging.getLogger(__name__)

COLUMNS: tuple[str, ...] = (
    "sensor_id", "time", "period_s", "laeq", "lafmax", "lafmin", "lcpeak",
    "bands", "status", "car_horn", "siren",
)
COPY_TYPES: tuple[str, ...] = (
    "text", "timestamptz", "float4", "float4", "float4", "float4", "float4",
    "float4[]", "text", "int2", "int2",
)
_STAGE = "sonopolis_levels_stage"


class LevelRow(NamedTuple):
    """One row of ``smart.levels`` in :data:`COLUMNS` order."""

    sensor_id: str
    time: datetime
    period_s: float
    laeq: float
    lafmax: float
    lafmin: float
    lcpeak: float
    bands: list[float | None]
    status: str
    car_horn: int
    siren: int


def row_of(frame: LevelFrame) -> LevelRow:
    """The ``levels`` row of a validated frame (bands in ``BAND_KEYS`` order, NULL if omitted)."""
    return LevelRow(
        frame.sensor_id, frame.time, frame.period_s, frame.laeq, frame.lafmax, frame.lafmin,
        frame.lcpeak, frame.band_array(), frame.status.value, frame.sources.car_horn, frame.sources.siren,
    )


@dataclass(frozen=True)
class WriteResult:
    inserted: int
    duplicates: int


class LevelWriter:
    """Writes batches of :class:`LevelRow` into ``<schema>.levels``.

    Keeps per-connection state (the staging table exists, the partitions known to
    exist), so use one writer per connection; :meth:`reset` after reconnecting.
    """

    def __init__(self, schema: str = "smart", *, timescale: bool = False, binary: bool = True, direct_first: bool = True):
        self.schema = schema
        self.timescale = timescale
        self.binary = binary
        self.direct_first = direct_first
        self._known_days: set[date] = set()
        self._stage_ready = False
        cols = sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
        fmt = sql.SQL(" (FORMAT BINARY)") if binary else sql.SQL("")
        self._copy_direct = sql.SQL("COPY {} ({}) FROM STDIN{}").format(sql.Identifier(schema, "levels"), cols, fmt)
        self._copy_stage = sql.SQL("COPY {} ({}) FROM STDIN{}").format(sql.Identifier("pg_temp", _STAGE), cols, fmt)
        self._merge = sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT (sensor_id, time) DO NOTHING").format(
            sql.Identifier(schema, "levels"), cols, cols, sql.Identifier("pg_temp", _STAGE)
        )

    def reset(self) -> None:
        """Forget per-connection state (call after a reconnect)."""
        self._known_days.clear()
        self._stage_ready = False

    def write(self, conn: psycopg.Connection, rows: Sequence[LevelRow]) -> WriteResult:
        """Write ``rows`` in the caller's transaction; duplicates are skipped and counted."""
        if not rows:
            return WriteResult(0, 0)
        if not self.timescale:
            partitions.ensure(conn, {_utc_day(r.time) for r in rows}, self.schema, self._known_days)
        if self.direct_first:
            try:
                with conn.transaction():
                    self._copy(conn, self._copy_direct, rows)
                return WriteResult(len(rows), 0)
            except psycopg.errors.UniqueViolation:
                log.debug("batch of %d rows holds duplicates: merging through staging", len(rows))
        return self._write_staged(conn, rows)

    def _write_staged(self, conn: psycopg.Connection, rows: Sequence[LevelRow]) -> WriteResult:
        if not self._stage_ready:
            conn.execute(
                sql.SQL(
                    "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
                ).format(sql.Identifier(_STAGE), sql.Identifier(self.schema, "levels"))
            )
            self._stage_ready = True
        conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier("pg_temp", _STAGE)))
        self._copy(conn, self._copy_stage, rows)
        inserted = conn.execute(self._merge).rowcount
        return WriteResult(inserted, len(rows) - inserted)

    def _copy(self, conn: psycopg.Connection, statement: sql.Composed, rows: Iterable[LevelRow]) -> None:
        with conn.cursor() as cur, cur.copy(statement) as copy:
            if self.binary:
                copy.set_types(COPY_TYPES)
            for row in rows:
                copy.write_row(row)


def _utc_day(t: datetime) -> date:
    """UTC day of a timestamp (partitions are UTC days); frames are already in UTC."""
    return t.date() if t.tzinfo is timezone.utc else t.astimezone(timezone.utc).date()


def write_frames(conn: psycopg.Connection, frames: Iterable[LevelFrame], *, schema: str = "smart", timescale: bool = False) -> WriteResult:
    """Convenience for tools and other packages' tests: write validated frames, committed.

    Runs in ``conn.transaction()`` (a savepoint if the caller already has one open).
    """
    rows = [row_of(f) for f in frames]
    with conn.transaction():
        return LevelWriter(schema, timescale=timescale).write(conn, rows)
