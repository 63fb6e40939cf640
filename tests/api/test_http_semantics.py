"""HTTP semantics of the open API for generic clients: HEAD, CORS, conditional GET of published files."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import pytest

from api.settings import ApiSettings

pytestmark = pytest.mark.anyio


async def test_head_answers_every_get_route_without_a_body(client: httpx.AsyncClient, recent_dsn: str) -> None:
    """RFC 9110 §9.3.2: HEAD is GET without the body; link checkers and harvesters probe with it (was 405)."""
    for path in ("/v1/sensors", "/v1/levels?period=1h&limit=5", "/v1/transparency", "/openapi.json"):
        got = await client.get(path)
        head = await client.head(path)
        assert head.status_code == got.status_code == 200, (path, head.status_code, head.text)
        assert head.content == b"", path
        assert head.headers["content-type"] == got.headers["content-type"], path
        assert head.headers.get("link") == got.headers.get("link"), path
    missing = await client.head("/v1/sensors/NOPE")
    assert missing.status_code == 404 and missing.content == b""


async def test_ngsi_ld_prefix_answers_ngsi_ld_problem_details_and_the_open_api_keeps_its_own(client: httpx.AsyncClient, recent_dsn: str) -> None:
    """Under /ngsi-ld/ an unknown path or method is an NGSI-LD ProblemDetails (ETSI error
    type), as a broker expects of a context source; it was the open API's own problem type.
    The open API's routes keep their RFC 9457 problems."""
    etsi = "https://uri.etsi.org/ngsi-ld/errors/"
    missing = await client.get("/ngsi-ld/v1/types")
    assert missing.status_code == 404 and missing.json()["type"] == etsi + "ResourceNotFound", missing.text
    refused = await client.post("/ngsi-ld/v1/entities", json={"id": "urn:ngsi-ld:X:1", "type": "X"})
    assert refused.status_code == 405 and refused.json()["type"] == etsi + "OperationNotSupported", refused.text
    assert refused.headers["allow"] == "GET, HEAD"
    head = await client.head("/ngsi-ld/v1/entities", params={"type": "NoiseLevelObserved", "limit": 1})
    assert head.status_code == 200 and head.content == b""  # HEAD is still the GET it stands for
    own = await client.get("/v1/nothing-here")
    assert own.status_code == 404 and own.headers["content-type"] == "application/problem+json"
    assert own.json()["type"].startswith("https://sonopolis.example.org/problems/")
    wrong = await client.post("/v1/sensors")
    assert wrong.status_code == 405 and wrong.json()["type"].startswith("https://sonopolis.example.org/problems/")
    assert wrong.headers["allow"] == "GET"


async def test_head_of_the_event_stream_ends(client: httpx.AsyncClient, recent_dsn: str) -> None:
    """A HEAD of the endless SSE stream answers its headers and ends instead of streaming forever."""
    with anyio.fail_after(10):
        r = await client.head("/v1/events/stream")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream") and r.content == b""


async def test_cors_lets_any_web_page_read_the_open_data(client: httpx.AsyncClient, recent_dsn: str) -> None:
    """A reuser's web page on another origin can read levels and follow pages (Link exposed); there was no CORS."""
    origin = {"Origin": "https://reuse.example.net"}
    r = await client.get("/v1/levels", params={"period": "1min", "limit": 2}, headers=origin)
    assert r.status_code == 200 and r.headers.get("access-control-allow-origin") == "*", r.headers
    exposed = {h.strip().lower() for h in r.headers.get("access-control-expose-headers", "").split(",")}
    assert {"link", "retry-after"} <= exposed
    assert "access-control-allow-credentials" not in r.headers
    pre = await client.options("/v1/sensors", headers={**origin, "Access-Control-Request-Method": "GET"})
    assert pre.status_code == 200 and pre.headers.get("access-control-allow-origin") == "*"


