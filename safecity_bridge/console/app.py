"""The operator console and the live feed, on the bridge's own port.

Every route but ``/healthz`` requires an operator (HTTP Basic, argon2id). Operators see
live incidents on a map of the sensors and cameras, the cameras' status, and can
acknowledge and qualify an incident (serious / not serious / false alarm); supervisors
can also place or release a legal hold. Every action is journaled with the operator's
name, in the same transaction as the change. Nothing here can steer a camera by hand
or publish anything anywhere.
"""



import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, Field
from sse_starlette.sse import EventSourceResponse

from safecity_bridge import journal, store
from safecity_bridge.console.auth import Authenticator, Operator
from safecity_bridge.delivery.feed import FeedHub, sse_encode
from safecity_bridge.onvif_events import metadata_stream

PAGE = Path(__file__).with_name("page.html")
_basic = HTTPBasic(auto_error=False)


class Qualification(BaseModel):
    qualification: Literal["serious", "not_serious", "false_alarm"]


class HoldRequest(BaseModel):
    reason: str = Field(..., min_length=3, max_length=500)


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else str(v) if isinstance(v, uuid.UUID) else v) for k, v in row.items()}


def create_app(
    *,
    hub: FeedHub,
    pool: AsyncConnectionPool,
    schema: str,
    auth: Authenticator,
    map_data: Any,
    clock: Any,
) -> FastAPI:
    """``map_data()`` returns sensors, cameras and camera status; ``clock()`` the time of actions."""
    app = FastAPI(title="Sonopolis safe console", docs_url=None, redoc_url=None, openapi_url=None)

    async def operator(creds: Annotated[HTTPBasicCredentials | None, Depends(_basic)]) -> Operator:
        return await auth.authenticate(creds)

    async def supervisor(op: Annotated[Operator, Depends(operator)]) -> Operator:
        if op.role != "supervisor":
            raise HTTPException(status.HTTP_403_FORBIDDEN, "legal holds are for supervisors")
        return op

    Op = Annotated[Operator, Depends(operator)]

    @app.exception_handler(store.NotFound)
    async def _not_found(request: Request, exc: store.NotFound) -> JSONResponse:
        return JSONResponse({"title": "not found", "detail": str(exc), "status": 404}, status_code=404, media_type="application/problem+json")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/", response_class=HTMLResponse)
    async def page(op: Op) -> HTMLResponse:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"), headers={"Cache-Control": "no-store"})

    @app.get("/api/me")
    async def me(op: Op) -> dict[str, str]:
        return {"name": op.name, "role": op.role}

    @app.get("/api/map")
    async def map_(op: Op) -> dict[str, Any]:
        return map_data()

    @app.get("/api/incidents")
    async def incidents(op: Op, limit: int = 200) -> list[dict[str, Any]]:
        async with pool.connection() as conn:
            rows = await store.list_incidents(conn, schema, min(max(limit, 1), 1000))
        return [_jsonable(r) for r in rows]

    @app.post("/api/incidents/{incident_id}/ack")
    async def ack(incident_id: uuid.UUID, op: Op) -> dict[str, str]:
        async with pool.connection() as conn:
            await store.acknowledge(conn, schema, incident_id, op.name, clock())
        hub.publish("acknowledged", {"incident_id": str(incident_id), "operator": op.name})
        return {"status": "acknowledged", "by": op.name}

    @app.post("/api/incidents/{incident_id}/qualify")
    async def qualify(incident_id: uuid.UUID, body: Qualification, op: Op) -> dict[str, str]:
        async with pool.connection() as conn:
            await store.qualify(conn, schema, incident_id, body.qualification, op.name, clock())
        hub.publish("qualified", {"incident_id": str(incident_id), "operator": op.name, "qualification": body.qualification})
        return {"status": "qualified", "qualification": body.qualification, "by": op.name}

    @app.post("/api/incidents/{incident_id}/hold")
    async def hold(incident_id: uuid.UUID, body: HoldRequest, op: Annotated[Operator, Depends(supervisor)]) -> dict[str, str]:
        async with pool.connection() as conn:
            await store.place_hold(conn, schema, incident_id, body.reason, op.name, clock())
        return {"status": "held", "by": op.name}

    @app.delete("/api/incidents/{incident_id}/hold")
    async def release(incident_id: uuid.UUID, op: Annotated[Operator, Depends(supervisor)]) -> dict[str, str]:
        async with pool.connection() as conn:
            await store.release_hold(conn, schema, incident_id, op.name, clock())
        return {"status": "released", "by": op.name}

    @app.get("/api/journal")
    async def journal_(op: Op, incident_id: uuid.UUID | None = None, limit: int = 200) -> list[dict[str, Any]]:
        async with pool.connection() as conn:
            rows = await journal.entries(conn, schema, incident_id=incident_id, limit=min(max(limit, 1), 1000))
        return [_jsonable(r) for r in rows]

    @app.get("/onvif/events")
    async def onvif_events(op: Op, limit: int = 50) -> Response:
        """Recent incidents as an ONVIF-style tt:MetadataStream (for a VMS that polls)."""
        async with pool.connection() as conn:
            rows = await store.list_incidents(conn, schema, min(max(limit, 1), 500))
        incs = [
            {**_jsonable(r), "uncertainty_m": float(r["uncertainty_m"])}
            for r in rows
        ]
        return Response(metadata_stream(incs), media_type="application/xml")

    @app.get("/feed")
    async def feed(request: Request, op: Op, replay: bool = True) -> EventSourceResponse:
        sub = hub.subscribe(replay=replay)

        async def events() -> AsyncIterator[dict[str, str]]:
            try:
                yield {"event": "hello", "data": f'{{"operator":"{op.name}"}}'}
                async for msg in sub.messages():
                    yield sse_encode(msg)
            finally:
                hub.unsubscribe(sub)

        return EventSourceResponse(events(), ping=15, headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    return app
