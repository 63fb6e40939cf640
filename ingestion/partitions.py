"""Daily partitions of the raw ``levels`` table on the plain PostgreSQL path.

The service creates partitions ahead of time (today + N days) and, on demand, for
the days a late batch falls in; retention drops whole partitions, which is instant
and leaves no bloat. Bounds are UTC days. Creation is serialised by an advisory lock
so several ingest processes can start together.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import date, datetime, timedelta, timezone

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

_LOCK_KEY = 0x50A7_1E5E


def partition_name(day: date) -> str:
    # Zero-padded by hand: strftime's %Y gives "999", not "0999", for years before 1000.
    return f"levels_p{day.year:04d}{day.month:02d}{day.day:02d}"


def ensure(conn: psycopg.Connection, days: Iterable[date], schema: str = "smart", known: set[date] | None = None) -> list[date]:
    """Create the missing daily partitions of ``days``; return the days created.

    ``known`` is the caller's cache of days known to exist (updated in place) so the
    hot write path costs nothing once a day's partition exists. Runs in the caller's
    transaction.
    """
    wanted = sorted(set(days) - (known or set()))
    if not wanted:
        return []
    existing = set(existing_days(conn, schema))
    created = []
    missing = [d for d in wanted if d not in existing]
    if missing:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        existing = set(existing_days(conn, schema))
        for day in missing:
            if day in existing:
                continue
            start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
            conn.execute(
                sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
                    sql.Identifier(schema, partition_name(day)),
                    sql.Identifier(schema, "levels"),
                    sql.Literal(start),
                    sql.Literal(start + timedelta(days=1)),
                )
            )
            created.append(day)
        if created:
            log.info("created %d levels partition(s): %s..%s", len(created), created[0], created[-1])
    if known is not None:
        known.update(wanted)
    return created


def existing_days(conn: psycopg.Connection, schema: str = "smart") -> list[date]:
    """Days that have a partition, read from the catalog."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i"
        " JOIN pg_class c ON c.oid = i.inhrelid"
        " JOIN pg_class p ON p.oid = i.inhparent"
        " JOIN pg_namespace n ON n.oid = p.relnamespace"
        " WHERE n.nspname = %s AND p.relname = 'levels'",
        (schema,),
    ).fetchall()
    out = []
    for (name,) in rows:
        if name.startswith("levels_p") and len(name) == 16:
            out.append(datetime.strptime(name[8:], "%Y%m%d").date())
    return sorted(out)


def ensure_ahead(conn: psycopg.Connection, today: date, days_ahead: int, schema: str = "smart", known: set[date] | None = None) -> list[date]:
    """Partitions for yesterday .. today + ``days_ahead`` (clocks and zones are never exact)."""
    return ensure(conn, (today + timedelta(days=i) for i in range(-1, days_ahead + 1)), schema, known)


def drop_older_than(conn: psycopg.Connection, cutoff: date, schema: str = "smart") -> list[date]:
    """Retention: drop whole partitions of days strictly before ``cutoff``."""
    dropped = []
    for day in existing_days(conn, schema):
        if day < cutoff:
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(schema, partition_name(day))))
            dropped.append(day)
    if dropped:
        log.info("retention dropped %d levels partition(s) before %s", len(dropped), cutoff)
    return dropped
