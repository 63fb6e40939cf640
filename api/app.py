"""The open API application: ``create_app(settings, pool)``, everything injected.

The caller owns the connection pool (opened before, closed after); the app only
borrows connections. Background work (open-event evaluator, webhook dispatcher) runs
in the app's lifespan when ``settings.events.run_in_api`` — tests drive those
functions directly instead, through the same stores.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
from fastapi import Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from psycopg_pool import AsyncConnectionPool

from api import page, routes_data, routes_events, routes_exports, transparency
from api.errors import ProblemDetails, install_handlers
from api.events import EventStore, evaluator_loop
from api.head import HeadAsGet
from api.proxy import trust_proxy_headers
from api.queries import Queries
from api.security import TokenBuckets, rate_limit_factory, require_admin_factory
from api.settings import ApiSettings
from api.webhooks import WebhookStore, dispatcher_loop
from ngsi.settings import NgsiSettings
from ngsi.temporal_days import rendering_loop

log = logging.getLogger(__name__)

DESCRIPTION = """Open noise data of the city's acoustic sensors: anonymous aggregates only.

* **sensors** — positions and descriptions (GeoJSON);
* **levels** — LAeq, LAmax, LA10/50/90 and third-octave bands per 1 min / 15 min / 1 h / 1 day, daily Lden, hourly counts of car horns and sirens;
* **events** — public noise events (LAeq over an aligned 5 min window above the city's threshold, with the share of the window measured; sensor silent) by server-sent events or signed webhooks;
* **open data** — daily files with Frictionless and DCAT-AP metadata, published only after a data-quality gate;
* **transparency** — what the sensors measure and never do, who is responsible, your rights.

Sensors never record, store or transmit audio. Errors are RFC 9457 Problem Details. The public routes are rate-limited per client (429 + Retry-After)."""

TAGS = [
    {"name": "sensors", "description": "Where the sensors are and what they are"},
    {"name": "levels", "description": "Aggregated noise levels (dB(A)) and source counts"},
    {"name": "events", "description": "Open noise events (never security events)"},
    {"name": "opendata", "description": "Published daily files, datapackage.json, DCAT-AP catalogue, quality reports"},
    {"name": "transparency", "description": "Information for residents (RGPD / CNIL)"},
    {"name": "admin", "description": "Bearer-token routes: webhooks, exports"},
    {"name": "page", "description": "Built-in map and charts for cities without Grafana"},
]


def create_app(settings: ApiSettings, pool: AsyncConnectionPool, *, schema: str = "smart",
               webhook_client: httpx.AsyncClient | None = None, ngsi_settings: NgsiSettings | None = None) -> FastAPI:
    """Build the app around an (open) async pool of the smart role.

    The NGSI-LD context-source routes of ``ngsi.context_source`` are mounted too, so
    one public service answers both the open API and the city's NGSI-LD broker.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        tasks: list[asyncio.Task[None]] = []
        client = webhook_client or httpx.AsyncClient(timeout=httpx.Timeout(settings.events.webhook_timeout_s))
        if settings.events.run_in_api:
            tasks.append(asyncio.create_task(evaluator_loop(pool, app.state.events, settings.events, stop)))
            tasks.append(asyncio.create_task(dispatcher_loop(pool, app.state.webhooks, client, settings.events, stop)))
            log.info("open-event evaluator and webhook dispatcher started")
        ngsi = ngsi_settings or NgsiSettings()
        if ngsi.day_documents_keep_days:  # settled days of minutes, pre-rendered for the NGSI-LD temporal view
            tasks.append(asyncio.create_task(rendering_loop(pool, schema, ngsi, stop)))
        try:
            yield
        finally:
            stop.set()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(t, timeout=10)
            if webhook_client is None:
                await client.aclose()

    app = FastAPI(
        title="Sonopolis open noise data API",
        version="1.0.0",
        description=DESCRIPTION,
        openapi_tags=TAGS,
        license_info={"name": "EUPL-1.2 (code); data under the licence in the DCAT-AP catalogue"},
        responses={400: {"model": ProblemDetails, "description": "Bad request (Problem Details)"},
                   422: {"model": ProblemDetails, "description": "Invalid parameters (Problem Details)"},
                   429: {"model": ProblemDetails, "description": "Rate limited; see Retry-After"}},
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.pool = pool
    app.state.queries = Queries(schema)
    app.state.events = EventStore(schema)
    app.state.webhooks = WebhookStore(schema)
    app.state.schema = schema
    install_handlers(app)
    trust_proxy_headers(app, settings)

    buckets = TokenBuckets(settings.rate_limit_per_minute, settings.rate_limit_burst)
    app.state.rate_buckets = buckets
    rate_limit = rate_limit_factory(buckets)
    require_admin = require_admin_factory(settings.admin_token)

    app.include_router(routes_data.build_router(rate_limit))
    _advertise_page_cap(app, settings.page_max_limit)
    app.include_router(routes_events.build_router(rate_limit, require_admin))
    app.include_router(routes_exports.build_router(rate_limit, require_admin))
    app.include_router(transparency.build_router(rate_limit))
    app.include_router(page.build_router(rate_limit))
    _mount_ngsi(app, pool, schema, ngsi_settings, rate_limit)
    # Open data is read from web pages of any origin (reusers' maps, notebooks): reads only,
    # no credentials, and none of the admin routes' Authorization or POST/DELETE, so a page
    # elsewhere can never act with an operator's token. Link (next page), Retry-After (429),
    # ETag/Last-Modified and Content-Disposition must be exposed or a script cannot see them.
    app.add_middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["GET", "HEAD"],
                       allow_headers=["Accept", "Last-Event-ID", "If-None-Match", "If-Modified-Since", "Link"],
                       expose_headers=["Link", "Retry-After", "ETag", "Last-Modified", "Content-Disposition"], max_age=86400)
    app.add_middleware(HeadAsGet)  # added last: outermost, every layer below sees a GET
    return app


def _advertise_page_cap(app: FastAPI, cap: int) -> None:
    """The OpenAPI document gives the city's ``page_max_limit`` as the maximum of ``limit``.

    The routes' ``Limit`` cannot carry it (it is a setting, not a constant); the document
    advertised a fixed 100000 while the default cap is 10000.
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        first = app.openapi_schema is None
        spec = generate()
        if first:
            routes_data.advertise_page_cap(spec, cap)
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


def _mount_ngsi(app: FastAPI, pool: AsyncConnectionPool, schema: str, ngsi_settings: NgsiSettings | None,
                rate_limit: Callable[[Request], None]) -> None:
    """Serve the read-only NGSI-LD context-source routes (``/ngsi-ld/v1/...``) from the same aggregates."""
    from ngsi.context_source import build_router

    app.include_router(build_router(pool, schema=schema, settings=ngsi_settings), dependencies=[Depends(rate_limit)])
