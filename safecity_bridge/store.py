"""Safe-side database access: incidents, events, camera moves, quarantine, holds.

Everything goes through the safe role into the safe schema, with parameterised SQL.
The hot path writes an event, its incident and the journal entry in **one** statement
(data-modifying CTEs, one round trip, one commit): when the event id is already known
(an MQTT re-delivery) nothing is written and the caller learns it was a duplicate.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from common import migrations
from common.postgres import storable, storable_payload
from messages.security_event import SecurityEvent
from safecity_bridge.correlation import IncidentState
from safecity_bridge import journal
from safecity_bridge.journal import SYSTEM, Action

MIGRATIONS = Path(__file__).with_name("migrations")
PAYLOAD_CAP = 4096
QUALIFICATIONS = ("serious", "not_serious", "false_alarm")


class StoreError(Exception):
    """A safe-side database operation failed or was refused; the message says which."""


class NotFound(StoreError):
    """No such incident (or no such hold)."""


class Conflict(StoreError):
    """The change asked for contradicts the current state (e.g. a hold already placed)."""


def migrate(dsn: str, schema: str) -> list[int]:
    """Apply the safe schema's migrations as the safe role (idempotent)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return migrations.apply(conn, schema, MIGRATIONS)


def _t(schema: str, table: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))


def incident_dict(inc: IncidentState) -> dict[str, Any]:
    return {
        "incident_id": str(inc.incident_id),
        "event_class": inc.event_class,
        "opened_at": inc.opened_at.isoformat(),
        "first_onset": inc.first_onset.isoformat(),
        "sensor_ids": inc.sensor_ids,
        "n_events": inc.n_events,
        "latitude": inc.estimate.lat,
        "longitude": inc.estimate.lon,
        "uncertainty_m": round(inc.estimate.uncertainty_m, 1),
        "locate_method": inc.estimate.method,
        "confidence": round(inc.confidence, 3),
    }


async def record_event(
    conn: psycopg.AsyncConnection[Any], schema: str, ev: SecurityEvent, inc: IncidentState, *, is_new: bool, received_at: datetime
) -> bool:
    """Insert ``ev`` and upsert its incident and journal entry; False when ``ev`` was already stored."""
    q = sql.SQL(
        """
        WITH ev AS (
            INSERT INTO {events} (event_id, incident_id, sensor_id, event_class, confidence, onset, level_db, duration_ms, model, received_at)
            VALUES (%(event_id)s, %(incident_id)s, %(sensor_id)s, %(event_class)s, %(confidence)s, %(onset)s, %(level_db)s, %(duration_ms)s, %(model)s, %(received_at)s)
            ON CONFLICT (event_id) DO NOTHING
            RETURNING event_id
        ), inc AS (
            INSERT INTO {incidents} (incident_id, opened_at, first_onset, event_class, sensor_ids, n_events, confidence, latitude, longitude, uncertainty_m, locate_method)
            SELECT %(incident_id)s, %(opened_at)s, %(first_onset)s, %(event_class)s, %(sensor_ids)s, %(n_events)s, %(inc_conf)s, %(lat)s, %(lon)s, %(unc)s, %(method)s
            WHERE EXISTS (SELECT 1 FROM ev)
            ON CONFLICT (incident_id) DO UPDATE SET
                first_onset = EXCLUDED.first_onset, sensor_ids = EXCLUDED.sensor_ids, n_events = EXCLUDED.n_events, confidence = EXCLUDED.confidence,
                latitude = EXCLUDED.latitude, longitude = EXCLUDED.longitude, uncertainty_m = EXCLUDED.uncertainty_m,
                locate_method = EXCLUDED.locate_method, updated_at = now()
            RETURNING incident_id
        ), j AS (
            INSERT INTO {journal} (at, actor, action, incident_id, details)
            SELECT %(received_at)s, %(actor)s, %(action)s, %(incident_id)s, %(details)s::jsonb
            WHERE EXISTS (SELECT 1 FROM ev)
        )
        SELECT count(*) FROM ev
        """
    ).format(events=_t(schema, "events"), incidents=_t(schema, "incidents"), journal=_t(schema, "journal"))
    est = inc.estimate
    details = {"event_id": str(ev.event_id), "sensor_id": ev.sensor_id, "n_sensors": len(inc.sensor_ids), "method": est.method}
    params = {
        "event_id": ev.event_id,
        "incident_id": inc.incident_id,
        "sensor_id": ev.sensor_id,
        "event_class": ev.event_class.value,
        "confidence": ev.confidence,
        "onset": ev.onset,
        "level_db": ev.level_db,
        "duration_ms": ev.duration_ms,
        "model": ev.model,
        "received_at": received_at,
        "opened_at": inc.opened_at,
        "first_onset": inc.first_onset,
        "sensor_ids": inc.sensor_ids,
        "n_events": inc.n_events,
        "inc_conf": inc.confidence,
        "lat": est.lat,
        "lon": est.lon,
        "unc": est.uncertainty_m if est.uncertainty_m != float("inf") else 1e6,
        "method": est.method,
        "actor": SYSTEM,
        "action": (Action.INCIDENT_OPENED if is_new else Action.EVENT_CORRELATED).value,
        "details": json.dumps(details),
    }
    cur = await conn.execute(q, params)
    row = await cur.fetchone()
    return bool(row and row[0])


