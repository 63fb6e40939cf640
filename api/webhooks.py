"""HMAC-SHA256-signed webhook deliveries of open events, with retries and backoff.

Signature (Stripe-style, so receivers can reuse known verification code)::

    X-Sonopolis-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>

The timestamp is signed with the body so a receiver can refuse replays older than a
few minutes. Deliveries live in ``api_webhook_deliveries``: a receiver that is down is
retried with capped exponential backoff up to ``webhook_max_attempts``, then marked
``failed`` (kept, visible to the admin). Due deliveries are claimed with ``FOR UPDATE
SKIP LOCKED`` so several API processes never send the same delivery twice at once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import json
import logging
import random
import secrets
import time
import uuid
from typing import Any

import httpx
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from api.models import OpenEvent
from api.settings import OpenEventSettings

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Sonopolis-Signature"


def sign(secret: str, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, body: bytes, header: str, tolerance_s: int = 300, now: float | None = None) -> bool:
    """Receiver-side check (also used by the tests): signature matches and is recent."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        ts = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs((now or time.time()) - ts) > tolerance_s:
        return False
    expected = sign(secret, body, ts).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def backoff_delay(attempts: int, settings: OpenEventSettings, rng: random.Random | None = None) -> float:
    base = min(settings.webhook_backoff_max_s, settings.webhook_backoff_initial_s * 2 ** max(0, attempts - 1))
    return base * (1 + (rng or random).uniform(-0.2, 0.2))


class WebhookStore:
    def __init__(self, schema: str = "smart"):
        s = sql.Identifier(schema)
        self.webhooks = sql.SQL("{}.api_webhooks").format(s)
        self.deliveries = sql.SQL("{}.api_webhook_deliveries").format(s)
        self.events = sql.SQL("{}.api_events").format(s)

    async def create(self, conn: AsyncConnection, url: str, event_types: list[str], description: str | None) -> dict[str, Any]:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(sql.SQL(
                "INSERT INTO {} (id, url, secret, event_types, description) VALUES (%s, %s, %s, %s, %s)"
                " RETURNING id, url, secret, event_types, description, active, created_at").format(self.webhooks),
                (uuid.uuid4(), url, new_secret(), event_types, description))
            row = await cur.fetchone()
        assert row is not None
        return row

    async def list(self, conn: AsyncConnection) -> list[dict[str, Any]]:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(sql.SQL("SELECT id, url, event_types, description, active, created_at FROM {} ORDER BY created_at").format(self.webhooks))
            return await cur.fetchall()

    async def delete(self, conn: AsyncConnection, webhook_id: uuid.UUID) -> bool:
        cur = await conn.execute(sql.SQL("DELETE FROM {} WHERE id = %s").format(self.webhooks), (webhook_id,))
        return cur.rowcount > 0

    async def deliveries_of(self, conn: AsyncConnection, webhook_id: uuid.UUID) -> list[dict[str, Any]]:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(sql.SQL(
                "SELECT event_id, status, attempts, next_attempt_at, last_status, last_error, delivered_at FROM {}"
                " WHERE webhook_id = %s ORDER BY event_id").format(self.deliveries), (webhook_id,))
            return await cur.fetchall()

    async def dispatch_due(self, conn: AsyncConnection, client: httpx.AsyncClient, settings: OpenEventSettings, batch: int = 50) -> int:
        """Send due deliveries once each; return how many were attempted."""
        async with conn.transaction():
            async with conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(sql.SQL(
                    "SELECT d.webhook_id, d.event_id, d.attempts, w.url, w.secret,"
                    " e.event_type, e.sensor_id, e.started_at, e.value, e.threshold, e.coverage"
                    " FROM {d} d JOIN {w} w ON w.id = d.webhook_id JOIN {e} e ON e.id = d.event_id"
                    " WHERE d.status = 'pending' AND d.next_attempt_at <= now()"
                    " ORDER BY d.next_attempt_at LIMIT %s FOR UPDATE OF d SKIP LOCKED").format(
                        d=self.deliveries, w=self.webhooks, e=self.events), (batch,))
                due = await cur.fetchall()
            for d in due:
                await self._send_one(conn, client, settings, d)
        return len(due)

    async def _send_one(self, conn: AsyncConnection, client: httpx.AsyncClient, settings: OpenEventSettings, d: dict[str, Any]) -> None:
        # Rendered by the model /v1/events and SSE render with (docs: the same JSON); a dict of
        # its own wrote started_at as '+00:00' where they write 'Z'.
        event = OpenEvent.model_validate({"id": d["event_id"], **{k: d[k] for k in (
            "event_type", "sensor_id", "started_at", "value", "threshold", "coverage")}}).model_dump(mode="json")
        body = json.dumps(event, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(d["secret"], body, int(time.time())),
                   "X-Sonopolis-Event-Id": str(d["event_id"]), "User-Agent": "sonopolis-webhooks/1"}
        status: int | None = None
        error: str | None = None
        try:
            resp = await client.post(d["url"], content=body, headers=headers, timeout=settings.webhook_timeout_s)
            status = resp.status_code
            ok = 200 <= status < 300
            if not ok:
                error = f"HTTP {status}"
        except httpx.HTTPError as exc:
            ok, error = False, f"{type(exc).__name__}"
        attempts = d["attempts"] + 1
        if ok:
            await conn.execute(sql.SQL("UPDATE {} SET status = 'delivered', attempts = %s, last_status = %s, last_error = NULL,"
                                       " delivered_at = now() WHERE webhook_id = %s AND event_id = %s").format(self.deliveries),
                               (attempts, status, d["webhook_id"], d["event_id"]))
            log.info("webhook %s: event %s delivered (attempt %d)", d["webhook_id"], d["event_id"], attempts)
            return
        final = attempts >= settings.webhook_max_attempts
        delay = dt.timedelta(seconds=backoff_delay(attempts, settings))
        await conn.execute(sql.SQL("UPDATE {} SET status = %s, attempts = %s, last_status = %s, last_error = %s,"
                                   " next_attempt_at = now() + %s WHERE webhook_id = %s AND event_id = %s").format(self.deliveries),
                           ("failed" if final else "pending", attempts, status, error, delay, d["webhook_id"], d["event_id"]))
        log.warning("webhook %s: event %s not delivered (attempt %d, %s)%s", d["webhook_id"], d["event_id"], attempts, error,
                    ", giving up" if final else "")


async def dispatcher_loop(pool: AsyncConnectionPool, store: WebhookStore, client: httpx.AsyncClient,
                          settings: OpenEventSettings, stop: asyncio.Event, period_s: float = 1.0) -> None:
    from psycopg import OperationalError

    while not stop.is_set():
        try:
            async with pool.connection() as conn:
                await store.dispatch_due(conn, client, settings)
        except OperationalError as exc:
            log.warning("webhook dispatch skipped, database unavailable: %s", type(exc).__name__)
        try:
            await asyncio.wait_for(stop.wait(), timeout=period_s)
        except TimeoutError:
            pass
