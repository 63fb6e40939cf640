"""Writes rejected messages to ``smart.quarantine``: reason, topic, capped raw payload.

The payload is kept (cut at ``max_bytes``) so an operator can see *why* a sensor's
data was refused and fix the sensor; it is never logged. Bytes that are not UTF-8
(and NUL, which PostgreSQL text cannot hold) are replaced, and the original size is
kept in ``payload_bytes``. Old entries are purged by :func:`purge_older_than`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import NamedTuple

import psycopg
from psycopg import sql

from common.postgres import storable, storable_payload

_COLUMNS = ("received_at", "topic", "sensor_id", "reason_code", "reason", "payload", "payload_bytes")


class QuarantineRecord(NamedTuple):
    received_at: datetime
    topic: str
    sensor_id: str | None
    reason_code: str
    reason: str
    payload: bytes


def write(conn: psycopg.Connection, records: Sequence[QuarantineRecord], *, max_bytes: int, schema: str = "smart") -> int:
    """Insert ``records`` in the caller's transaction; return how many."""
    if not records:
        return 0
    stmt = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(schema, "quarantine"), sql.SQL(", ").join(map(sql.Identifier, _COLUMNS))
    )
    with conn.cursor() as cur, cur.copy(stmt) as copy:
        for r in records:
            copy.write_row((
                r.received_at, storable(r.topic, 512), None if r.sensor_id is None else storable(r.sensor_id, 128),
                r.reason_code, storable(r.reason, 2000), storable_payload(r.payload, max_bytes), len(r.payload),
            ))
    return len(records)


def purge_older_than(conn: psycopg.Connection, age: timedelta, *, schema: str = "smart") -> int:
    """Delete quarantine entries received more than ``age`` ago; return how many."""
    stmt = sql.SQL("DELETE FROM {} WHERE received_at < now() - %s").format(sql.Identifier(schema, "quarantine"))
    return conn.execute(stmt, (age,)).rowcount


def counts(conn: psycopg.Connection, *, schema: str = "smart") -> dict[str, int]:
    """reason_code -> entries (for tests, the CLI and dashboards)."""
    stmt = sql.SQL("SELECT reason_code, count(*) FROM {} GROUP BY reason_code").format(sql.Identifier(schema, "quarantine"))
    return {code: int(n) for code, n in conn.execute(stmt)}
