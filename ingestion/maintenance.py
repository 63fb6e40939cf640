"""Background upkeep of the smart tables: aggregates, partitions, retention.

Runs in its own thread with its own connection, so a long daily refresh never holds
up the write path. On the plain path it refreshes the aggregates of the (sensor,
minute) pairs the pipeline committed (short buckets every ``aggregate_refresh_s``,
local days and Lden every ``daily_refresh_s``), creates daily partitions ahead and
applies retention. On the TimescaleDB path the database's own policies do all that
and only the quarantine purge runs here. A failed refresh puts its pairs back and is
retried: aggregates are eventually exact, never silently stale.

The short refresh works from marks in memory (cheap, every few seconds); the daily one
works from the durable marks the pipeline commits with its rows
(:mod:`ingestion.pending`) and refreshes every table for them, so the minutes of a
batch acked just before a crash are still refreshed by the next start.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone

import psycopg

from common.backoff import Backoff
from common.postgres import UNAVAILABLE
from ingestion import aggregates, partitions, pending, quarantine
from ingestion.settings import IngestSettings
from ingestion.writer import LevelRow
from smart.db import SmartDbSettings, connect

log = logging.getLogger(__name__)

_HOUSEKEEPING_S = 3600.0


class Maintainer:
    def __init__(self, db: SmartDbSettings, settings: IngestSettings, *, timescale: bool):
        self.db = db
        self.settings = settings
        self.timescale = timescale
        self.stop_event = threading.Event()
        self._lock = threading.Lock()
        self._short: set[tuple[str, datetime]] = set()
        self._conn: psycopg.Connection | None = None
        self.refreshes = 0

    def touched(self, rows: Iterable[LevelRow]) -> None:
        """Called by the pipeline after a commit: mark the minutes these rows fall in for the short refresh.

        The pipeline has already committed the same marks in ``aggregate_pending`` for
        the daily refresh (:func:`ingestion.pending.mark`).
        """
        if self.timescale:
            return
        marks = pending.minutes_of(rows)
        with self._lock:
            self._short |= marks

    def pending(self) -> int:
        """Marks waiting for the short refresh, in memory (the durable ones: :func:`ingestion.pending.count`)."""
        with self._lock:
            return len(self._short)

    def run(self) -> None:
        next_short = next_daily = next_house = 0.0
        backoff = Backoff(initial=0.5, maximum=30.0)
        try:
            while True:
                stopping = self.stop_event.is_set()
                now = time.monotonic()
                try:
                    if now >= next_house:
                        self.housekeeping()
                        next_house = now + _HOUSEKEEPING_S
                    if stopping or now >= next_short:
                        self.refresh_short()
                        next_short = now + self.settings.aggregate_refresh_s
                    if stopping or now >= next_daily:
                        self.refresh_daily()
                        next_daily = now + self.settings.daily_refresh_s
                    backoff.reset()
                except UNAVAILABLE as exc:
                    self.close()
                    if stopping:
                        log.warning("stopping before aggregates could be refreshed (%s); the next start recomputes them", exc)
                        return
                    delay = backoff.next_delay()
                    log.warning("maintenance: database unavailable (%s); retrying in %.1f s", type(exc).__name__, delay)
                    self.stop_event.wait(delay)
                    continue
                if stopping:
                    return
                self.stop_event.wait(min(1.0, self.settings.aggregate_refresh_s))
        finally:
            self.close()

    # ---------------------------------------------------------------- jobs

    def refresh_short(self) -> None:
        self._refresh("_short", self._take("_short"), aggregates.SHORT_TABLES)

    def refresh_daily(self) -> None:
        """Every table, local days and Lden included, for the durable marks, then drop those marks.

        The marks are claimed before the refresh: rows committed while it runs are marked
        again and wait for the next one (taken after, those marks would be spent on
        buckets that did not hold the rows yet). All tables run in one pass, levels_1h
        before lden_daily, which reads it. A refresh that fails leaves its marks in the
        table; the next claim takes them again.
        """
        if self.timescale:
            return
        conn = self._connection()
        token, marks = pending.claim(conn, schema=self.db.schema_name)
        if not marks:
            return
        with conn.transaction():
            result = aggregates.refresh_touched(conn, marks, schema=self.db.schema_name, default_tz=self.settings.local_timezone)
            pending.release(conn, token, schema=self.db.schema_name)
        self.refreshes += 1
        log.debug("refreshed every aggregate for %d marked minute(s): %s", result.minutes, result.buckets)

    def _take(self, attr: str) -> set:  # type: ignore[type-arg]
        with self._lock:
            marks = getattr(self, attr)
            setattr(self, attr, set())
        return marks

    def _give_back(self, attr: str, marks: set) -> None:  # type: ignore[type-arg]
        with self._lock:
            getattr(self, attr).update(marks)

    def _refresh(self, attr: str, marks: set, tables: tuple[str, ...]) -> None:  # type: ignore[type-arg]
        if self.timescale or not marks:
            return
        try:
            result = aggregates.refresh_touched(
                self._connection(), marks, schema=self.db.schema_name, default_tz=self.settings.local_timezone, tables=tables,
            )
        except BaseException:
            self._give_back(attr, marks)
            raise
        self.refreshes += 1
        log.debug("refreshed %s for %d touched minute(s): %s", "/".join(tables), result.minutes, result.buckets)

    def housekeeping(self) -> None:
        conn = self._connection()
        with conn.transaction():
            if not self.timescale:
                today = datetime.now(timezone.utc).date()
                partitions.ensure_ahead(conn, today, self.settings.partitions_ahead_days, self.db.schema_name)
                if self.settings.raw_retention_days:
                    # One UTC day more than the frames accepted (validation: younger than
                    # raw_retention_days): the local day of the oldest of them began up to
                    # 14 h before its UTC day (23:00 UTC the day before in Paris), and a late
                    # frame recomputes that whole local day; without that UTC day, from 23 h.
                    cutoff = today - timedelta(days=self.settings.raw_retention_days + 1)
                    partitions.drop_older_than(conn, cutoff, self.db.schema_name)
            purged = quarantine.purge_older_than(conn, timedelta(days=self.settings.quarantine_retention_days), schema=self.db.schema_name)
        if purged:
            log.info("purged %d quarantine entr(ies) past retention", purged)

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.db, connect_timeout=5)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:  # pragma: no cover
                pass
            self._conn = None
