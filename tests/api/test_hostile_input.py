"""Hostile input against the open API, served by a real uvicorn on real PostgreSQL.

* schemathesis generates requests from the API's own OpenAPI schema (every operation,
  valid and invalid parameters): no answer may be a server error, every response must
  conform to its documented schema, and errors are ProblemDetails;
* SQL injection and oversized payloads in every string parameter of every operation:
  refused or answered cleanly, and the data is untouched afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import httpx
import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings

from tests.api.conftest import ADMIN_TOKEN
from tests.api.server import running_api

INJECTIONS = (
    "' OR '1'='1",
    "x'; DROP TABLE smart.levels; --",
    "1); DELETE FROM smart.sensors; --",
    "\\x00\u0000nul",
    "${jndi:ldap://127.0.0.1/x}",
    "../../../../etc/passwd",
    "<script>alert(1)</script>",
)
OVERSIZED = "A" * 12_000  # well past any field, under the HTTP server's 16 kB request-line limit (so the app itself answers)


@pytest.fixture
def base_url(recent_dsn: str, settings) -> Iterator[str]:  # noqa: ANN001
    with running_api(settings, recent_dsn) as url:
        yield url


def _counts(dsn: str) -> tuple[int, int]:
    with psycopg.connect(dsn) as conn:
        return (conn.execute("SELECT count(*) FROM smart.levels").fetchone()[0], conn.execute("SELECT count(*) FROM smart.sensors").fetchone()[0])


def test_schemathesis_finds_no_server_error(base_url: str, recent_dsn: str) -> None:
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    before = _counts(recent_dsn)
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @hsettings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy())
        def check(case) -> None:  # noqa: ANN001
            headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"} if "/admin/" in case.path else {}
            try:
                response = case.call(base_url=base_url, headers=headers, timeout=30)
            except Exception as exc:  # a transport error is a finding too (e.g. the server died)
                failures.append(f"{case.method} {case.formatted_path}: {exc!r}")
                return
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} {case.query}: {response.status_code} {response.text[:200]}")
            elif response.status_code >= 400 and "json" in response.headers.get("content-type", ""):
                body = response.json()
                if not (isinstance(body, dict) and "title" in body and "status" in body):
                    failures.append(f"{case.method} {case.formatted_path}: error without ProblemDetails: {response.text[:200]}")

        if operation.path.endswith("/stream"):
            continue  # an endless SSE stream: covered by tests/api/test_events.py
        check()
    assert operations >= 15
    assert failures == []
    assert _counts(recent_dsn) == before


def test_injection_and_oversized_strings_in_every_string_parameter(base_url: str, recent_dsn: str) -> None:
    spec = httpx.get(f"{base_url}/openapi.json", timeout=10).json()
    before = _counts(recent_dsn)
    tried = 0
    with httpx.Client(base_url=base_url, timeout=30, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as http:
        for path, item in spec["paths"].items():
            for method, op in item.items():
                if method not in ("get", "delete") or path.endswith("/stream"):
                    continue
                params = [p for p in op.get("parameters", []) if p.get("in") in ("query", "path")]
                for p in params:
                    for value in (*INJECTIONS, OVERSIZED):
                        url_path = path
                        query = {}
                        for other in params:
                            if other["in"] == "path":
                                url_path = url_path.replace("{" + other["name"] + "}", quote(value, safe="") if other is p else "ste-01-01")
                        if p["in"] == "query":
                            query[p["name"]] = value
                        r = http.request(method.upper(), url_path, params=query)
                        tried += 1
                        assert r.status_code < 500, (method, path, p["name"], value[:40], r.status_code, r.text[:200])
                        if r.status_code >= 400 and "json" in r.headers.get("content-type", ""):
                            assert "title" in r.json(), r.text[:200]
    assert tried > 50
    assert _counts(recent_dsn) == before


def test_forged_cursors_are_refused_not_a_server_error(base_url: str) -> None:
    """The cursor is base64 JSON the client hands back; a forged one reached PostgreSQL (NUL) or the
    driver (a lone surrogate) and answered 500 on every paginated route."""
    import base64
    import json

    def forged(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    cursors = [
        forged(json.dumps({"t": "2026-01-01T00:00:00+00:00", "s": "a\u0000"}).encode()),
        forged(b'{"t":"2026-01-01T00:00:00+00:00","s":"\\ud800"}'),
        forged(json.dumps({"t": "2026-01-01", "s": "\u0000"}).encode()),
        forged(json.dumps({"t": "2026-01-01", "s": "Not A Sensor"}).encode()),
    ]
    with httpx.Client(base_url=base_url, timeout=30) as http:
        for route in ("/v1/levels", "/v1/lden", "/v1/sources/hourly", "/v1/sensors/se-chavanelle/levels"):
            for cursor in cursors:
                r = http.get(route, params={"cursor": cursor})
                assert r.status_code == 400, (route, cursor, r.status_code, r.text[:200])
                assert "cursor is not valid" in r.json()["detail"]


def test_edge_inputs_found_by_review_are_client_errors(base_url: str) -> None:
    """Each answered 500 before: a deeply nested cursor, a file name too long for the file system, a NUL in a
    webhook description, and NGSI-LD q/coordinates/offset values that overflowed the parser, the maths or bigint."""
    import base64

    nested = base64.urlsafe_b64encode(b"[" * 5000).decode()
    entities = "/ngsi-ld/v1/entities"
    with httpx.Client(base_url=base_url, timeout=30) as http:
        cases = [
            (http.get("/v1/levels", params={"cursor": nested}), 400),
            (http.get("/v1/opendata/files/" + "A" * 300 + ".csv"), 404),
            (http.post("/v1/admin/webhooks", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                       json={"url": "https://hooks.example.org/x", "description": "a\u0000b"}), 422),
            (http.get(entities, params={"type": "NoiseLevelObserved", "q": "(" * 2000}), 400),
            (http.get(entities, params={"type": "NoiseLevelObserved", "georel": "near;maxDistance==100", "geometry": "Point",
                                        "coordinates": "[1e400,45.43]"}), 400),
            (http.get(entities, params={"type": "NoiseLevelObserved", "georel": "near;maxDistance==100", "geometry": "Point",
                                        "coordinates": "[" * 5000}), 400),
            (http.get(entities, params={"type": "NoiseLevelObserved", "offset": str(2**63)}), 400),
        ]
        for response, expected in cases:
            assert response.status_code == expected, (response.request.url, response.status_code, response.text[:200])
