"""Sonopolis as an NGSI-LD context source: read-only ``NoiseLevelObserved`` straight from the aggregates.

The city registers Sonopolis with its broker (``csourceRegistration``, see
docs/ngsi.md) instead of copying years of history into it; the broker forwards
queries here. Two views of the same rows (``smart.levels_1min/15min/1h/1d``, never the
raw 1 s table):

* ``GET /ngsi-ld/v1/entities``: one entity per sensor, period and bucket,
  ``urn:ngsi-ld:NoiseLevelObserved:<sensor>:<PT1M|PT15M|PT1H|P1D>:<start>``, exactly as
  ``ngsi-sync`` pushes them; newest first.
* ``GET /ngsi-ld/v1/temporal/entities``: one entity per sensor and period,
  ``urn:ngsi-ld:NoiseLevelObserved:<sensor>:<period>``, whose measured attributes are
  arrays of instances (``observedAt`` = bucket start), or ``[value, time]`` pairs with
  ``options=temporalValues``. ``q`` filters instances; series without any are left out.

``application/json`` answers carry the ``@context`` in a ``Link`` header,
``application/ld+json`` answers in the body; errors are ProblemDetails, unknown paths
and methods under ``/ngsi-ld/`` included (:mod:`ngsi.not_served`).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlencode

import orjson
import psycopg
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from ngsi import temporal_days
from ngsi.context import context_document, link_header
from ngsi.mapping import (
    BY_CODE,
    PERIODS,
    PeriodSpec,
    observation_from_row,
    parse_observation_id,
)
from ngsi.models import iso_z
from ngsi.not_served import add_not_served, problem
from ngsi.query import (
    NOISE_TYPES,
    GeoQuery,
    NgsiProblem,
    TimeRange,
    bad,
    compact,
    entity_id,
    entity_ids,
    parse_geo,
    parse_time,
    parse_timerel,
    type_selected,
)
from ngsi.registration import registration_example
from ngsi.selection import Selection, select_sql
from ngsi.settings import NgsiSettings
from ngsi.temporal import head, sensor_rows_sql, series_columns, temporal_entity, temporal_instances_sql, temporal_presence_sql
from ngsi.temporal_days import whole_days
from smart.accept import accepted, quality

log = logging.getLogger(__name__)

CONTEXT_PATH = "/ngsi-ld/contexts/sonopolis.jsonld"
_SERIES = re.compile(r"^urn:ngsi-ld:NoiseLevelObserved:(?P<sensor>[a-z0-9][a-z0-9_-]*):(?P<code>PT1M|PT15M|PT1H|P1D)$")
_DAILY_EXTRA = ("lden", "lday", "levening", "lnight")


def _entity(row: dict[str, Any]) -> Any:
    period = BY_CODE[row["code"]]
    return observation_from_row(period, row, row, row if period.length is None else None)


class _Negotiated:
    """Response media type from ``Accept`` (q-values honoured); 406 for what NGSI-LD does not serve."""

    def __init__(self, request: Request, context_url: str) -> None:
        ranges = [(m, min(max(q, 0.0), 1.0)) for m, q in accepted((request.headers.get("accept") or "*/*").lower())]
        ld_q, ld_exact = quality(ranges, lambda m: m == "application/ld+json", ("application/*",))
        json_q, _ = quality(ranges, lambda m: m == "application/json", ("application/*",))
        if max(ld_q, json_q) <= 0:
            raise NgsiProblem(406, "NotAcceptable", "Not Acceptable", "serve application/json or application/ld+json")
        # a tie goes to JSON-LD only when asked by name: */* (or application/*) alone is plain JSON
        self.ld = ld_q > json_q or (ld_q == json_q and ld_exact == 2)
        self.context_url = context_url

    def respond(self, body: Any, *, status: int = 200, links: list[str] | None = None, headers: dict[str, str] | None = None) -> Response:
        headers = dict(headers or {})
        links = list(links or [])
        if self.ld:
            if isinstance(body, list):
                body = [{**e, "@context": [self.context_url]} for e in body]
            else:
                body = {**body, "@context": [self.context_url]}
        else:
            links.insert(0, link_header(self.context_url))
        if links:
            headers["Link"] = ", ".join(links)
        media = "application/ld+json" if self.ld else "application/json"
        # orjson: a day of minutes is ~13,000 instance objects (~1 MB); the stdlib encoder
        # took longer than building them. Same JSON values (our floats are finite).
        return Response(orjson.dumps(body), status_code=status, media_type=media, headers=headers)


def _problem_response(exc: NgsiProblem) -> JSONResponse:
    return problem(exc)


MAX_OFFSET = 1_000_000_000
DEFAULT_LIMIT = 20


def _page(request: Request, settings: NgsiSettings) -> tuple[int, int]:
    p = request.query_params
    try:
        limit = int(p.get("limit", min(DEFAULT_LIMIT, settings.max_page)))  # asking nothing never exceeds the maximum
        offset = int(p.get("offset", 0))
    except ValueError as exc:
        raise bad("limit and offset must be integers") from exc
    if limit < 0:
        raise bad("limit must be >= 0")
    if limit == 0 and p.get("count") != "true":  # CIM 009 §6.3.10: 0 asks for the count alone
        raise bad("limit=0 needs count=true", "limit 0 returns no entities: it is only allowed to ask for NGSILD-Results-Count")
    if limit > settings.max_page:
        raise NgsiProblem(403, "TooManyResults", "limit too large", f"limit must be at most {settings.max_page}")
    if offset < 0:
        raise bad("offset must be >= 0")
    if offset > MAX_OFFSET:  # 2**63 overflowed PostgreSQL's bigint: a 500
        raise bad(f"offset must be at most {MAX_OFFSET}")
    return limit, offset


def _page_links(request: Request, limit: int, offset: int, has_next: bool) -> list[str]:
    """``rel="prev"``/``rel="next"`` pages; none for ``limit=0`` (the count alone: they would be this same request)."""
    links: list[str] = []
    if limit == 0:
        return links
    base = dict(request.query_params)
    if offset > 0:
        links.append(f'<{request.url.path}?{urlencode({**base, "offset": max(0, offset - limit)})}>; rel="prev"; type="application/json"')
    if has_next:
        links.append(f'<{request.url.path}?{urlencode({**base, "offset": offset + limit})}>; rel="next"; type="application/json"')
    return links


def _attrs(request: Request) -> set[str] | None:
    raw = request.query_params.get("attrs")
    if not raw:
        return None
    return {compact(a.strip()) for a in raw.split(",") if a.strip()}


def _names(request: Request, key: str) -> set[str] | None:
    raw = request.query_params.get(key)
    return None if raw is None else {compact(a.strip()) for a in raw.split(",") if a.strip()}


def _projection(request: Request) -> tuple[set[str] | None, set[str] | None]:
    """``pick`` / ``omit`` (CIM 009 V1.8 projection): entity members kept / dropped, ``id`` and ``type`` included.

    Unlike ``attrs`` they select no entity. Orion-LD asks context sources for ``pick=id``
    when it maps a distributed query; answering whole entities multiplied the bytes.
    """
    pick, omit = _names(request, "pick"), _names(request, "omit")
    if pick is not None and omit is not None:
        raise bad("pick and omit together", "give one of them")
    return pick, omit


def _project(body: dict[str, Any], projection: tuple[set[str] | None, set[str] | None]) -> dict[str, Any]:
    pick, omit = projection
    if pick is not None:
        return {k: v for k, v in body.items() if k in pick}
    if omit is not None:
        return {k: v for k, v in body.items() if k not in omit}
    return body


def _options(request: Request) -> set[str]:
    out = set()
    for key in ("options", "format"):
        out |= {o.strip() for o in request.query_params.get(key, "").split(",") if o.strip()}
    return out


@contextmanager
def _regex_errors(pattern: str | None) -> Iterator[None]:
    """idPattern runs in PostgreSQL (``~``): what its regex engine refuses is a 400, not a 500.

    ``re.compile`` checks the syntax first, but Python accepts what PostgreSQL's ARE
    dialect does not (``(?P<name>...)``, ``(?<name>...)``...).
    """
    try:
        yield
    except psycopg.errors.InvalidRegularExpression as exc:
        raise bad("Invalid idPattern", f"{pattern!r}: {exc}") from exc


def _representation(request: Request) -> str:
    """``keyValues`` (or its synonym ``simplified``), ``concise`` or ``normalized``; Query and Retrieve Entity alike."""
    options = _options(request)
    if options & {"keyValues", "simplified"}:
        return "keyValues"
    return "concise" if "concise" in options else "normalized"


def _render(entity: Any, attrs: set[str] | None, representation: str) -> dict[str, Any]:
    """One entity in the representation asked for, restricted to ``attrs`` (id and type always)."""
    if representation == "keyValues":
        return {k: v for k, v in entity.key_values().items() if attrs is None or k in attrs or k in ("id", "type")}
    if representation == "concise":
        return entity.concise(attrs=attrs)
    return entity.normalized(attrs=attrs)


def build_router(pool: AsyncConnectionPool, *, schema: str = "smart", settings: NgsiSettings | None = None) -> APIRouter:
    """The read-only NGSI-LD routes over ``pool`` (smart role); the API mounts this router."""
    settings = settings or NgsiSettings()
    ident = sql.Identifier(schema)
    router = APIRouter(tags=["ngsi-ld"])

    def context_url(request: Request) -> str:
        return settings.context_url or str(request.base_url).rstrip("/") + CONTEXT_PATH

    def guarded(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except NgsiProblem as exc:
                return _problem_response(exc)
            except Exception:  # noqa: BLE001 - any failure of ours is still a ProblemDetails (CIM 009), and logged
                log.exception("NGSI-LD %s %s failed", request.method, request.url.path)
                return _problem_response(NgsiProblem(500, "InternalError", "Internal error", "the context source failed to answer; see its log"))

        run.__name__ = handler.__name__
        run.__doc__ = handler.__doc__
        return run

    async def sensor_rows() -> list[dict[str, Any]]:
        async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(sensor_rows_sql(ident))
            return await cur.fetchall()

    async def geo_sensors(geo: GeoQuery | None) -> list[str] | None:
        if geo is None:
            return None
        return [r["sensor_id"] for r in await sensor_rows() if geo.matches(r["latitude"], r["longitude"])]

    def check_type(request: Request, required: bool) -> bool:
        """False when the query names only types we do not serve (empty answer, not an error)."""
        raw = request.query_params.get("type")
        if raw is None:
            if required:
                raise bad("Too broad query", "give type, id, idPattern, q, attrs or a geo-query")
            return True
        return type_selected(raw, NOISE_TYPES)

    def require_selector(request: Request) -> None:
        """Both query routes refuse a query that names none of the selectors (NGSI-LD: too broad)."""
        if not any(k in request.query_params for k in ("type", "id", "idPattern", "q", "attrs", "georel")):
            raise bad("Too broad query", "give type, id, idPattern, q, attrs or a geo-query")

    def query_params_common(request: Request) -> tuple[str | None, GeoQuery | None, TimeRange]:
        p = request.query_params
        pattern = p.get("idPattern")
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise bad("Invalid idPattern", str(exc)) from exc
        geo = parse_geo(p.get("georel"), p.get("geometry"), p.get("coordinates"), p.get("geoproperty"))
        time = parse_timerel(p.get("timerel"), p.get("timeAt"), p.get("endTimeAt"), p.get("timeproperty"))
        return pattern, geo, time

    @router.get(CONTEXT_PATH, name="ngsi_sonopolis_context", summary="The Sonopolis JSON-LD @context")
    async def sonopolis_context() -> Response:
        """Device + Environment contexts and the Sonopolis terms (percentiles, Lden, bands...)."""
        return Response(json.dumps(context_document(), indent=2), media_type="application/ld+json",
                        headers={"Cache-Control": "public, max-age=86400"})

    @router.get("/ngsi-ld/csourceRegistration.json", summary="csourceRegistration to POST to the city's broker")
    async def csource_registration(request: Request) -> JSONResponse:
        """Registers this API as a context source for NoiseLevelObserved (see docs/ngsi.md)."""
        return JSONResponse(registration_example(str(request.base_url).rstrip("/"), context_url(request)),
                            media_type="application/ld+json")

    @router.get("/ngsi-ld/v1/entities", summary="Query NoiseLevelObserved entities (NGSI-LD)")
    @guarded
    async def query_entities(request: Request) -> Response:
        """type, id, idPattern, q, georel/geometry/coordinates, timerel (extension), attrs, limit/offset, count."""
        p = request.query_params
        neg = _Negotiated(request, context_url(request))
        require_selector(request)
        limit, offset = _page(request, settings)
        pattern, geo, time = query_params_common(request)
        served = check_type(request, required=False)
        periods = list(PERIODS.values())
        keys = None
        if "id" in p:
            parsed = [parse_observation_id(i) for i in entity_ids(p["id"])]
            found = [x for x in parsed if x is not None]
            keys = [(sensor, start) for sensor, _, start in found]
            periods = [spec for spec in periods if any(x[1] is spec for x in found)]
        sensors = await geo_sensors(geo)
        count = p.get("count") == "true"
        attrs = _attrs(request)
        projection = _projection(request)
        rows: list[dict[str, Any]] = []
        total = 0
        if served and periods and (keys is None or keys) and (sensors is None or sensors):
            sel = Selection(periods, sensors, keys, pattern, p.get("q"), time, attrs)
            parts, params = [], []
            for period in periods:
                part, pp = select_sql(ident, period, sel, series=False)
                parts.append(part)
                params += pp
            union = sql.SQL(" UNION ALL ").join(parts)
            with _regex_errors(pattern):
                async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
                    if limit > 0:
                        await cur.execute(
                            sql.SQL("SELECT * FROM ({}) u ORDER BY bucket DESC, sensor_id, code LIMIT %s OFFSET %s").format(union),
                            [*params, limit + 1, offset],
                        )
                        rows = await cur.fetchall()
                    if count:
                        await cur.execute(sql.SQL("SELECT count(*) AS n FROM ({}) u").format(union), params)
                        total = (await cur.fetchone())["n"]  # type: ignore[index]
        has_next = len(rows) > limit
        rows = rows[:limit]
        representation = _representation(request)
        body = [_project(_render(_entity(row), attrs, representation), projection) for row in rows]
        headers = {"NGSILD-Results-Count": str(total)} if count else {}
        return neg.respond(body, links=_page_links(request, limit, offset, has_next), headers=headers)

    @router.get("/ngsi-ld/v1/entities/{entity_id:path}", summary="Retrieve one NoiseLevelObserved entity")
    @guarded
    async def retrieve_entity(request: Request) -> Response:
        neg = _Negotiated(request, context_url(request))
        eid = entity_id(request.path_params["entity_id"])
        projection = _projection(request)
        parsed = parse_observation_id(eid)
        if parsed is None:
            raise NgsiProblem(404, "ResourceNotFound", "Entity not found", eid)
        sensor, period, start = parsed
        sel = Selection([period], [sensor], [(sensor, start)], None, None, TimeRange())
        query, params = select_sql(ident, period, sel, series=False)
        async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, params)
            row = await cur.fetchone()
        if row is None:
            raise NgsiProblem(404, "ResourceNotFound", "Entity not found", eid)
        attrs = _attrs(request)
        body = _render(_entity(row), attrs, _representation(request))
        if attrs is not None and set(body) <= {"id", "type"}:  # attrs is matched: none of them -> 404 (CIM 009)
            raise NgsiProblem(404, "ResourceNotFound", "Entity has none of the requested attributes", f"{eid}: {', '.join(sorted(attrs))}")
        return neg.respond(_project(body, projection))

    @router.get("/ngsi-ld/v1/temporal/entities", summary="Temporal evolution of NoiseLevelObserved (NGSI-LD)")
    @guarded
    async def query_temporal(request: Request) -> Response:
        """type, id (series or per-bucket), idPattern, q, georel, timerel/timeAt/endTimeAt, lastN, attrs, limit/offset, count."""
        p = request.query_params
        neg = _Negotiated(request, context_url(request))
        require_selector(request)
        limit, offset = _page(request, settings)
        pattern, geo, time = query_params_common(request)
        last_n = None
        if "lastN" in p:
            try:
                last_n = int(p["lastN"])
            except ValueError as exc:
                raise bad("lastN must be a positive integer") from exc
            if last_n < 1:
                raise bad("lastN must be a positive integer")
        per_entity = min(last_n or settings.max_instances, settings.max_instances)
        attrs = _attrs(request)
        temporal_values = "temporalValues" in _options(request)
        sensor_by_id = {r["sensor_id"]: r for r in await sensor_rows()}
        sensors_all = list(sensor_by_id)
        allowed = set(await geo_sensors(geo) or []) if geo else set(sensors_all)
        series: list[tuple[str, PeriodSpec]] = [(s, per) for s in sensors_all if s in allowed for per in PERIODS.values()]
        keys = None
        if "id" in p:
            wanted: set[tuple[str, str]] = set()
            keys = []
            for raw in entity_ids(p["id"]):
                if m := _SERIES.match(raw):
                    wanted.add((m["sensor"], m["code"]))
                elif (parsed := parse_observation_id(raw)) is not None:
                    wanted.add((parsed[0], parsed[1].code))
                    keys.append((parsed[0], parsed[2]))
            series = [x for x in series if (x[0], x[1].code) in wanted]
            keys = keys or None
        if pattern is not None:
            rx = re.compile(pattern)
            # unanchored, like the entity view (PostgreSQL ~) and brokers (Orion-LD's $regex)
            series = [x for x in series if rx.search(f"urn:ngsi-ld:NoiseLevelObserved:{x[0]}:{x[1].code}")]
        if not check_type(request, required=False):
            series = []
        q = p.get("q")
        # drop series without any instance in range (one index probe per series)
        present: list[tuple[str, PeriodSpec]] = []
        async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            for period in PERIODS.values():
                mine = [s for s, per in series if per is period]
                if not mine:
                    continue
                # attrs matches series (only those with an instance of one of them), never instances
                sel = Selection([period], mine, keys, None, q, time, attrs)
                await cur.execute(*temporal_presence_sql(ident, period, sel))
                have = {r["sensor_id"] for r in await cur.fetchall()}
                present += [(s, period) for s in mine if s in have]
            order = {spec.code: i for i, spec in enumerate(PERIODS.values())}
            present.sort(key=lambda x: (x[0], order[x[1].code]))
            page = present[offset : offset + limit]
            body: list[dict[str, Any]] = []
            truncated: list[tuple[str, str]] = []
            # whole settled UTC days of minutes come pre-rendered (ngsi.temporal_days) when current
            days = whole_days(time) if keys is None and q is None and not temporal_values and settings.day_documents_keep_days else None
            for period in PERIODS.values():
                mine = [s for s, per in page if per is period]
                if days is not None and period is temporal_days.PERIOD and mine:
                    rendered = await temporal_days.lookup(conn, schema, mine, days, attrs)
                    done = {s for s, got in rendered.items() if got.n_instances <= per_entity}
                    body += [rendered[s].entity(sensor_by_id[s], days[0], attrs) for s in mine if s in done]
                    mine = [s for s in mine if s not in done]
                if not mine:
                    continue
                # lastN counts instances per attribute (CIM 009): with attrs, only the buckets having one of
                # them count, so lastN=1&attrs=Lden is the newest day with an Lden, not the newest day
                sel = Selection([period], mine, keys, None, q, time, attrs if last_n else None)
                # instances in binary (a day of 1-minute spectra is 43,200 reals, ~20 ms to parse from
                # text; ngsi.mapping.round_decimals rounds an exact float4 as its text, by one rule), as
                # tuples: the rows become columns at once
                async with conn.cursor(binary=True) as tuples:
                    await tuples.execute(*temporal_instances_sql(ident, period, sel, per_entity + (0 if last_n else 1), newest=bool(last_n)))
                    names = [d.name for d in tuples.description or ()]
                    by_sensor = series_columns(names, await tuples.fetchall())
                for sensor in mine:
                    columns = by_sensor.get(sensor)
                    if columns is None:
                        continue
                    if not last_n and len(columns["bucket"]) > per_entity:
                        columns = head(columns, per_entity)
                        truncated.append((iso_z(columns["bucket"][0]), iso_z(columns["bucket"][-1])))
                    body.append(temporal_entity(sensor_by_id[sensor], period, columns, attrs, temporal_values))
        body.sort(key=lambda e: (e["id"].rsplit(":", 1)[0], order[e["id"].rsplit(":", 1)[1]]))
        headers = {"NGSILD-Results-Count": str(len(present))} if p.get("count") == "true" else {}
        status = 200
        if truncated:
            status = 206
            headers["Content-Range"] = f"date-time {truncated[0][0]}-{truncated[0][1]}/{settings.max_instances}"
        return neg.respond(body, status=status, links=_page_links(request, limit, offset, offset + limit < len(present)), headers=headers)

    add_not_served(router)  # last: unknown paths and methods under /ngsi-ld/ are NGSI-LD errors too
    return router


__all__ = ["build_router", "CONTEXT_PATH", "parse_time"]
