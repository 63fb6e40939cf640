"""The built-in page for cities without Grafana: sensor map and charts of the last 24 h.

Self-contained (inline SVG and JavaScript, no CDN, no map tiles): it works offline and
loads nothing from third parties, so visiting it tells nobody else who looked. It reads
the same public routes as any other client.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse

PAGE = Path(__file__).with_name("static") / "index.html"


def build_router(rate_limit) -> APIRouter:  # type: ignore[no-untyped-def]
    router = APIRouter(tags=["page"], dependencies=[Depends(rate_limit)])
    html = PAGE.read_text(encoding="utf-8")

    @router.get("/", response_class=HTMLResponse, summary="Built-in map and 24 h charts")
    async def index() -> HTMLResponse:
        return HTMLResponse(html, headers={"Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data:"})

    return router
