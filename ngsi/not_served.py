"""What the context source does not serve under ``/ngsi-ld/``, answered in NGSI-LD terms.

A router cannot install exception handlers, so a path nobody serves or a method a route
does not implement fell through to FastAPI (``{"detail": "Not Found"}``) or, mounted in
the open API, to the API's own RFC 9457 problem types. A broker or an NGSI-LD client
reads errors by their ETSI type (CIM 009 §5.5.2), so the context source's router ends
with a catch-all route under its prefix:

* a path no route serves: 404 ``ResourceNotFound``;
* a path served for other methods (the context source is read-only: GET): 405 with
  ``Allow`` (RFC 9110 §15.5.6 makes it mandatory), typed ``OperationNotSupported``.
  NGSI-LD has no error type of its own for a method; its table of HTTP statuses
  (CIM 009 / TS 104 176 §6.3.2) pairs that type with 422, not 501, but a method the
  resource does not have is what 405 means to every HTTP client, and the ProblemDetails
  ``status`` has to be the response's (RFC 9457 §3.1.3).

``Allow`` names HEAD beside GET: the open API answers HEAD on every GET route
(:class:`api.head.HeadAsGet`), as RFC 9110 §9.1 asks of a server that answers GET.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match

from ngsi.query import NgsiProblem

PREFIX = "/ngsi-ld/"
"""Everything under it is the context source's (its API, @context and registration)."""

_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
"""Methods the catch-all answers; HEAD is left to the API, which runs it as a GET."""


def problem(exc: NgsiProblem, headers: dict[str, str] | None = None) -> JSONResponse:
    """The module's ProblemDetails rendering (``application/json``, as every other NGSI-LD error here)."""
    return JSONResponse(exc.body(), status_code=exc.status, media_type="application/json", headers=headers)


def allowed_methods(routes: Sequence[BaseRoute], request: Request) -> list[str]:
    """Methods of the routes whose path matches the request (empty: no such resource)."""
    methods: set[str] = set()
    for route in routes:
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    if "GET" in methods:
        methods.add("HEAD")
    order = ["GET", "HEAD", *_METHODS]
    return sorted(methods, key=lambda m: order.index(m) if m in order else len(order))


def add_not_served(router: APIRouter) -> None:
    """End ``router`` with the catch-all of its prefix; call it once every route is added."""
    served = list(router.routes)

    async def not_served(request: Request) -> Response:
        path = request.url.path
        allow = allowed_methods(served, request)
        if not allow:
            return problem(NgsiProblem(404, "ResourceNotFound", "Resource not found", f"{path}: no such NGSI-LD resource here"))
        detail = f"{request.method} {path}: this read-only context source answers {' and '.join(allow)} only"
        return problem(NgsiProblem(405, "OperationNotSupported", "Method not allowed", detail), headers={"Allow": ", ".join(allow)})

    router.add_api_route(PREFIX + "{rest:path}", not_served, methods=_METHODS, include_in_schema=False, name="ngsi_not_served")
