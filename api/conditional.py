"""Conditional GET of published files (RFC 9110 §13): ETag / Last-Modified, 304 when unchanged.

Starlette's ``FileResponse`` sets ``ETag`` and ``Last-Modified`` but never evaluates
``If-None-Match`` / ``If-Modified-Since``: a harvester revalidating the daily files and
descriptors it already holds was sent every byte again with a 200.
"""

from __future__ import annotations

import email.utils
import os
from pathlib import Path

from fastapi import Request
from fastapi.responses import FileResponse, Response

# Published files change when a day is exported again: a cache may keep them, but asks first.
CACHE_CONTROL = "public, no-cache"


def _etags(header: str) -> list[str]:
    return [t.strip().removeprefix("W/") for t in header.split(",") if t.strip()]


def not_modified(request: Request, etag: str, mtime: float) -> bool:
    """RFC 9110 §13.2.2: If-None-Match (weak comparison) decides when present, else If-Modified-Since."""
    inm = request.headers.get("if-none-match")
    if inm is not None:
        tags = _etags(inm)
        return "*" in tags or etag.removeprefix("W/") in tags
    ims = request.headers.get("if-modified-since")
    if ims is None:
        return False
    try:
        since = email.utils.parsedate_to_datetime(ims)
    except (TypeError, ValueError):
        return False  # an unparsable date is ignored (RFC 9110 §13.1.3)
    return since.tzinfo is not None and int(mtime) <= since.timestamp()


def file_response(request: Request, path: Path, media_type: str) -> Response:
    """The file, or a 304 carrying its validators when the client's copy is current."""
    stat = os.stat(path)
    response = FileResponse(path, media_type=media_type, stat_result=stat, headers={"Cache-Control": CACHE_CONTROL})
    etag = response.headers["etag"]
    if not_modified(request, etag, stat.st_mtime):
        return Response(status_code=304, headers={"ETag": etag, "Last-Modified": response.headers["last-modified"],
                                                  "Cache-Control": CACHE_CONTROL})
    return response
