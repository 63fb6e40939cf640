"""Times leave the API in UTC ('Z') whatever the database server's TimeZone.

initdb writes the host's zone into postgresql.conf, so a French city's server runs its
sessions in Europe/Paris; psycopg then returns timestamptz in that zone and the API
wrote '+01:00' / '+02:00', although the docs and the published files say UTC.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import AsyncIterator

import httpx
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from api.app import create_app
from api.settings import ApiSettings

pytestmark = pytest.mark.anyio


@pytest.fixture
async def paris_client(settings: ApiSettings, recent_dsn: str) -> AsyncIterator[httpx.AsyncClient]:
    with psycopg.connect(recent_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO smart.api_events (event_type, sensor_id, started_at, value, threshold)"
                     " VALUES ('sensor_silent', 'se-jacquard', '2026-07-01T10:00:00+00', 12.0, 10)")
    async with AsyncConnectionPool(recent_dsn, min_size=1, max_size=2, open=False,
                                   kwargs={"autocommit": True, "options": "-c TimeZone=Europe/Paris"}) as pool:
        app = create_app(settings, pool)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
            yield c


async def test_times_are_utc_under_a_paris_database(paris_client: httpx.AsyncClient) -> None:
    levels = (await paris_client.get("/v1/levels", params={"period": "1h", "limit": 3})).json()["items"]
    assert levels and all(r["bucket"].endswith("Z") for r in levels), [r["bucket"] for r in levels]
    rows = list(csv.DictReader(io.StringIO((await paris_client.get("/v1/levels", params={"period": "1d", "format": "csv"})).text)))
    assert rows and all(dt.datetime.fromisoformat(r["bucket"]).utcoffset() == dt.timedelta(0) for r in rows), rows[0]["bucket"]
    hours = (await paris_client.get("/v1/sources/hourly", params={"limit": 3})).json()["items"]
    assert hours and all(r["hour"].endswith("Z") for r in hours)
    latest = (await paris_client.get("/v1/latest")).json()
    assert latest and all(r["bucket"].endswith("Z") for r in latest)
    events = (await paris_client.get("/v1/events")).json()
    assert [e["started_at"] for e in events] == ["2026-07-01T10:00:00Z"]
