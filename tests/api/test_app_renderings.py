"""The API process keeps the NGSI-LD day renderings: ``sonopolis api``'s migration creates their
table, and the app's lifespan renders yesterday's settled minutes on start-up (real PostgreSQL)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from api.app import create_app
from api.cli import _migrate
from ingestion.schema import migrate as migrate_ingestion
from ngsi.settings import NgsiSettings
from sonopolis.bootstrap import RoleDsns
from tests.api.conftest import make_settings
from tests.ngsi import seed

pytestmark = pytest.mark.anyio


async def test_lifespan_renders_settled_days(db: RoleDsns, tmp_path: Path) -> None:
    with psycopg.connect(db.smart, autocommit=True) as conn:
        migrate_ingestion(conn, timescale="off")
    _migrate(db.smart, "smart")  # as `sonopolis api` starts: its tables and the NGSI-LD ones
    yesterday = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0) - dt.timedelta(days=1)
    with psycopg.connect(db.smart) as conn:
        seed.add_sensors(conn)
        seed.add_aggregates(conn, "levels_1min", yesterday, dt.timedelta(minutes=1), 1440, sensors=seed.SENSORS[:2])
    ngsi = NgsiSettings(day_documents_settle_s=0, day_documents_interval_s=3600)
    async with AsyncConnectionPool(db.smart, min_size=1, max_size=2, kwargs={"autocommit": True}, open=False) as pool:
        app = create_app(make_settings(tmp_path), pool, ngsi_settings=ngsi)
        async with app.router.lifespan_context(app):
            deadline = time.monotonic() + 30
            while True:
                async with pool.connection() as conn:
                    cur = await conn.execute("SELECT count(DISTINCT sensor_id) FROM smart.ngsi_temporal_days WHERE day = %s",
                                             (yesterday.date(),))
                    (n,) = await cur.fetchone()  # type: ignore[misc]
                if n == 2 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
    assert n == 2, "the API's rendering loop did not render yesterday's minutes of both sensors"
