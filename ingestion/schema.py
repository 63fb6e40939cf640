"""The smart schema: apply ``ingestion/migrations`` on the right storage path.

Two storage paths share table names and columns (docs/CONTRACTS.md): TimescaleDB
(hypertable, compression/retention policies, continuous aggregates) when the
``timescaledb`` extension is installed in the database, plain PostgreSQL otherwise
(daily partitions and aggregate tables maintained by the service). Which one a
database uses is decided once, at its first migration, and remembered: switching
later would need a data migration, so it is refused with a clear error.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import psycopg
from psycopg import sql

from common.migrations import apply
from ingestion import aggregates

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


class SchemaError(Exception):
    """The smart schema cannot be used as configured; the message says why."""


def timescale_available(conn: psycopg.Connection) -> bool:
    """True when the ``timescaledb`` extension is installed in this database."""
    return conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone() is not None


def storage_path(conn: psycopg.Connection, schema: str = "smart") -> str | None:
    """``'timescale'`` / ``'plain'`` for a migrated schema, None before the first migration."""
    row = conn.execute(
        "SELECT c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = 'levels'",
        (schema,),
    ).fetchone()
    if row is None:
        return None
    return "plain" if row[0] == "p" else "timescale"


def use_timescale(conn: psycopg.Connection, mode: str = "auto", schema: str = "smart") -> bool:
    """Resolve ``SmartDbSettings.timescale`` (auto/on/off) against what the database has."""
    if mode not in ("auto", "on", "off"):
        raise SchemaError(f"timescale must be auto, on or off, not {mode!r}")
    available = timescale_available(conn)
    if mode == "on" and not available:
        raise SchemaError("timescale=on but the timescaledb extension is not installed in this database (see sonopolis db-init)")
    wanted = available if mode == "auto" else mode == "on"
    existing = storage_path(conn, schema)
    if existing is not None and (existing == "timescale") != wanted:
        raise SchemaError(
            f"schema {schema!r} was created on the {existing} path; timescale={mode} would switch it "
            "(migrate the data explicitly instead)"
        )
    return wanted


def migrate(conn: psycopg.Connection, *, timescale: str = "auto", schema: str = "smart") -> list[int]:
    """Bring ``schema`` up to date; return the migration versions applied now.

    ``conn`` is a connection of the smart role (which owns the schema). It is switched
    to autocommit for the duration (each migration runs in its own transaction).
    """
    previous = conn.autocommit
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.commit()
    conn.autocommit = True
    try:
        ts = use_timescale(conn, timescale, schema)
        applied = apply(conn, schema, MIGRATIONS_DIR, timescale=ts)
        conn.execute(sql.SQL("SET search_path TO {}, public").format(sql.Identifier(schema)))
    finally:
        conn.autocommit = previous
    if applied:
        log.info("smart schema %s migrated on the %s path: versions %s", schema, "timescale" if ts else "plain", applied)
    if MEASURED_ONLY in applied and not ts:
        _recompute_plain_aggregates(conn, schema)
    return applied


MEASURED_ONLY = 4
"""The migration from which aggregates count measured frames only (``ingestion.aggsql.MEASURED``)."""


def _recompute_plain_aggregates(conn: psycopg.Connection, schema: str) -> None:
    """Recompute every aggregate bucket the raw rows still cover (an upgrade; nothing to do on a new schema).

    The TimescaleDB migration rebuilds its continuous aggregates itself; the plain
    path's tables are filled by the service, so the upgrade recomputes them here.
    """
    span = conn.execute(sql.SQL("SELECT min(time), max(time) FROM {}").format(sql.Identifier(schema, "levels"))).fetchone()
    if span is None or span[0] is None:
        return
    result = aggregates.refresh(conn, span[0], span[1] + timedelta(seconds=1), schema=schema)
    log.info("aggregates of %s recomputed over measured frames, %s to %s: %s", schema, span[0], span[1], result.buckets)
