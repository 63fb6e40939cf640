"""The append-only audit journal: who did what to which incident, and when.

Every camera move, every operator action (acknowledge, qualify, legal hold), every
start with its legal declaration, every start refused for lack of one and every
retention purge lands here. The table
refuses UPDATE/DELETE/TRUNCATE by trigger (see migration 0001); only the purge
function may delete entries past retention, and it journals itself.

Details hold ids, counts and references only: never audio (there is none), never a
payload.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from enum import Enum
from typing import Any

import psycopg
from psycopg import sql


class Action(str, Enum):
    BRIDGE_STARTED = "bridge_started"
    BRIDGE_REFUSED = "bridge_refused"
    INCIDENT_OPENED = "incident_opened"
    EVENT_CORRELATED = "event_correlated"
    CAMERA_MOVED = "camera_moved"
    CAMERA_MOVE_REPLACED = "camera_move_replaced"
    CAMERA_MOVE_BUSY = "camera_move_busy"
    CAMERA_UNAVAILABLE = "camera_unavailable"
    ALERT_DELIVERED = "alert_delivered"
    WEBHOOK_FAILED = "webhook_failed"
    ACKNOWLEDGED = "acknowledged"
    QUALIFIED = "qualified"
    LEGAL_HOLD_PLACED = "legal_hold_placed"
    LEGAL_HOLD_RELEASED = "legal_hold_released"
    PURGE = "purge"


SYSTEM = "bridge"
"""Actor name of the bridge's own actions (operators are journaled by name)."""


class JournalEntry(dict[str, Any]):
    """A row as returned by :func:`entries` (plain dict: id, at, actor, action, incident_id, details)."""


def _table(schema: str) -> sql.Composed:
    return sql.SQL("{}.journal").format(sql.Identifier(schema))


def insert_sql(schema: str) -> sql.Composed:
    """The INSERT statement, shared by the single-statement hot path in :mod:`store`."""
    return sql.SQL("INSERT INTO {} (at, actor, action, incident_id, details) VALUES (%s, %s, %s, %s, %s::jsonb)").format(_table(schema))


async def append(
    conn: psycopg.AsyncConnection[Any],
    schema: str,
    *,
    at: datetime,
    actor: str,
    action: Action,
    incident_id: uuid.UUID | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Append one entry (in the caller's transaction when it has one)."""
    await conn.execute(insert_sql(schema), (at, actor, action.value, incident_id, json.dumps(details or {}, default=str)))


async def append_if_present(dsn: str, schema: str, *, at: datetime, actor: str, action: Action, details: dict[str, Any] | None = None) -> bool:
    """Append one entry on a fresh connection if the safe schema exists; False when it does not.

    For a bridge that refuses to run: its refusal belongs in the journal an earlier,
    declared bridge created, but a refusal must create nothing (no schema, no table).
    """
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute("SELECT to_regclass(%s)", (f"{schema}.journal",))
        row = await cur.fetchone()
        if row is None or row[0] is None:
            return False
        await append(conn, schema, at=at, actor=actor, action=action, details=details)
        return True


async def entries(
    conn: psycopg.AsyncConnection[Any],
    schema: str,
    *,
    incident_id: uuid.UUID | None = None,
    action: Action | None = None,
    limit: int = 500,
) -> list[dict[str, Any]]:
    """Most recent first, optionally for one incident and/or one action."""
    where = [sql.SQL("TRUE")]
    params: list[Any] = []
    if incident_id is not None:
        where.append(sql.SQL("incident_id = %s"))
        params.append(incident_id)
    if action is not None:
        where.append(sql.SQL("action = %s"))
        params.append(action.value)
    params.append(limit)
    query = sql.SQL("SELECT id, at, actor, action, incident_id, details FROM {} WHERE {} ORDER BY id DESC LIMIT %s").format(
        _table(schema), sql.SQL(" AND ").join(where)
    )
    cur = await conn.execute(query, params)
    cols = [d.name for d in cur.description or []]
    return [dict(zip(cols, row)) for row in await cur.fetchall()]
