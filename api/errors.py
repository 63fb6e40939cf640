"""Errors of the open API, all rendered as RFC 9457 Problem Details by one handler.

Hierarchy::

    ApiError (500)
    ├── BadRequest (400)        bad query parameter or cursor, unknown format
    ├── Unauthorized (401)      missing/wrong bearer token on an admin route
    ├── AdminDisabled (403)     admin routes refused: no token configured
    ├── NotFound (404)          unknown sensor, report, subscription
    ├── NotAcceptable (406)     Accept header we cannot serve
    ├── TooManyRequests (429)   per-IP token bucket empty (with Retry-After)
    └── Unavailable (503)       database unreachable (with Retry-After)

FastAPI's own validation errors (422) and Starlette's HTTP errors (404 unknown route,
405) go through the same rendering, so a client never sees a different error shape and
bad input never yields a 500.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://sonopolis.example.org/problems/"


class ProblemDetails(BaseModel):
    """RFC 9457 problem object; ``errors`` lists each bad parameter when there are several."""

    type: str = Field(..., examples=[TYPE_BASE + "bad-request"])
    title: str = Field(..., examples=["Bad request"])
    status: int = Field(..., ge=400, le=599, examples=[400])
    detail: str | None = Field(None, examples=["period must be one of 1min, 15min, 1h, 1d"])
    instance: str | None = Field(None, examples=["/v1/sensors/S1/levels"])
    errors: list[dict[str, Any]] | None = None


class ApiError(Exception):
    status = 500
    slug = "internal-error"
    title = "Internal error"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None, errors: list[dict[str, Any]] | None = None):
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}
        self.errors = errors


class BadRequest(ApiError):
    status, slug, title = 400, "bad-request", "Bad request"


class Unauthorized(ApiError):
    status, slug, title = 401, "unauthorized", "Unauthorized"


class AdminDisabled(ApiError):
    status, slug, title = 403, "admin-disabled", "Admin routes disabled"


class NotFound(ApiError):
    status, slug, title = 404, "not-found", "Not found"


class NotAcceptable(ApiError):
    status, slug, title = 406, "not-acceptable", "Not acceptable"


class TooManyRequests(ApiError):
    status, slug, title = 429, "too-many-requests", "Too many requests"


class Unavailable(ApiError):
    status, slug, title = 503, "unavailable", "Service unavailable"


_STATUS_TITLES = {400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found", 405: "Method not allowed", 406: "Not acceptable", 422: "Invalid parameters", 429: "Too many requests"}


def problem_response(request: Request, status: int, slug: str, title: str, detail: str | None,
                     headers: dict[str, str] | None = None, errors: list[dict[str, Any]] | None = None) -> JSONResponse:
    body = ProblemDetails(type=TYPE_BASE + slug, title=title, status=status, detail=detail, instance=request.url.path, errors=errors)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers, media_type=PROBLEM_JSON)


def install_handlers(app: FastAPI) -> None:
    """One place that turns every failure into Problem Details."""

    @app.middleware("http")
    async def _refuse_nul(request: Request, call_next):  # type: ignore[no-untyped-def]
        # PostgreSQL text cannot hold a NUL byte: the driver would fail with a 500 deep in a
        # query. Refuse it at the edge, for every route (the NGSI-LD ones included).
        if "\x00" in request.url.path or "%00" in request.url.query:
            return problem_response(request, 400, "bad-request", "Bad request", "NUL characters are not allowed in paths or parameters")
        return await call_next(request)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return problem_response(request, exc.status, exc.slug, exc.title, exc.detail, exc.headers, exc.errors)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"location": ".".join(str(p) for p in e.get("loc", ())), "message": e.get("msg", "")} for e in exc.errors()]
        detail = "; ".join(f"{e['location']}: {e['message']}" for e in errors)
        return problem_response(request, 422, "invalid-parameters", "Invalid parameters", detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = _STATUS_TITLES.get(exc.status_code, "Error")
        slug = title.lower().replace(" ", "-")
        return problem_response(request, exc.status_code, slug, title, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(psycopg.OperationalError)
    async def _db_down(request: Request, exc: psycopg.OperationalError) -> JSONResponse:
        log.warning("database unavailable on %s: %s", request.url.path, type(exc).__name__)
        return problem_response(request, 503, "unavailable", "Service unavailable", "database unavailable, retry later", {"Retry-After": "5"})
