"""Builders of realistic level frames and registered sensors for the ingestion tests."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg

from ingestion import registry
from ingestion.schema import migrate
from messages.bands import BAND_KEYS

T0 = datetime(2026, 11, 23, 10, 0, 0, tzinfo=timezone.utc)


def frame_dict(sensor_id: str, t: datetime, laeq: float, *, bands: dict[str, float] | None = None, horns: int = 0) -> dict[str, Any]:
    """A valid frame as it travels on the wire (JSON-ready dict)."""
    return {
        "schema": "sonopolis.level-frame/1",
        "sensor_id": sensor_id,
        "time": t.isoformat().replace("+00:00", "Z"),
        "period_s": 1.0,
        "laeq": laeq,
        "lafmax": laeq + 3.0,
        "lafmin": max(0.0, laeq - 4.0),
        "lcpeak": laeq + 15.0,
        "bands": bands if bands is not None else {k: round(laeq - 10 + (i % 5), 2) for i, k in enumerate(BAND_KEYS)},
        "status": "ok",
        "sources": {"car_horn": horns, "siren": 0},
    }


def payload(d: dict[str, Any]) -> bytes:
    return json.dumps(d).encode()


def sensor(sensor_id: str, **kw: Any) -> registry.Sensor:
    base = {"sensor_id": sensor_id, "name": f"Capteur {sensor_id}", "latitude": 48.8566, "longitude": 2.3522, "street": "Rue de Rivoli"}
    base.update(kw)
    return registry.Sensor(**base)


def ready_db(dsn: str, sensor_ids: list[str] = ["s1", "s2"]) -> psycopg.Connection:  # noqa: B006 - read only
    """A smart-role connection to a migrated schema with ``sensor_ids`` registered."""
    conn = psycopg.connect(dsn)
    migrate(conn)
    registry.upsert(conn, [sensor(s) for s in sensor_ids])
    conn.commit()
    return conn


def seconds(start: datetime, n: int) -> list[datetime]:
    return [start + timedelta(seconds=i) for i in range(n)]