async def incident_of_event(conn: psycopg.AsyncConnection[Any], schema: str, event_id: uuid.UUID) -> uuid.UUID | None:
    """The incident a stored event belongs to (None if the event is not stored)."""
    cur = await conn.execute(sql.SQL("SELECT incident_id FROM {} WHERE event_id = %s").format(_t(schema, "events")), (event_id,))
    row = await cur.fetchone()
    return row[0] if row else None


async def alert_delivered(
    conn: psycopg.AsyncConnection[Any], schema: str, *, at: datetime, incident_id: uuid.UUID, event_ids: list[uuid.UUID], details: dict[str, Any]
) -> None:
    """Journal the alert and mark its events alerted, in one transaction.

    The mark is what a restarted bridge looks for (:func:`unalerted`): an event without
    it was committed by a bridge that stopped before alerting it.
    """
    async with conn.transaction():
        await journal.append(conn, schema, at=at, actor=SYSTEM, action=Action.ALERT_DELIVERED, incident_id=incident_id,
                             details={**details, "event_ids": [str(e) for e in event_ids]})
        await conn.execute(sql.SQL("UPDATE {} SET alerted_at = %s WHERE event_id = ANY(%s) AND alerted_at IS NULL").format(_t(schema, "events")),
                           (at, event_ids))