async def test_cors_does_not_open_admin_routes_to_web_pages(client: httpx.AsyncClient, recent_dsn: str) -> None:
    """A cross-origin page may not send the admin bearer token nor POST: the preflight refuses both."""
    origin = {"Origin": "https://evil.example.net"}
    pre = await client.options("/v1/admin/webhooks", headers={**origin, "Access-Control-Request-Method": "POST",
                                                              "Access-Control-Request-Headers": "authorization, content-type"})
    assert pre.status_code == 400
    assert "POST" not in pre.headers.get("access-control-allow-methods", "")


def _publish(settings: ApiSettings) -> str:
    """One published file and the descriptors, as an export leaves them."""
    from api.catalog import write_metadata

    root = Path(settings.exports.directory)
    (root / "lden_daily").mkdir(parents=True, exist_ok=True)
    (root / "lden_daily" / "lden_daily_2026-03-29.csv").write_text("sensor_id,day,lden,lday,levening,lnight,coverage\nSE-1,2026-03-29,61.2,58.1,57.3,52.4,0.99\n")
    write_metadata(root, settings.exports)
    return "/v1/opendata/files/lden_daily/lden_daily_2026-03-29.csv"


async def test_published_files_answer_304_when_unchanged(client: httpx.AsyncClient, settings: ApiSettings, smart_dsn: str) -> None:
    """A harvester revalidating a daily file it holds gets a 304, not the whole file again (ETag was ignored)."""
    for path in (_publish(settings), "/v1/opendata/datapackage.json", "/v1/opendata/catalog.jsonld"):
        first = await client.get(path)
        assert first.status_code == 200 and first.content, path
        etag, modified = first.headers.get("etag"), first.headers.get("last-modified")
        assert etag and modified, (path, first.headers)
        assert "no-cache" in first.headers.get("cache-control", ""), path  # may be stored, but revalidated
        same = await client.get(path, headers={"If-None-Match": etag})
        assert same.status_code == 304 and same.content == b"" and same.headers["etag"] == etag, (path, same.status_code)
        since = await client.get(path, headers={"If-Modified-Since": modified})
        assert since.status_code == 304, (path, since.status_code)
        other = await client.get(path, headers={"If-None-Match": '"not-it"', "If-Modified-Since": modified})
        assert other.status_code == 200 and other.content == first.content, path  # If-None-Match wins (RFC 9110 §13.2.2)


@pytest.mark.parametrize(("accept", "expected"), [
    ("text/csv, application/json;q=0.5", "text/csv"),       # was JSON: any mention of json won, whatever its q
    ("application/json;q=0.1, text/csv", "text/csv"),
    ("application/json, text/csv;q=0.5", "application/json"),
    ("text/csv;q=0, application/json", "application/json"),
    ("text/csv", "text/csv"),
    ("text/csv, */*;q=0.1", "text/csv"),
    ("*/*", "application/json"),
    ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "application/json"),  # a browser
])
async def test_accept_q_values_choose_between_csv_and_json(client: httpx.AsyncClient, smart_dsn: str, accept: str, expected: str) -> None:
    """RFC 9110 §12.5.1: the q-values rank the media types a client accepts."""
    r = await client.get("/v1/lden", headers={"Accept": accept})
    assert r.status_code == 200 and r.headers["content-type"].startswith(expected), (accept, r.headers["content-type"])


async def test_accept_refusing_both_formats_is_406(client: httpx.AsyncClient, smart_dsn: str) -> None:
    r = await client.get("/v1/lden", headers={"Accept": "text/csv;q=0, application/json;q=0"})
    assert r.status_code == 406 and r.headers["content-type"] == "application/problem+json"


async def test_negotiated_answers_say_they_vary_with_accept(client: httpx.AsyncClient, recent_dsn: str) -> None:
    """The same URL answers CSV or JSON by Accept: without 'Vary: Accept' a shared cache could hand one to the other."""
    for path in ("/v1/levels", "/v1/lden", "/v1/sources/hourly", "/v1/sensors"):
        for accept in ("text/csv", "application/json"):
            r = await client.get(path, headers={"Accept": accept})
            assert r.status_code == 200
            assert "accept" in [v.strip().lower() for v in r.headers.get("vary", "").split(",")], (path, accept, r.headers)
