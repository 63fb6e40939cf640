"""From received messages to committed rows: batching, commit with retries, then acks.

One thread runs :meth:`Pipeline.run`. It collects messages from the bounded inbox
(validating as they arrive), flushes a batch when it holds ``batch_max_rows`` rows
or ``batch_max_delay_s`` after its first message, and commits rows and quarantine
entries in **one** transaction. Only after the commit are the messages acked. A
database outage is retried with capped backoff forever (while stopping, the batch
is abandoned unacked: the broker redelivers it), so nothing is lost and nothing is
acked that is not stored.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import psycopg

from common.backoff import Backoff
from common.postgres import UNAVAILABLE
from ingestion import pending, quarantine, registry
from ingestion.consumer import Inbound
from ingestion.metrics import IngestMetrics
from ingestion.settings import IngestSettings
from ingestion.validation import Rejected, parse
from ingestion.writer import LevelRow, LevelWriter
from smart.db import SmartDbSettings, connect

log = logging.getLogger(__name__)


@dataclass
class Batch:
    items: list[Inbound] = field(default_factory=list)
    parsed: list[list[LevelRow] | Rejected] = field(default_factory=list)
    rows: int = 0


class SensorCache:
    """Active sensor ids, re-read periodically and (rate-limited) when an unknown id shows up."""

    def __init__(self, schema: str, refresh_s: float, min_interval_s: float = 2.0):
        self.schema = schema
        self.refresh_s = refresh_s
        self.min_interval_s = min_interval_s
        self.ids: frozenset[str] = frozenset()
        self._loaded_at = float("-inf")

    def ensure(self, conn: psycopg.Connection, wanted: set[str]) -> None:
        now = time.monotonic()
        stale = now - self._loaded_at > self.refresh_s
        missing = bool(wanted - self.ids) and now - self._loaded_at > self.min_interval_s
        if stale or missing:
            self.ids = registry.active_ids(conn, schema=self.schema)
            self._loaded_at = now


class Pipeline:
    def __init__(
        self,
        db: SmartDbSettings,
        settings: IngestSettings,
        inbox: "queue.Queue[Inbound]",
        metrics: IngestMetrics,
        ack: Callable[[list[Inbound]], int],
        *,
        timescale: bool,
        on_committed: Callable[[list[LevelRow]], None] | None = None,
    ):
        self.db = db
        self.settings = settings
        self.inbox = inbox
        self.metrics = metrics
        self.ack = ack
        self.on_committed = on_committed
        self.writer = LevelWriter(db.schema_name, timescale=timescale)
        self.sensors = SensorCache(db.schema_name, settings.registry_refresh_s)
        self.stop_event = threading.Event()
        self._conn: psycopg.Connection | None = None
        self._tolerance = timedelta(seconds=settings.future_tolerance_s)
        self._max_age = timedelta(days=settings.raw_retention_days) if settings.raw_retention_days else None
        self._now = datetime.now(timezone.utc)

    # ---------------------------------------------------------------- loop

    def run(self) -> None:
        """Until stopped: collect, commit, ack. On stop, what is buffered is flushed once."""
        try:
            while not self.stop_event.is_set():
                batch = self._collect()
                if batch.items:
                    self._flush(batch)
            final = self._collect(wait=False)
            if final.items:
                self._flush(final)
        finally:
            self._close()

    def _collect(self, wait: bool = True) -> Batch:
        batch = Batch()
        try:
            first = self.inbox.get(timeout=0.1) if wait else self.inbox.get_nowait()
        except queue.Empty:
            return batch
        self._add(batch, first)
        deadline = time.monotonic() + self.settings.batch_max_delay_s
        while batch.rows < self.settings.batch_max_rows:
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not wait or self.stop_event.is_set():
                    break
                try:
                    item = self.inbox.get(timeout=min(remaining, 0.02))
                except queue.Empty:
                    continue
            self._add(batch, item)
        self.metrics.buffer_depth.set(self.inbox.qsize() + len(batch.items))
        return batch

    def _add(self, batch: Batch, item: Inbound) -> None:
        # The server clock is read once per 256 messages (well under a second at any
        # useful rate, against a tolerance of minutes): per message it is measurable CPU.
        if not len(batch.items) & 255:
            self._now = datetime.now(timezone.utc)
        result = parse(item.topic, item.payload, is_known=None, now=self._now, future_tolerance=self._tolerance, max_age=self._max_age)
        batch.items.append(item)
        batch.parsed.append(result)
        if not isinstance(result, Rejected):
            batch.rows += len(result)

    # ---------------------------------------------------------------- commit

    def _flush(self, batch: Batch) -> bool:
        backoff = Backoff(initial=0.1, maximum=10.0)
        while True:
            started = time.monotonic()
            try:
                outcome = self._commit(batch)
                break
            except UNAVAILABLE as exc:
                self.metrics.db_errors.inc()
                self._close()
                if self.stop_event.is_set() and backoff.attempts >= 2:
                    log.warning("stopping with %d uncommitted message(s) unacked: the broker will redeliver them", len(batch.items))
                    return False
                delay = backoff.next_delay()
                log.warning("database unavailable (%s); retrying %d message(s) in %.1f s", type(exc).__name__, len(batch.items), delay)
                time.sleep(delay)
        rows, rejected, duplicates = outcome
        self.metrics.batch_seconds.observe(time.monotonic() - started)
        self.metrics.rows_written.inc(len(rows) - duplicates)
        self.metrics.duplicates.inc(duplicates)
        for r in rejected:
            self.metrics.quarantined.labels(r.reason_code).inc()
        if rows:
            newest = max(r.time for r in rows)
            self.metrics.lag.set((datetime.now(timezone.utc) - newest).total_seconds())
            if self.on_committed is not None:
                self.on_committed(rows)
        self.ack(batch.items)
        self.metrics.buffer_depth.set(self.inbox.qsize())
        if rejected:
            log.info("batch: %d message(s), %d row(s), %d quarantined, %d duplicate row(s)", len(batch.items), len(rows), len(rejected), duplicates)
        return True

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.db, connect_timeout=5)
            self.writer.reset()
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:  # pragma: no cover - closing a broken connection
                pass
            self._conn = None

    def _commit(self, batch: Batch) -> tuple[list[LevelRow], list[quarantine.QuarantineRecord], int]:
        """Write the batch in one transaction; on a data error, isolate the culprit message."""
        conn = self._connection()
        wanted = {rows[0].sensor_id for rows in batch.parsed if not isinstance(rows, Rejected) and rows}
        self.sensors.ensure(conn, wanted)
        conn.commit()
        accepted: list[tuple[Inbound, list[LevelRow]]] = []
        rejected: list[quarantine.QuarantineRecord] = []
        for item, result in zip(batch.items, batch.parsed):
            if isinstance(result, Rejected):
                rejected.append(quarantine.QuarantineRecord(item.received_at, item.topic, result.sensor_id, result.reason_code, result.reason, item.payload))
            elif result[0].sensor_id not in self.sensors.ids:
                sid = result[0].sensor_id
                rejected.append(quarantine.QuarantineRecord(item.received_at, item.topic, sid, "unknown_sensor", f"sensor {sid!r} is not in the registry or is inactive", item.payload))
            else:
                accepted.append((item, result))
        rows = [r for _, rs in accepted for r in rs]
        max_bytes = self.settings.quarantine_payload_max_bytes
        try:
            with conn.transaction():
                written = self.writer.write(conn, rows)
                self._mark(conn, rows)
                quarantine.write(conn, rejected, max_bytes=max_bytes, schema=self.db.schema_name)
            return rows, rejected, written.duplicates
        except UNAVAILABLE:
            raise
        except psycopg.Error as exc:
            # The rollback also undid what the writer created in it (a new day's partition,
            # its staging table) while it still counts them as there: every message of
            # that day would then be refused on the slow path for want of a partition.
            self.writer.reset()
            log.warning("batch refused by the database (%s): isolating the message(s) at fault", type(exc).__name__)
        # Slow path: one message per savepoint; a message the database refuses is quarantined.
        kept: list[LevelRow] = []
        duplicates = 0
        with conn.transaction():
            for item, item_rows in accepted:
                try:
                    with conn.transaction():
                        duplicates += self.writer.write(conn, item_rows).duplicates
                    kept += item_rows
                except UNAVAILABLE:
                    raise
                except psycopg.Error as exc:
                    self.writer.reset()  # the savepoint's rollback undid what the writer created in it
                    reason = f"database refused the rows: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
                    rejected.append(quarantine.QuarantineRecord(item.received_at, item.topic, item_rows[0].sensor_id, "db_rejected", reason, item.payload))
            self._mark(conn, kept)
            stored: list[quarantine.QuarantineRecord] = []
            for record in rejected:  # one savepoint each: an entry the database refuses cannot take the batch with it
                try:
                    with conn.transaction():
                        quarantine.write(conn, [record], max_bytes=max_bytes, schema=self.db.schema_name)
                    stored.append(record)
                except UNAVAILABLE:
                    raise
                except psycopg.Error as exc:
                    log.error("quarantine refused an entry (%s: %s); %s message on %r acked without a trace in the table",
                              type(exc).__name__, str(exc).splitlines()[0][:200], record.reason_code, record.topic[:200])
        return kept, stored, duplicates

    def _mark(self, conn: psycopg.Connection, rows: list[LevelRow]) -> None:
        """Mark the rows' minutes for the aggregate refresh in the commit's own transaction (plain path).

        The messages are acked right after the commit: a mark kept only in memory was lost
        when the process died before its refresh, and those aggregates were never computed.
        """
        if not self.writer.timescale:
            pending.mark(conn, rows, schema=self.db.schema_name)