async def unalerted(conn: psycopg.AsyncConnection[Any], schema: str, limit: int = 500) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Incidents holding events never alerted, oldest first: (incident row, all its events by onset).

    Each event carries ``alerted_at`` (None for the ones left to alert); the incident's
    other events are returned too, as a restarted correlator needs every arrival.
    """
    cur = await conn.execute(
        sql.SQL("SELECT incident_id FROM {} WHERE alerted_at IS NULL GROUP BY incident_id ORDER BY min(received_at) LIMIT %s").format(_t(schema, "events")),
        (limit,),
    )
    ids = [r[0] for r in await cur.fetchall()]
    if not ids:
        return []
    cur = await conn.execute(sql.SQL("SELECT " + _INCIDENT_COLS + " FROM {} WHERE incident_id = ANY(%s)").format(_t(schema, "incidents")), (ids,))
    cols = [d.name for d in cur.description or []]
    incidents = {r[0]: dict(zip(cols, r)) for r in await cur.fetchall()}
    cur = await conn.execute(
        sql.SQL("SELECT incident_id, event_id, sensor_id, onset, alerted_at FROM {} WHERE incident_id = ANY(%s) ORDER BY onset, event_id").format(
            _t(schema, "events")),
        (ids,),
    )
    events: dict[uuid.UUID, list[dict[str, Any]]] = {}
    for iid, eid, sid, onset, alerted_at in await cur.fetchall():
        events.setdefault(iid, []).append({"event_id": eid, "sensor_id": sid, "onset": onset, "alerted_at": alerted_at})
    return [(incidents[i], events[i]) for i in ids if i in incidents]


async def quarantine(
    conn: psycopg.AsyncConnection[Any],
    schema: str,
    *,
    received_at: datetime,
    topic: str,
    payload: bytes,
    reason_code: str,
    reason: str,
    sensor_id: str | None = None,
    event_id: str | None = None,
) -> None:
    """Keep a rejected message with its reason (size-capped), never drop it silently."""
    await conn.execute(
        sql.SQL(
            "INSERT INTO {} (received_at, topic, sensor_id, event_id, reason_code, reason, payload, payload_bytes)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        ).format(_t(schema, "quarantine")),
        (received_at, storable(topic, 300), None if sensor_id is None else storable(sensor_id, 128),
         None if event_id is None else storable(event_id, 64), reason_code, storable(reason, 2000),
         storable_payload(payload, PAYLOAD_CAP), len(payload)),
    )


_CAMERA_ACTIONS = {"unavailable": Action.CAMERA_UNAVAILABLE, "replaced": Action.CAMERA_MOVE_REPLACED, "busy": Action.CAMERA_MOVE_BUSY}
"""Journal action of a camera outcome other than a move (the journal says what happened, not just moved or not)."""


async def record_camera_outcomes(
    conn: psycopg.AsyncConnection[Any], schema: str, incident_id: uuid.UUID, outcomes: list[dict[str, Any]], at: datetime
) -> None:
    """One camera_moves row and one journal entry per camera outcome, in one transaction."""
    async with conn.transaction():
        for o in outcomes:
            await conn.execute(
                sql.SQL(
                    "INSERT INTO {} (incident_id, camera_id, outcome, preset, pan, tilt, zoom, reason, latency_ms, at)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                ).format(_t(schema, "camera_moves")),
                (incident_id, o["camera_id"], o["outcome"], o.get("preset"), o.get("pan"), o.get("tilt"), o.get("zoom"), o.get("reason"), o.get("latency_ms"), at),
            )
            action = _CAMERA_ACTIONS.get(o["outcome"], Action.CAMERA_MOVED)
            await conn.execute(
                sql.SQL("INSERT INTO {} (at, actor, action, incident_id, details) VALUES (%s, %s, %s, %s, %s::jsonb)").format(_t(schema, "journal")),
                (at, SYSTEM, action.value, incident_id, json.dumps({k: o.get(k) for k in ("camera_id", "outcome", "preset", "pan", "tilt", "zoom", "reason")})),
            )


_INCIDENT_COLS = (
    "incident_id, opened_at, first_onset, event_class, sensor_ids, n_events, confidence, latitude, longitude, uncertainty_m,"
    " locate_method, status, qualification, acknowledged_by, acknowledged_at, qualified_by, qualified_at"
)


async def list_incidents(conn: psycopg.AsyncConnection[Any], schema: str, limit: int = 200) -> list[dict[str, Any]]:
    cur = await conn.execute(
        sql.SQL("SELECT " + _INCIDENT_COLS + ", EXISTS (SELECT 1 FROM {h} h WHERE h.incident_id = i.incident_id) AS legal_hold"
                " FROM {i} i ORDER BY opened_at DESC LIMIT %s").format(i=_t(schema, "incidents"), h=_t(schema, "legal_holds")),
        (limit,),
    )
    cols = [d.name for d in cur.description or []]
    rows = [dict(zip(cols, r)) for r in await cur.fetchall()]
    if rows:
        ids = [r["incident_id"] for r in rows]
        cur = await conn.execute(
            sql.SQL("SELECT DISTINCT ON (incident_id, camera_id) incident_id, camera_id, outcome, reason FROM {} WHERE incident_id = ANY(%s) ORDER BY incident_id, camera_id, id DESC").format(
                _t(schema, "camera_moves")
            ),
            (ids,),
        )
        cams: dict[uuid.UUID, list[dict[str, Any]]] = {}
        for iid, cam, outcome, reason in await cur.fetchall():
            cams.setdefault(iid, []).append({"camera_id": cam, "outcome": outcome, "reason": reason})
        for r in rows:
            r["cameras"] = cams.get(r["incident_id"], [])
    return rows


async def acknowledge(conn: psycopg.AsyncConnection[Any], schema: str, incident_id: uuid.UUID, operator: str, at: datetime) -> None:
    async with conn.transaction():
        cur = await conn.execute(
            sql.SQL("UPDATE {} SET status = CASE WHEN status = 'open' THEN 'acknowledged' ELSE status END,"
                    " acknowledged_by = COALESCE(acknowledged_by, %s), acknowledged_at = COALESCE(acknowledged_at, %s), updated_at = now()"
                    " WHERE incident_id = %s").format(_t(schema, "incidents")),
            (operator, at, incident_id),
        )
        if cur.rowcount == 0:
            raise NotFound(f"incident {incident_id} not found")
        await _journal(conn, schema, at, operator, Action.ACKNOWLEDGED, incident_id, {})


async def qualify(conn: psycopg.AsyncConnection[Any], schema: str, incident_id: uuid.UUID, qualification: str, operator: str, at: datetime) -> None:
    if qualification not in QUALIFICATIONS:
        raise StoreError(f"qualification {qualification!r} not in {QUALIFICATIONS}")
    async with conn.transaction():
        cur = await conn.execute(
            sql.SQL("UPDATE {} SET status = 'qualified', qualification = %s, qualified_by = %s, qualified_at = %s,"
                    " acknowledged_by = COALESCE(acknowledged_by, %s), acknowledged_at = COALESCE(acknowledged_at, %s), updated_at = now()"
                    " WHERE incident_id = %s").format(_t(schema, "incidents")),
            (qualification, operator, at, operator, at, incident_id),
        )
        if cur.rowcount == 0:
            raise NotFound(f"incident {incident_id} not found")
        await _journal(conn, schema, at, operator, Action.QUALIFIED, incident_id, {"qualification": qualification})


async def place_hold(conn: psycopg.AsyncConnection[Any], schema: str, incident_id: uuid.UUID, reason: str, by: str, at: datetime) -> None:
    """Hold an incident against the purge; journaled only when a hold was placed (``Conflict`` if one exists)."""
    async with conn.transaction():
        try:
            cur = await conn.execute(
                sql.SQL("INSERT INTO {} (incident_id, reason, placed_by, placed_at) VALUES (%s, %s, %s, %s) ON CONFLICT (incident_id) DO NOTHING").format(
                    _t(schema, "legal_holds")
                ),
                (incident_id, reason, by, at),
            )
        except psycopg.errors.ForeignKeyViolation as exc:
            raise NotFound(f"incident {incident_id} not found") from exc
        if cur.rowcount == 0:
            # The journal once said "placed" with a reason that was never stored.
            raise Conflict(f"incident {incident_id} is already under a legal hold; release it first to change its reason")
        await _journal(conn, schema, at, by, Action.LEGAL_HOLD_PLACED, incident_id, {"reason": reason})


async def release_hold(conn: psycopg.AsyncConnection[Any], schema: str, incident_id: uuid.UUID, by: str, at: datetime) -> None:
    """Lift a hold; journaled only when there was one (``NotFound`` otherwise)."""
    async with conn.transaction():
        cur = await conn.execute(sql.SQL("DELETE FROM {} WHERE incident_id = %s").format(_t(schema, "legal_holds")), (incident_id,))
        if cur.rowcount == 0:
            raise NotFound(f"no legal hold on incident {incident_id}")
        await _journal(conn, schema, at, by, Action.LEGAL_HOLD_RELEASED, incident_id, {})


async def _journal(conn: psycopg.AsyncConnection[Any], schema: str, at: datetime, actor: str, action: Action, incident_id: uuid.UUID | None, details: dict[str, Any]) -> None:
    await journal.append(conn, schema, at=at, actor=actor, action=action, incident_id=incident_id, details=details)
