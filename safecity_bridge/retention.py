"""Retention: incidents, their events and camera moves, journal entries and quarantined
messages older than ``retention_days`` (default 15, at most 30) are deleted, except
incidents under legal hold and the journal entries about them.

The purge runs in the database (``purge_expired``, the only code allowed past the
journal's append-only trigger, executable by the safe role only), which journals it
itself with its cutoff and counts, in the same transaction: a purge run by hand in SQL
leaves the same trace (migration 0003). The clock is injected so tests can travel in
time: its time is the journal entry's.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
from psycopg import sql

from common.postgres import UNAVAILABLE
from safecity_bridge import store
from safecity_bridge.journal import SYSTEM

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class PurgeResult:
    cutoff: datetime
    incidents: int
    journal_entries: int
    quarantined: int


async def purge(conn: psycopg.AsyncConnection[Any], schema: str, retention_days: int, *, clock: Clock = utc_now) -> PurgeResult:
    """Delete what is past retention and journal the purge (one transaction)."""
    if not 1 <= retention_days <= 30:
        raise ValueError(f"retention_days={retention_days} refused: between 1 and 30 days")
    now = clock()
    cutoff = now - timedelta(days=retention_days)
    # The function journals the purge itself (cutoff, counts), in its own statement: a
    # purge run by hand in SQL leaves the same trace. Given here: the clock's time, the
    # bridge as actor and the retention.
    cur = await conn.execute(sql.SQL("SELECT * FROM {}.purge_expired(%s, %s, %s, %s::jsonb)").format(sql.Identifier(schema)),
                             (cutoff, now, SYSTEM, json.dumps({"retention_days": retention_days})))
    row = await cur.fetchone()
    if row is None:
        raise RuntimeError(f"{schema}.purge_expired({cutoff.isoformat()}) returned no row")
    result = PurgeResult(cutoff, int(row[0]), int(row[1]), int(row[2]))
    log.info("retention purge: cutoff=%s incidents=%d journal=%d quarantine=%d", cutoff.isoformat(), result.incidents, result.journal_entries, result.quarantined)
    return result


async def purge_if_present(dsn: str, schema: str, retention_days: int, *, clock: Clock = utc_now) -> PurgeResult | None:
    """One purge on a fresh connection, or None when the safe schema was never created.

    What a bridge that refuses to run (no declaration, e.g. a legal basis that lapsed)
    still owes: the purge ran only inside a running bridge, so what it had stored was
    then kept for good. Deleting needs no legal basis; nothing is created here. An
    existing schema is first brought to this version's migrations (as every start
    does): one left by an older bridge has a purge that does not journal itself.
    """
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute("SELECT to_regprocedure(%s)", (f"{schema}.purge_expired(timestamptz)",))
        row = await cur.fetchone()
        if row is None or row[0] is None:
            cur = await conn.execute("SELECT to_regprocedure(%s)", (f"{schema}.purge_expired(timestamptz, timestamptz, text, jsonb)",))
            row = await cur.fetchone()
            if row is None or row[0] is None:
                return None
        else:
            await asyncio.to_thread(store.migrate, dsn, schema)
        return await purge(conn, schema, retention_days, clock=clock)


async def run_periodically(
    connect: Callable[[], Any], schema: str, retention_days: int, interval_s: float, stop: asyncio.Event, *, clock: Clock = utc_now,
    purged_at_start: bool = False,
) -> None:
    """Purge at start (unless ``purged_at_start``: the caller just did) and every ``interval_s``
    until ``stop``; a DB outage is retried next round."""
    if purged_at_start:
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
        except asyncio.TimeoutError:
            pass
    while not stop.is_set():
        try:
            async with await connect() as conn:
                await purge(conn, schema, retention_days, clock=clock)
        except UNAVAILABLE as exc:
            log.warning("retention purge postponed (database unavailable: %s)", exc.__class__.__name__)
        except Exception:  # noqa: BLE001 - the purge is a legal duty: a failed round must not end the loop
            log.exception("retention purge failed; retried in %.0f s", interval_s)
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
        except asyncio.TimeoutError:
            pass
