"""Open event routes: the SSE stream, the recent events list, and webhook subscriptions (admin).

The stream reads ``api_events`` by increasing id, so a client that reconnects with
``Last-Event-ID`` resumes exactly where it stopped, whichever API process serves it.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from sse_starlette.sse import EventSourceResponse

from api.errors import BadRequest, NotFound
from api.models import OpenEvent, OpenEventType, Webhook, WebhookCreate, WebhookCreated

Types = Annotated[list[OpenEventType] | None, Query(alias="type", description="Event types to receive; repeat for several")]
Sensors = Annotated[list[str] | None, Query(alias="sensor", description="Sensor ids to follow; repeat for several")]


def build_router(rate_limit, require_admin) -> APIRouter:  # type: ignore[no-untyped-def]
    router = APIRouter(prefix="/v1")

    @router.get("/events", tags=["events"], response_model=list[OpenEvent], dependencies=[Depends(rate_limit)],
                summary="Open noise events after a given id",
                description="Public events only: `noise_threshold_exceeded` (LAeq over an aligned 5 min window above the "
                            "city's threshold: energetic mean weighted by frame duration, frames of status `ok`/`degraded` "
                            "only, judged once the window has ended plus a settle delay and only when measured frames cover "
                            "enough of it, see `coverage`) and `sensor_silent`. An event is published once and never "
                            "changes. Security classes never exist in this API.")
    async def events(request: Request, after: Annotated[int, Query(ge=0)] = 0, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                     type: Types = None, sensor: Sensors = None) -> list[OpenEvent]:
        async with request.app.state.pool.connection() as conn:
            rows = await request.app.state.events.after(conn, after, limit, type, sensor)
        return [OpenEvent.model_validate(r) for r in rows]

    @router.get("/events/stream", tags=["events"], dependencies=[Depends(rate_limit)],
                summary="Server-sent events stream of open noise events",
                description="`text/event-stream`; each message has `id` (resume with `Last-Event-ID`), `event` = the event type "
                            "and `data` = the event as JSON. Without `Last-Event-ID` or `after`, only new events are sent.",
                responses={200: {"content": {"text/event-stream": {}}}})
    async def stream(request: Request, type: Types = None, sensor: Sensors = None,
                     after: Annotated[int | None, Query(ge=0, description="Start after this event id")] = None,
                     last_event_id: Annotated[str | None, Header()] = None) -> EventSourceResponse:
        state = request.app.state
        start = after
        if last_event_id is not None:
            try:
                start = int(last_event_id)
            except ValueError as exc:
                raise BadRequest("Last-Event-ID must be an event id (integer)") from exc
        if start is None:
            async with state.pool.connection() as conn:
                start = await state.events.last_id(conn)
        poll = state.settings.events.sse_poll_s

        async def generate() -> AsyncIterator[dict]:
            last = start
            while True:
                async with state.pool.connection() as conn:
                    rows = await state.events.after(conn, last, 200, type, sensor)
                for r in rows:
                    last = r["id"]
                    event = OpenEvent.model_validate(r)
                    yield {"id": str(event.id), "event": event.event_type, "data": json.dumps(event.model_dump(mode="json"))}
                if not rows:
                    await asyncio.sleep(poll)

        return EventSourceResponse(generate(), ping=15, send_timeout=30)

    @router.post("/admin/webhooks", tags=["admin"], status_code=201, response_model=WebhookCreated,
                 dependencies=[Depends(require_admin)], summary="Subscribe a webhook (admin token)",
                 description="Returns the HMAC secret once. Deliveries are POSTs of the event JSON with "
                             "`X-Sonopolis-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, \"<t>.<body>\")>`.")
    async def create_webhook(request: Request, body: WebhookCreate) -> WebhookCreated:
        async with request.app.state.pool.connection() as conn:
            row = await request.app.state.webhooks.create(conn, str(body.url), list(body.event_types), body.description)
        return WebhookCreated.model_validate(row)

    @router.get("/admin/webhooks", tags=["admin"], response_model=list[Webhook], dependencies=[Depends(require_admin)],
                summary="List webhook subscriptions (admin token)")
    async def list_webhooks(request: Request) -> list[Webhook]:
        async with request.app.state.pool.connection() as conn:
            return [Webhook.model_validate(r) for r in await request.app.state.webhooks.list(conn)]

    @router.get("/admin/webhooks/{webhook_id}/deliveries", tags=["admin"], dependencies=[Depends(require_admin)],
                summary="Delivery status of one webhook (admin token)")
    async def deliveries(request: Request, webhook_id: uuid.UUID) -> list[dict]:
        async with request.app.state.pool.connection() as conn:
            return await request.app.state.webhooks.deliveries_of(conn, webhook_id)

    @router.delete("/admin/webhooks/{webhook_id}", tags=["admin"], status_code=204, dependencies=[Depends(require_admin)],
                   summary="Remove a webhook subscription (admin token)")
    async def delete_webhook(request: Request, webhook_id: uuid.UUID) -> None:
        async with request.app.state.pool.connection() as conn:
            if not await request.app.state.webhooks.delete(conn, webhook_id):
                raise NotFound(f"no webhook {webhook_id}")

    return router
