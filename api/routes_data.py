"""Public read routes: sensors (GeoJSON), levels per period, daily Lden, hourly source counts.

Every route is rate-limited per client IP, answers JSON or CSV (``format=`` or the
``Accept`` header) and pages with an opaque ``cursor`` plus a ``Link: rel="next"``
header. Only anonymous aggregates are reachable: there is no route to raw audio
(none exists), to a security event, a camera or an alert.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response

from api.errors import BadRequest, NotFound
from api.models import LatestLevel, LdenPage, LdenRow, LevelPage, LevelRow, Period, SensorCollection, SensorFeature, SourceCountPage, SourceCountRow
from api.queries import Cursor
from api.render import VARY, choose_format, page_response, to_csv

SensorIds = Annotated[list[str] | None, Query(alias="sensor", description="Sensor id; repeat for several", examples=["SE-001"])]
FromTime = Annotated[dt.datetime | None, Query(alias="from", description="Inclusive start (ISO 8601 with offset)", examples=["2025-06-01T00:00:00+02:00"])]
ToTime = Annotated[dt.datetime | None, Query(alias="to", description="Exclusive end (ISO 8601 with offset)")]
LIMIT_DESCRIPTION = ("Rows per page, at most the city's `page_max_limit` (default 10000; the `maximum` here is the "
                     "configured value); above it a 400. Follow `next` for more rows")
# No `le=` here: the bound is the city's setting, known only when the app is built. A
# fixed le=100000 answered 422 above it while the cap answered 400 below it, advertised
# 100000 against a default cap of 10000 and made a cap above 100000 unreachable.
Limit = Annotated[int, Query(ge=1, description=LIMIT_DESCRIPTION)]
CursorQ = Annotated[str | None, Query(description="Opaque cursor from the previous page's `next` link")]
FormatQ = Annotated[str | None, Query(alias="format", pattern="^(json|csv)$", description="json (default) or csv; overrides Accept")]
SensorPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]


def _limit(request: Request, limit: int) -> int:
    """The one check of ``limit`` against the city's cap: a bad query parameter, so a 400 (``api.errors``)."""
    cap = request.app.state.settings.page_max_limit
    if limit > cap:
        raise BadRequest(f"limit={limit} is above this service's page_max_limit ({cap}): ask for at most {cap} rows "
                         "and follow the `next` link for the rest")
    return limit


def advertise_page_cap(spec: dict[str, Any], cap: int) -> None:
    """Write the configured cap as the OpenAPI ``maximum`` of every ``limit`` declared with ``Limit``.

    Found by its description, so a route that pages with another bound (``/v1/events``,
    ``/v1/opendata/runs``) keeps its own.
    """
    for operations in spec.get("paths", {}).values():
        for op in operations.values():
            for param in op.get("parameters", []) if isinstance(op, dict) else []:
                if param.get("name") == "limit" and param.get("description", param["schema"].get("description")) == LIMIT_DESCRIPTION:
                    param["schema"]["maximum"] = cap


def _window(start: dt.datetime | None, end: dt.datetime | None) -> None:
    for name, value in (("from", start), ("to", end)):
        if value is not None and value.tzinfo is None:
            raise BadRequest(f"`{name}` needs a UTC offset (e.g. 2025-06-01T00:00:00Z): local times are ambiguous")
    if start is not None and end is not None and end <= start:
        raise BadRequest("`to` must be after `from`")


def _feature(row: dict) -> SensorFeature:
    return SensorFeature(
        id=row["sensor_id"],
        geometry={"coordinates": (row["longitude"], row["latitude"])},
        properties={k: v for k, v in row.items() if k not in ("latitude", "longitude") and v is not None},
    )


