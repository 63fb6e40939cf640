"""An NGSI-LD context broker double (ETSI GS CIM 009 V1.6 HTTP binding, the parts Sonopolis uses).

No NGSI-LD broker can run here (Orion-LD needs MongoDB, Scorpio/Stellio a JVM), so
the publisher is tested against this double. It speaks the HTTP API faithfully so the
real httpx client code is exercised, not a mock of it:

* content negotiation: ``application/json`` (``@context`` only in a ``Link`` header;
  an ``@context`` member in the body is a 400) and ``application/ld+json`` (``@context``
  in the body is required; a ``Link`` header is a 400); anything else is a 415;
* ``POST /ngsi-ld/v1/entityOperations/upsert?options=update|replace``: 201 + ids when
  entities were created, 204 when all existed, 207 ``{success, errors}`` with one
  ProblemDetails per failed entity; each entity is checked (URI id, type, attribute
  shapes, GeoJSON);
* ``GET /ngsi-ld/v1/entities`` (type/id/idPattern, limit/offset, ``count=true`` ->
  ``NGSILD-Results-Count``) and ``GET /ngsi-ld/v1/entities/{id}``;
* ``NGSILD-Tenant``: one store per tenant, 404 NonexistentTenant on reads of an unknown one;
* optional bearer token (401 otherwise);
* fault injection: ``outage = "unavailable"`` (503 on every request) or ``"refused"``
  (:class:`BrokerTransport` raises ``httpx.ConnectError`` as a closed port would),
  ``reject`` (ids refused with 400), ``flaky`` (ids failing N more times with a 503 inside a 207).

In-process: ``httpx.AsyncClient(transport=BrokerTransport(broker))``. As a server for
the demo: ``python -m simulators.ngsi_broker --port 1026``.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

ERRORS = "https://uri.etsi.org/ngsi-ld/errors/"
CONTROL_PATH = "/_simulator/control"
CORE_CONTEXT = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"
LINK_REL = "http://www.w3.org/ns/json-ld#context"
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$")
_LINK = re.compile(r'<([^>]+)>\s*;(.*)')


def problem(status: int, kind: str, title: str, detail: str | None = None) -> JSONResponse:
    body = {"type": ERRORS + kind, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    return JSONResponse(body, status_code=status, media_type="application/json")


def _problem_body(status: int, kind: str, title: str, detail: str) -> dict[str, Any]:
    return {"type": ERRORS + kind, "title": title, "status": status, "detail": detail}


@dataclass
class StoredEntity:
    body: dict[str, Any]
    context: Any
    writes: int = 1


@dataclass
class NgsiBrokerDouble:
    """State and switches of the double; ``app`` is the ASGI application."""

    token: str | None = None
    outage: str | None = None  # None | "unavailable" | "refused"
    reject: dict[str, str] = field(default_factory=dict)  # entity id -> reason (400 in a 207)
    flaky: dict[str, int] = field(default_factory=dict)  # entity id -> times it still fails with a 503 in a 207
    tenants: dict[str, dict[str, StoredEntity]] = field(default_factory=lambda: {"": {}})
    requests: list[tuple[str, str, int]] = field(default_factory=list)  # (method, path, status)

    def __post_init__(self) -> None:
        self.app = Starlette(
            routes=[
                Route("/ngsi-ld/v1/entityOperations/upsert", self._upsert, methods=["POST"]),
                Route("/ngsi-ld/v1/entities", self._query, methods=["GET"]),
                Route("/ngsi-ld/v1/entities/{entity_id:path}", self._retrieve, methods=["GET"]),
                Route(CONTROL_PATH, self._control, methods=["GET", "PUT"]),
            ]
        )

    async def _control(self, request: Request) -> Response:
        """Fault switch for out-of-process runs (demo, bench/faults.py): not part of NGSI-LD.

        ``PUT {"outage": "unavailable" | null}``; ``GET`` returns the switch and entity counts.
        """
        if request.method == "PUT":
            body = await request.json()
            outage = body.get("outage")
            if outage not in (None, "unavailable"):
                return problem(400, "BadRequestData", "outage must be null or 'unavailable' (use BrokerTransport for 'refused')")
            self.outage = outage
        counts: dict[str, int] = {}
        for e in self.store().values():
            counts[e.body["type"]] = counts.get(e.body["type"], 0) + 1
        return JSONResponse({"outage": self.outage, "entities": counts, "ids": sorted(self.store())})

    # -- inspection helpers for tests ------------------------------------------------------
    def store(self, tenant: str | None = None) -> dict[str, StoredEntity]:
        return self.tenants.get(tenant or "", {})

    def count(self, tenant: str | None = None, type_: str | None = None) -> int:
        return sum(1 for e in self.store(tenant).values() if type_ is None or e.body["type"] == type_)

    # -- ASGI -----------------------------------------------------------------------------
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    def _gate(self, request: Request) -> Response | None:
        if self.outage == "unavailable":
            return problem(503, "ServiceUnavailable", "Broker unavailable (simulated outage)")
        if self.token is not None and request.headers.get("authorization") != f"Bearer {self.token}":
            return problem(401, "Unauthorized", "Missing or wrong bearer token")
        return None

    def _log(self, request: Request, response: Response) -> Response:
        self.requests.append((request.method, request.url.path, response.status_code))
        return response

    async def _upsert(self, request: Request) -> Response:
        return self._log(request, await self._do_upsert(request))

    async def _do_upsert(self, request: Request) -> Response:
        if (gate := self._gate(request)) is not None:
            return gate
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in ("application/json", "application/ld+json"):
            return problem(415, "UnsupportedMediaType", "Unsupported Media Type", f"content type {ctype or '(none)'!r}")
        link = request.headers.get("link")
        if ctype == "application/ld+json" and link:
            return problem(400, "BadRequestData", "Link header not allowed with application/ld+json")
        header_context = CORE_CONTEXT
        if link:
            m = _LINK.match(link.strip())
            if not m or LINK_REL not in m.group(2):
                return problem(400, "BadRequestData", "Link header is not a JSON-LD context link")
            header_context = m.group(1)
        options = set(request.query_params.get("options", "replace").split(","))
        if not options <= {"update", "replace"} or options == {"update", "replace"}:
            return problem(400, "BadRequestData", "options must be update or replace")
        replace = "update" not in options
        try:
            payload = json.loads(await request.body())
        except ValueError:
            return problem(400, "InvalidRequest", "Body is not valid JSON")
        if not isinstance(payload, list) or not payload:
            return problem(400, "BadRequestData", "Body must be a non-empty array of entities")
        tenant = request.headers.get("ngsild-tenant", "")
        store = self.tenants.setdefault(tenant, {})
        created: list[str] = []
        success: list[str] = []
        errors: list[dict[str, Any]] = []
        for entity in payload:
            eid = entity.get("id") if isinstance(entity, dict) else None
            reason = self._check(entity, ctype)
            if reason is None and eid in self.reject:
                reason = self.reject[eid]
            if reason is not None:
                errors.append({"entityId": eid or "", "error": _problem_body(400, "BadRequestData", "Invalid entity", reason)})
                continue
            if self.flaky.get(eid, 0) > 0:
                self.flaky[eid] -= 1
                errors.append({"entityId": eid, "error": _problem_body(503, "InternalError", "Storage busy", "retry later")})
                continue
            context = entity.get("@context", header_context)
            body = {k: v for k, v in entity.items() if k != "@context"}
            old = store.get(eid)
            if old is None:
                store[eid] = StoredEntity(body, context)
                created.append(eid)
            else:
                if old.body["type"] != body["type"]:
                    errors.append({"entityId": eid, "error": _problem_body(400, "BadRequestData", "Type mismatch", "an entity keeps its type")})
                    continue
                merged = body if replace else {**old.body, **body}
                store[eid] = StoredEntity(merged, context, old.writes + 1)
            success.append(eid)
        if errors:
            return JSONResponse({"success": success, "errors": errors}, status_code=207)
        if created:
            return JSONResponse(created, status_code=201)
        return Response(status_code=204)

    @staticmethod
    def _check(entity: Any, ctype: str) -> str | None:
        """Why the broker would refuse this entity, or None."""
        if not isinstance(entity, dict):
            return "entity is not a JSON object"
        if not isinstance(entity.get("id"), str) or not _URI.match(entity["id"]):
            return "id is not a URI"
        if not isinstance(entity.get("type"), str) or not entity["type"]:
            return "type missing"
        if ctype == "application/ld+json" and "@context" not in entity:
            return "@context missing in an application/ld+json entity"
        if ctype == "application/json" and "@context" in entity:
            return "@context in the body of an application/json request"
        for name, attr in entity.items():
            if name in ("id", "type", "@context", "scope"):
                continue
            if not isinstance(attr, dict) or attr.get("type") not in ("Property", "GeoProperty", "Relationship"):
                return f"attribute {name!r} is not a normalized Property/GeoProperty/Relationship"
            if attr["type"] == "Relationship" and not isinstance(attr.get("object"), str):
                return f"relationship {name!r} has no object"
            if attr["type"] != "Relationship" and "value" not in attr:
                return f"attribute {name!r} has no value"
            if attr["type"] == "GeoProperty":
                value = attr["value"]
                if not isinstance(value, dict) or value.get("type") != "Point" or len(value.get("coordinates", [])) != 2:
                    return f"geoproperty {name!r} is not a GeoJSON Point"
                lon, lat = value["coordinates"]
                if not (-180 <= lon <= 180 and -90 <= lat <= 90):
                    return f"geoproperty {name!r} out of range"
        return None

    def _render(self, request: Request, stored: list[StoredEntity], status: int = 200, headers: dict[str, str] | None = None) -> Response:
        accept = request.headers.get("accept", "application/json")
        headers = dict(headers or {})
        if "application/ld+json" in accept:
            body = [{**e.body, "@context": e.context} for e in stored]
            return JSONResponse(body, status_code=status, media_type="application/ld+json", headers=headers)
        if "application/json" in accept or "*/*" in accept:
            headers["Link"] = f'<{CORE_CONTEXT}>; rel="{LINK_REL}"; type="application/ld+json"'
            return JSONResponse([e.body for e in stored], status_code=status, headers=headers)
        return problem(406, "NotAcceptable", "Not Acceptable", f"accept {accept!r}")

    async def _query(self, request: Request) -> Response:
        if (gate := self._gate(request)) is not None:
            return self._log(request, gate)
        p = request.query_params
        if not any(k in p for k in ("type", "id", "idPattern", "q", "attrs", "georel")):
            return self._log(request, problem(400, "BadRequestData", "Too broad query", "give type, id, idPattern, q, attrs or a geo-query"))
        tenant = request.headers.get("ngsild-tenant", "")
        if tenant not in self.tenants:
            return self._log(request, problem(404, "NonexistentTenant", "Tenant does not exist", tenant))
        try:
            limit, offset = int(p.get("limit", 20)), int(p.get("offset", 0))
        except ValueError:
            return self._log(request, problem(400, "BadRequestData", "limit/offset must be integers"))
        if not 0 <= limit <= 1000 or offset < 0:
            return self._log(request, problem(400, "BadRequestData", "limit must be 0..1000, offset >= 0"))
        types = set(p["type"].split(",")) if "type" in p else None
        ids = set(p["id"].split(",")) if "id" in p else None
        pattern = re.compile(p["idPattern"]) if "idPattern" in p else None
        hits = [
            e
            for eid, e in sorted(self.tenants[tenant].items())
            if (types is None or e.body["type"] in types) and (ids is None or eid in ids) and (pattern is None or pattern.fullmatch(eid))
        ]
        headers = {"NGSILD-Results-Count": str(len(hits))} if p.get("count") == "true" else {}
        return self._log(request, self._render(request, hits[offset : offset + limit], headers=headers))

    async def _retrieve(self, request: Request) -> Response:
        if (gate := self._gate(request)) is not None:
            return self._log(request, gate)
        tenant = request.headers.get("ngsild-tenant", "")
        entity = self.tenants.get(tenant, {}).get(request.path_params["entity_id"])
        if entity is None:
            return self._log(request, problem(404, "ResourceNotFound", "Entity not found"))
        response = self._render(request, [entity])
        if response.status_code == 200:
            single = json.loads(response.body)[0]
            response = JSONResponse(single, media_type=response.media_type, headers={k: v for k, v in response.headers.items() if k.lower() == "link"})
        return self._log(request, response)


class BrokerTransport(httpx.ASGITransport):
    """In-process transport to the double; ``outage == "refused"`` raises ``ConnectError`` like a closed port."""

    def __init__(self, broker: NgsiBrokerDouble) -> None:
        super().__init__(app=broker)
        self.broker = broker

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.broker.outage == "refused":
            raise httpx.ConnectError("[Errno 111] Connection refused (simulated)", request=request)
        return await super().handle_async_request(request)


def main() -> None:  # pragma: no cover - demo entry point
    import uvicorn

    parser = argparse.ArgumentParser(description="NGSI-LD broker double for the Sonopolis demo")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1026)
    parser.add_argument("--token", default=None, help="require this bearer token")
    args = parser.parse_args()
    uvicorn.run(NgsiBrokerDouble(token=args.token), host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":  # pragma: no cover
    main()
