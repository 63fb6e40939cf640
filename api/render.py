"""Rendering pages of rows as JSON or CSV, with ``Link`` headers for the next page.

The CSV columns are the fields of the row's pydantic model, in declaration order
(band levels expand to ``band_<Hz>`` columns), so JSON, CSV and OpenAPI never
disagree on a name.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from enum import Enum
from typing import Any, Literal

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from api.errors import NotAcceptable
from api.queries import Cursor
from messages.bands import BAND_KEYS
from smart.accept import accepted, quality

Format = Literal["json", "csv", "geojson"]


VARY = "Accept"
"""Every answer whose format ``choose_format`` picks from Accept says so: a shared cache must not hand CSV to a JSON client."""


def choose_format(request: Request, explicit: str | None, default: str = "json") -> str:
    """``format=`` wins; else the Accept header ranked by its q-values (text/csv or JSON); else ``default``.

    Any mention of json used to win, so ``text/csv, application/json;q=0.5`` was answered
    in JSON. ``text/html`` counts for JSON, as before: a browser gets the default.
    """
    if explicit:
        return explicit
    accept = request.headers.get("accept", "").lower()
    if not accept.strip():
        return default
    ranges = accepted(accept)
    q_csv, csv_level = quality(ranges, lambda m: m == "text/csv", ("text/*",))
    q_json, json_level = quality(ranges, lambda m: "json" in m, ("application/*", "text/html"))
    csv_named, json_named = csv_level == 2, json_level == 2
    if q_csv <= 0 and q_json <= 0:
        raise NotAcceptable(f"cannot produce {accept!r}: use application/json or text/csv (or format=json|csv)")
    if q_csv > q_json or (q_csv == q_json and csv_named and not json_named):
        return "csv"
    if q_json > q_csv:
        return "json"
    return default


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(text: str) -> str:
    """A text cell a spreadsheet shows as text: a leading ``= + - @`` would make it a formula.

    Sensor names and streets come from the registry; ``=HYPERLINK(...)`` there was written
    as is into both CSV outputs (OWASP "CSV injection"). Numbers are not text cells and
    keep their sign.
    """
    return "'" + text if text.startswith(_FORMULA_START) else text


def _cell(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"  # as in the published CSV files, not Python's True
    if isinstance(value, list | tuple):
        return ";".join(str(_cell(v)) for v in value)
    if isinstance(value, str):
        return spreadsheet_safe(value)
    return value


def to_csv(model: type[BaseModel], rows: list[BaseModel]) -> str:
    fields = [f for f in model.model_fields if f != "bands"]
    with_bands = "bands" in model.model_fields and any(getattr(r, "bands", None) for r in rows)
    header = fields + ([f"band_{k}" for k in BAND_KEYS] if with_bands else [])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for r in rows:
        line = [_cell(getattr(r, f)) for f in fields]
        if with_bands:
            bands = getattr(r, "bands", None) or {}
            line += [_cell(bands.get(k)) for k in BAND_KEYS]
        writer.writerow(line)
    return out.getvalue()


def next_url(request: Request, last_time: Any, last_sensor: str) -> str:
    at = last_time.isoformat() if isinstance(last_time, dt.datetime | dt.date) else str(last_time)
    return str(request.url.include_query_params(cursor=Cursor(at, last_sensor).encode()))


def page_response(request: Request, fmt: str, model: type[BaseModel], page_model: type[BaseModel], rows: list[dict[str, Any]],
                  limit: int, time_key: str, filename: str) -> Response:
    """Build the page (``rows`` holds up to ``limit + 1`` rows) in the chosen format."""
    has_more = len(rows) > limit
    rows = rows[:limit]
    items = [model.model_validate(r) for r in rows]
    nxt = next_url(request, rows[-1][time_key], rows[-1]["sensor_id"]) if has_more and rows else None
    headers = {"Link": f'<{nxt}>; rel="next"'} if nxt else {}
    headers["Vary"] = VARY
    if fmt == "csv":
        headers["Content-Disposition"] = f'inline; filename="{filename}.csv"'
        return Response(to_csv(model, items), media_type="text/csv; charset=utf-8", headers=headers)
    body = page_model(items=items, count=len(items), next=nxt)
    return JSONResponse(body.model_dump(mode="json", exclude_none=False), headers=headers)