def build_router(rate_limit) -> APIRouter:  # type: ignore[no-untyped-def]
    router = APIRouter(prefix="/v1", dependencies=[Depends(rate_limit)])

    @router.get("/sensors", tags=["sensors"], response_model=SensorCollection,
                summary="All sensors as GeoJSON",
                description="Position (WGS84) and description of every sensor. `format=csv` gives one row per sensor.",
                responses={200: {"content": {"text/csv": {}}}})
    async def sensors(request: Request, format: FormatQ = None) -> Response:
        fmt = choose_format(request, format)
        async with request.app.state.pool.connection() as conn:
            rows = await request.app.state.queries.sensors(conn)
        if fmt == "csv":
            from api.models import SensorProperties
            from pydantic import create_model

            flat = create_model("SensorCsv", latitude=(float, ...), longitude=(float, ...), __base__=SensorProperties)
            return Response(to_csv(flat, [flat.model_validate(r) for r in rows]), media_type="text/csv; charset=utf-8",
                            headers={"Vary": VARY})
        body = SensorCollection(features=[_feature(r) for r in rows])
        return JSONResponse(body.model_dump(mode="json"), media_type="application/geo+json", headers={"Vary": VARY})

    @router.get("/sensors/{sensor_id}", tags=["sensors"], response_model=SensorFeature, summary="One sensor as a GeoJSON Feature")
    async def sensor(request: Request, sensor_id: SensorPath) -> JSONResponse:
        async with request.app.state.pool.connection() as conn:
            rows = await request.app.state.queries.sensors(conn, sensor_id)
        if not rows:
            raise NotFound(f"no sensor {sensor_id!r}")
        return JSONResponse(_feature(rows[0]).model_dump(mode="json"), media_type="application/geo+json")

    async def _levels(request: Request, period: Period, sensors: list[str] | None, start, end, limit, cursor, format, bands) -> Response:  # type: ignore[no-untyped-def]
        fmt = choose_format(request, format)
        _window(start, end)
        cur = Cursor.decode(cursor) if cursor else None
        async with request.app.state.pool.connection() as conn:
            rows = await request.app.state.queries.levels(conn, period, sensors, start, end, _limit(request, limit), cur, bands)
        return page_response(request, fmt, LevelRow, LevelPage, rows, limit, "bucket", f"levels_{period.value}")

    @router.get("/levels", tags=["levels"], response_model=LevelPage, summary="Levels of all or some sensors for a period",
                description="Aggregated A-weighted levels per bucket from `levels_<period>`. Ordered by bucket then sensor.",
                responses={200: {"content": {"text/csv": {}}}})
    async def levels(request: Request, period: Annotated[Period, Query(description="Aggregation period")] = Period.h1,
                     sensor: SensorIds = None, start: FromTime = None, end: ToTime = None, limit: Limit = 1000,
                     cursor: CursorQ = None, format: FormatQ = None,
                     bands: Annotated[bool, Query(description="Include third-octave bands")] = False) -> Response:
        return await _levels(request, period, sensor, start, end, limit, cursor, format, bands)

    @router.get("/sensors/{sensor_id}/levels", tags=["levels"], response_model=LevelPage, summary="Levels of one sensor for a period",
                responses={200: {"content": {"text/csv": {}}}, 404: {"description": "Unknown sensor"}})
    async def sensor_levels(request: Request, sensor_id: SensorPath,
                            period: Annotated[Period, Query(description="Aggregation period")] = Period.h1,
                            start: FromTime = None, end: ToTime = None, limit: Limit = 1000, cursor: CursorQ = None,
                            format: FormatQ = None, bands: Annotated[bool, Query()] = False) -> Response:
        async with request.app.state.pool.connection() as conn:
            if not await request.app.state.queries.sensor_exists(conn, sensor_id):
                raise NotFound(f"no sensor {sensor_id!r}")
        return await _levels(request, period, [sensor_id], start, end, limit, cursor, format, bands)

    @router.get("/lden", tags=["levels"], response_model=LdenPage, summary="Daily Lden, Lday, Levening, Lnight",
                responses={200: {"content": {"text/csv": {}}}})
    async def lden(request: Request, sensor: SensorIds = None,
                   start: Annotated[dt.date | None, Query(alias="from", description="First local day (inclusive)")] = None,
                   end: Annotated[dt.date | None, Query(alias="to", description="Last local day (exclusive)")] = None,
                   limit: Limit = 1000, cursor: CursorQ = None, format: FormatQ = None) -> Response:
        fmt = choose_format(request, format)
        if start and end and end <= start:
            raise BadRequest("`to` must be after `from`")
        cur = Cursor.decode(cursor) if cursor else None
        async with request.app.state.pool.connection() as conn:
            rows = await request.app.state.queries.lden(conn, sensor, start, end, _limit(request, limit), cur)
        return page_response(request, fmt, LdenRow, LdenPage, rows, limit, "day", "lden_daily")

    @router.get("/sources/hourly", tags=["levels"], response_model=SourceCountPage,
                summary="Car horns and sirens counted per hour",
                description="Counts of non-security noise sources only. Security classes are not part of the smart data and never appear.",
                responses={200: {"content": {"text/csv": {}}}})
    async def sources(request: Request, sensor: SensorIds = None, start: FromTime = None, end: ToTime = None,
                      limit: Limit = 1000, cursor: CursorQ = None, format: FormatQ = None) -> Response:
        fmt = choose_format(request, format)
        _window(start, end)
        cur = Cursor.decode(cursor) if cursor else None
        async with request.app.state.pool.connection() as conn:
            rows = await request.app.state.queries.source_counts(conn, sensor, start, end, _limit(request, limit), cur)
        return page_response(request, fmt, SourceCountRow, SourceCountPage, rows, limit, "hour", "sources_hourly")

    @router.get("/latest", tags=["levels"], response_model=list[LatestLevel], summary="Latest 1-minute LAeq of each sensor (last hour)")
    async def latest(request: Request) -> list[LatestLevel]:
        since = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
        async with request.app.state.pool.connection() as conn:
            rows = await request.app.state.queries.latest(conn, since)
        return [LatestLevel.model_validate(r) for r in rows]

    return router
