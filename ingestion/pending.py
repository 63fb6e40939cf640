"""Durable marks of the (sensor, minute) pairs whose aggregates must be refreshed (plain path).

The pipeline acks a batch as soon as its rows are committed, and the aggregates of
its minutes are refreshed afterwards by :class:`ingestion.maintenance.Maintainer`.
Marks kept only in memory were lost when the process died in between (a crash, an
OOM kill, a stop while the database was away), and an acked message is never
redelivered, so those buckets stayed missing or stale. :func:`mark` runs in the
commit's transaction, so a committed row always has its mark; the maintainer
:func:`claim`\\ s the marks, refreshes, then :func:`release`\\ s what it claimed.

Marking a pair again clears its claim (``ON CONFLICT DO UPDATE``): rows committed
while a refresh runs keep their mark for the next one. The update also locks the
mark, so a claim taken while that commit is in flight waits for it and the refresh
that follows sees its rows. Every statement locks marks in one order, (sensor_id
in byte order, minute), so a commit and a claim never wait for each other in a cycle.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from datetime import datetime

import psycopg
from psycopg import sql

from ingestion.writer import LevelRow

_TABLE = "aggregate_pending"
_IN_LOCK_ORDER = 'ORDER BY sensor_id COLLATE "C", minute FOR UPDATE'


def minutes_of(rows: Iterable[LevelRow]) -> set[tuple[str, datetime]]:
    """The (sensor_id, minute start) pairs that ``rows`` fall in."""
    return {(r.sensor_id, r.time.replace(second=0, microsecond=0)) for r in rows}


def mark(conn: psycopg.Connection, rows: Iterable[LevelRow], *, schema: str = "smart") -> int:
    """Mark the minutes of ``rows`` in the caller's transaction; return how many pairs."""
    pairs = sorted(minutes_of(rows))  # code point order of ASCII ids = COLLATE "C": the lock order of claim and release
    if not pairs:
        return 0
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (sensor_id, minute) SELECT * FROM unnest(%s::text[], %s::timestamptz[])"
            " ON CONFLICT (sensor_id, minute) DO UPDATE SET claim = NULL"
        ).format(sql.Identifier(schema, _TABLE)),
        ([p[0] for p in pairs], [p[1] for p in pairs]),
    )
    return len(pairs)


def claim(conn: psycopg.Connection, *, schema: str = "smart") -> tuple[int, set[tuple[str, datetime]]]:
    """Claim every mark (also those a refresh that died had claimed); commits. Returns (token, pairs)."""
    token = secrets.randbits(62)
    with conn.transaction():
        rows = conn.execute(
            sql.SQL(
                "UPDATE {t} p SET claim = %s FROM (SELECT sensor_id, minute FROM {t} " + _IN_LOCK_ORDER + ") o"
                " WHERE p.sensor_id = o.sensor_id AND p.minute = o.minute RETURNING p.sensor_id, p.minute"
            ).format(t=sql.Identifier(schema, _TABLE)),
            (token,),
        ).fetchall()
    return token, {(str(s), m) for s, m in rows}


def release(conn: psycopg.Connection, token: int, *, schema: str = "smart") -> int:
    """Delete the marks still held by ``token`` (run in the refresh's transaction); return how many."""
    return conn.execute(
        sql.SQL(
            "DELETE FROM {t} p USING (SELECT sensor_id, minute FROM {t} WHERE claim = %s " + _IN_LOCK_ORDER + ") o"
            " WHERE p.sensor_id = o.sensor_id AND p.minute = o.minute AND p.claim = %s"
        ).format(t=sql.Identifier(schema, _TABLE)),
        (token, token),
    ).rowcount


def count(conn: psycopg.Connection, *, schema: str = "smart") -> int:
    """Marks waiting for the daily refresh (for tests and operators)."""
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, _TABLE))).fetchone()
    return int(row[0]) if row else 0
