"""Populate the contract tables (docs/CONTRACTS.md) directly after ``ingestion.schema.migrate``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date, datetime, timedelta

import httpx
import psycopg
from fastapi import FastAPI
from psycopg_pool import AsyncConnectionPool

from ingestion.schema import migrate as migrate_ingestion
from messages.bands import N_BANDS
from ngsi.context_source import build_router
from ngsi.schema import migrate as migrate_ngsi
from ngsi.settings import NgsiSettings

SENSORS = [
    # id, name, lat, lon, class
    ("se-jacquard", "Place Jacquard", 45.4397, 4.3872, 1),
    ("se-chavanelle", "Place Chavanelle", 45.4355, 4.3925, 2),
    ("lyon-bellecour", "Place Bellecour", 45.7578, 4.8320, 1),
]


def migrate(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        migrate_ingestion(conn, timescale="off")
        migrate_ngsi(conn)


def add_sensors(conn: psycopg.Connection, sensors: list[tuple] = SENSORS) -> None:
    for sid, name, lat, lon, klass in sensors:
        conn.execute(
            "INSERT INTO smart.sensors (sensor_id, name, latitude, longitude, street, place, sonometer_class, installed_on)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (sid, name, lat, lon, name, "Saint-Étienne" if sid.startswith("se-") else "Lyon", klass, date(2024, 1, 15)),
        )


def level(sensor_index: int, k: int) -> float:
    """Deterministic, distinct LAeq per sensor and bucket: 50..79.x dB."""
    return 50.0 + (sensor_index * 7 + k * 3) % 30 + 0.25


def add_aggregates(conn: psycopg.Connection, table: str, start: datetime, step: timedelta, n: int,
                   sensors: list[tuple] = SENSORS, coverage: float = 0.97) -> None:
    """``n`` buckets per sensor from ``start``; laeq from :func:`level`."""
    rows = []
    for si, (sid, *_rest) in enumerate(sensors):
        for k in range(n):
            laeq = level(si, k)
            bands = [laeq - 20 + b * 0.3 for b in range(N_BANDS)]
            rows.append((sid, start + k * step, laeq, laeq + 12, laeq - 9, laeq + 3, laeq - 1, laeq - 6, bands,
                         coverage, int(step.total_seconds() * coverage), k % 4, 0))
    with conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO smart.{table} (sensor_id, bucket, laeq, lamax, lamin, la10, la50, la90, bands, coverage,"  # noqa: S608 - fixed names
            " n_seconds, car_horn, siren) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            rows,
        )


def add_lden(conn: psycopg.Connection, day: date, sensors: list[tuple] = SENSORS) -> None:
    for si, (sid, *_rest) in enumerate(sensors):
        conn.execute(
            "INSERT INTO smart.lden_daily (sensor_id, day, lden, lday, levening, lnight, coverage) VALUES (%s, %s, %s, %s, %s, %s, 0.99)",
            (sid, day, 65.0 + si, 62.0 + si, 60.0 + si, 54.0 + si),
        )


@asynccontextmanager
async def context_source(dsn: str, *, max_page: int = 100) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the context-source routes served over ``dsn`` (in process, real database)."""
    async with AsyncConnectionPool(dsn, min_size=1, max_size=2, open=False) as pool:
        app = FastAPI()
        app.include_router(build_router(pool, settings=NgsiSettings(max_page=max_page, max_instances=max_page)))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sonopolis.test",
                                     timeout=httpx.Timeout(10.0)) as client:
            yield client
