"""The operator console and the live feed, on the bridge's own port.

Every route but ``/healthz`` requires an operator (HTTP Basic, argon2id). Operators see
live incidents on a map of the sensors and cameras, the cameras' status, and can
acknowledge and qualify an incident (serious / not serious / false alarm); supervisors
can also place or release a legal hold. Every action is journaled with the operator's
name, in the same transaction as the change. Nothing here can steer a camera by hand
or publish anything anywhere.
"""

# No "from __future__ import annotations": FastAPI reads the route annotations, and
# ``Op`` is local to create_app.
import base64
import hashlib
import re
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, Field, field_validator
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

    @field_validator("reason", mode="before")
    @classmethod
    def _real_text(cls, v: object) -> object:
        # Spaces passed the length check; a NUL reached PostgreSQL (500); a lone
        # surrogate broke the error page itself (500). A hold needs a real reason.
        if isinstance(v, str):
            v = v.strip()
            if "\x00" in v:
                raise ValueError("the reason contains a NUL character")
            try:
                v.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValueError("the reason is not valid text") from exc
        return v


def content_security_policy(page: str) -> str:
    """Nothing from elsewhere, no frames; the page's one inline script allowed by its hash."""
    scripts = re.findall(r"<script>(.*?)</script>", page, flags=re.S)
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'" for s in scripts)
    return (f"default-src 'none'; script-src {hashes}; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; "
            "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")


def _last_event_id(request: Request) -> int | None:
    raw = request.headers.get("last-event-id", "")
    return int(raw) if raw.isdigit() and len(raw) < 19 else None


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
    csp = content_security_policy(PAGE.read_text(encoding="utf-8"))

    async def operator(request: Request, creds: Annotated[HTTPBasicCredentials | None, Depends(_basic)]) -> Operator:
        return await auth.authenticate(creds, request.client.host if request.client else "?")

    async def supervisor(op: Annotated[Operator, Depends(operator)]) -> Operator:
        if op.role != "supervisor":
            raise HTTPException(status.HTTP_403_FORBIDDEN, "legal holds are for supervisors")
        return op

    Op = Annotated[Operator, Depends(operator)]

    @app.exception_handler(store.NotFound)
    async def _not_found(request: Request, exc: store.NotFound) -> JSONResponse:
        return JSONResponse({"title": "not found", "detail": str(exc), "status": 404}, status_code=404, media_type="application/problem+json")

    @app.exception_handler(store.Conflict)
    async def _conflict(request: Request, exc: store.Conflict) -> JSONResponse:
        return JSONResponse({"title": "conflict", "detail": str(exc), "status": 409}, status_code=409, media_type="application/problem+json")

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Where and why only: FastAPI's own handler echoes the input, and could not
        # encode a lone surrogate in it (a 500 instead of a 422).
        errors = [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))} for e in exc.errors()]
        return JSONResponse({"title": "invalid request", "status": 422, "errors": errors}, status_code=422, media_type="application/problem+json")

    @app.middleware("http")
    async def _hardened(request: Request, call_next: Any) -> Response:
        """No change from another site's page; headers that keep the console out of frames and caches.

        Browsers attach cached Basic credentials to a cross-site form post: the
        acknowledge route, which needs no body, could be triggered from any page an
        operator opened. Such a post carries the other site's ``Origin`` (and
        ``Sec-Fetch-Site: cross-site``); scripts and tools that send neither are not
        browsers replaying an operator's credentials, and are let through.
        """
        if request.method in ("POST", "PUT", "PATCH", "DELETE"):
            origin = request.headers.get("origin")
            cross = request.headers.get("sec-fetch-site") in ("cross-site", "same-site")
            if cross or (origin is not None and origin.split("://", 1)[-1] != request.headers.get("host", "")):
                return JSONResponse({"title": "forbidden", "status": 403, "detail": "request from another site's page"}, status_code=403,
                                    media_type="application/problem+json")
        response: Response = await call_next(request)
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Content-Security-Policy"] = csp
        return response

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
        """409 if a hold is already placed: its reason stays the one journaled when it was placed."""
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
        """Live messages. A browser that reconnects sends ``Last-Event-ID``: it gets what it missed,
        or a ``resync`` message when that is older than the hub keeps (it then reloads the incidents)."""
        sub = hub.subscribe(replay=replay, after=_last_event_id(request))

        async def events() -> AsyncIterator[dict[str, str]]:
            try:
                yield {"event": "hello", "data": f'{{"operator":"{op.name}"}}'}
                async for msg in sub.messages():
                    yield sse_encode(msg)
            finally:
                hub.unsubscribe(sub)

        return EventSourceResponse(events(), ping=15, headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    return app
