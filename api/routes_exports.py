"""Open-data routes: run an export (admin), read published files, catalogues and quality reports.

Quality reports of rejected batches are public on purpose: residents and re-users can
see why a day is missing from the open data instead of guessing.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path as FsPath
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response

from api.conditional import file_response
from api.errors import BadRequest, NotFound
from api.exports import DAILY_DATASETS, Exporter, ExportError, NotYetPublishable, get_run, list_runs
from api.models import ExportRun

Dataset = Literal["levels_15min", "levels_1h", "lden_daily"]


def build_router(rate_limit, require_admin) -> APIRouter:  # type: ignore[no-untyped-def]
    router = APIRouter(prefix="/v1")

    @router.post("/admin/exports", tags=["admin"], response_model=list[ExportRun], dependencies=[Depends(require_admin)],
                 summary="Export one local day (admin token)",
                 description="Runs the quality gate on each dataset of the day; publishes only the batches that pass. "
                             "A day within the publication delay is refused (400).")
    async def run_export(request: Request, day: Annotated[dt.date, Query(description="Local day to export")],
                         dataset: Annotated[list[Dataset] | None, Query(description="Datasets (default: all)")] = None) -> list[ExportRun]:
        state = request.app.state
        exporter = Exporter(state.settings.exports, state.schema)
        try:
            async with state.pool.connection() as conn:
                results = await exporter.run_day(conn, day, tuple(dataset or DAILY_DATASETS))
                rows = [await get_run(conn, state.schema, r.run_id) for r in results]
        except NotYetPublishable as exc:
            raise BadRequest(str(exc)) from exc
        except ExportError as exc:
            raise BadRequest(str(exc)) from exc
        return [_public(request, r) for r in rows if r]

    @router.get("/opendata/runs", tags=["opendata"], response_model=list[ExportRun], dependencies=[Depends(rate_limit)],
                summary="Export runs and their quality reports (published and rejected)")
    async def runs(request: Request, status: Annotated[Literal["published", "rejected"] | None, Query()] = None,
                   limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[ExportRun]:
        async with request.app.state.pool.connection() as conn:
            rows = await list_runs(conn, request.app.state.schema, limit, status)
        return [_public(request, r) for r in rows]

    @router.get("/opendata/quality-reports/{run_id}", tags=["opendata"], dependencies=[Depends(rate_limit)],
                summary="Quality-gate report of one export run")
    async def report(request: Request, run_id: Annotated[int, Path(ge=1)]) -> JSONResponse:
        async with request.app.state.pool.connection() as conn:
            row = await get_run(conn, request.app.state.schema, run_id)
        if row is None:
            raise NotFound(f"no export run {run_id}")
        return JSONResponse(row["report"])

    def _root(request: Request) -> FsPath:
        return FsPath(request.app.state.settings.exports.directory).resolve()

    def _public(request: Request, row: dict[str, Any]) -> ExportRun:
        """The run as the public sees it: its file relative to the published tree, not the server's absolute path."""
        path = row.get("file_path")
        if path:
            try:
                path = FsPath(path).resolve().relative_to(_root(request)).as_posix()
            except ValueError:
                path = FsPath(path).name
        return ExportRun.model_validate({**row, "file_path": path})

    @router.get("/opendata/datapackage.json", tags=["opendata"], dependencies=[Depends(rate_limit)],
                summary="Frictionless Data Package descriptor of the published files")
    async def datapackage(request: Request) -> Response:
        path = _root(request) / "datapackage.json"
        if not path.is_file():
            raise NotFound("nothing published yet")
        return file_response(request, path, "application/json")

    @router.get("/opendata/catalog.jsonld", tags=["opendata"], dependencies=[Depends(rate_limit)],
                summary="DCAT-AP catalogue (JSON-LD)")
    async def dcat(request: Request) -> Response:
        path = _root(request) / "catalog.jsonld"
        if not path.is_file():
            raise NotFound("nothing published yet")
        return file_response(request, path, "application/ld+json")

    @router.get("/opendata/files/{file_path:path}", tags=["opendata"], dependencies=[Depends(rate_limit)],
                summary="A published CSV file")
    async def files(request: Request, file_path: str) -> Response:
        root = _root(request)
        try:
            target = (root / file_path).resolve()
            if root not in target.parents or target.suffix != ".csv" or "reports" in target.relative_to(root).parts:
                raise BadRequest("only published CSV files can be downloaded")
            published = target.is_file()
        except (OSError, ValueError) as exc:  # a name too long for the file system, a NUL: was a 500
            raise NotFound(f"{file_path[:200]} is not published") from exc
        if not published:
            raise NotFound(f"{file_path[:200]} is not published")
        return file_response(request, target, "text/csv; charset=utf-8")

    return router
