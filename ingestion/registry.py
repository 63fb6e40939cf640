"""The sensor registry of the smart side: where each sonometer is, what class it is.

Only sensors in the registry are ingested (frames of an unknown sensor are
quarantined), so registering the city's sensors is the first step of a deployment:
``sonopolis sensors --load sensors.geojson``. The registry holds public facts about
measuring instruments (position, street, class, calibration); it holds no camera,
no alert and no security classification.

Sensor files are GeoJSON (a FeatureCollection of Points, properties = the fields
below) or TOML (``[[sensors]]`` tables with ``latitude``/``longitude``).
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable
from datetime import date
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from ingestion.zones import check_lden_zone, known_zone
from messages.topics import SENSOR_ID_PATTERN

FIELDS: tuple[str, ...] = (
    "sensor_id", "name", "latitude", "longitude", "street", "place",
    "sonometer_class", "installed_on", "calibration_offset_db", "timezone", "active",
)


class RegistryError(Exception):
    """A sensor file or record is invalid; the message names the file/record and the field."""


class Sensor(BaseModel):
    """One registered sonometer (WGS84 position)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sensor_id: str = Field(pattern=SENSOR_ID_PATTERN)
    name: str = Field(min_length=1, max_length=200)
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    street: str | None = Field(None, max_length=200)
    place: str | None = Field(None, max_length=200)
    sonometer_class: int = Field(2, ge=1, le=2, description="IEC 61672 class 1 or 2")
    installed_on: date | None = None
    calibration_offset_db: float = Field(0.0, ge=-30, le=30, description="Offset applied on the sensor; recorded here for audit")
    timezone: str = Field(
        "Europe/Paris",
        description="IANA zone of the local day (daily aggregates, Lden); its UTC offset must be whole hours (ingestion.zones)",
    )
    active: bool = True

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str, info: ValidationInfo) -> str:
        known_zone(v)
        if not (info.context or {}).get("stored"):
            # Lden periods come from UTC-aligned hours: refused at registration. A row
            # already stored is still read back (listing the registry must not fail).
            check_lden_zone(v)
        return v


def upsert(conn: psycopg.Connection, sensors: Iterable[Sensor], *, schema: str = "smart") -> int:
    """Insert or update sensors by id (committed with the caller's transaction); return the count."""
    items = list(sensors)
    if not items:
        return 0
    cols = sql.SQL(", ").join(map(sql.Identifier, FIELDS))
    updates = sql.SQL(", ").join(
        sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(f), sql.Identifier(f)) for f in FIELDS[1:]
    )
    stmt = sql.SQL(
        "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT (sensor_id) DO UPDATE SET {}, updated_at = now()"
    ).format(sql.Identifier(schema, "sensors"), cols, sql.SQL(", ").join(sql.Placeholder() * len(FIELDS)), updates)
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(stmt, [tuple(getattr(s, f) for f in FIELDS) for s in items])
    return len(items)


def list_sensors(conn: psycopg.Connection, *, active_only: bool = False, schema: str = "smart") -> list[Sensor]:
    """All registered sensors, ordered by id."""
    where = sql.SQL(" WHERE active") if active_only else sql.SQL("")
    stmt = sql.SQL("SELECT {} FROM {}{} ORDER BY sensor_id").format(
        sql.SQL(", ").join(map(sql.Identifier, FIELDS)), sql.Identifier(schema, "sensors"), where
    )
    with conn.cursor(row_factory=dict_row) as cur:
        return [Sensor.model_validate(row, context={"stored": True}) for row in cur.execute(stmt)]


def active_ids(conn: psycopg.Connection, *, schema: str = "smart") -> frozenset[str]:
    """Ids of active sensors: the ingestion accepts frames from these only."""
    stmt = sql.SQL("SELECT sensor_id FROM {} WHERE active").format(sql.Identifier(schema, "sensors"))
    return frozenset(r[0] for r in conn.execute(stmt))


def deactivate(conn: psycopg.Connection, sensor_id: str, *, schema: str = "smart") -> bool:
    """Retire a sensor (kept for history; its frames are quarantined from now on)."""
    stmt = sql.SQL("UPDATE {} SET active = false, updated_at = now() WHERE sensor_id = %s").format(sql.Identifier(schema, "sensors"))
    with conn.transaction():
        return conn.execute(stmt, (sensor_id,)).rowcount == 1


# ------------------------------------------------------------------ sensor files


def load_file(path: Path) -> list[Sensor]:
    """Sensors of a ``.geojson``/``.json`` or ``.toml`` file; every bad record is reported."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RegistryError(f"{path}: cannot read sensor file ({exc.strerror})") from exc
    suffix = path.suffix.lower()
    if suffix in (".geojson", ".json"):
        records = _geojson_records(path, text)
    elif suffix == ".toml":
        records = _toml_records(path, text)
    else:
        raise RegistryError(f"{path}: unsupported sensor file type {suffix!r} (use .geojson or .toml)")
    sensors, errors = [], []
    for where, record in records:
        try:
            sensors.append(Sensor(**record))
        except ValidationError as exc:
            for err in exc.errors():
                loc = ".".join(str(p) for p in err["loc"]) or "(record)"
                errors.append(f"{where}: {loc}: {err['msg']}")
        except TypeError as exc:
            errors.append(f"{where}: {exc}")
    seen: dict[str, int] = {}
    for s in sensors:
        seen[s.sensor_id] = seen.get(s.sensor_id, 0) + 1
    errors += [f"sensor_id {sid!r} appears {n} times" for sid, n in seen.items() if n > 1]
    if errors:
        raise RegistryError(f"{path}: {len(errors)} problem(s):\n" + "\n".join(f"  - {e}" for e in errors))
    return sensors


def _geojson_records(path: Path, text: str) -> list[tuple[str, dict[str, Any]]]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RegistryError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection" or not isinstance(doc.get("features"), list):
        raise RegistryError(f"{path}: expected a GeoJSON FeatureCollection")
    out = []
    for i, feature in enumerate(doc["features"]):
        where = f"features[{i}]"
        geometry = feature.get("geometry") if isinstance(feature, dict) else None
        if not isinstance(geometry, dict) or geometry.get("type") != "Point":
            raise RegistryError(f"{path}: {where}: geometry must be a GeoJSON Point")
        coords = geometry.get("coordinates")
        if not isinstance(coords, list) or len(coords) < 2:
            raise RegistryError(f"{path}: {where}: Point needs [longitude, latitude]")
        props = dict(feature.get("properties") or {})
        if "id" in feature and "sensor_id" not in props:
            props["sensor_id"] = feature["id"]
        # GeoJSON order is [longitude, latitude] (RFC 7946).
        props["longitude"], props["latitude"] = coords[0], coords[1]
        out.append((f"{where} ({props.get('sensor_id', '?')})", props))
    return out


def _toml_records(path: Path, text: str) -> list[tuple[str, dict[str, Any]]]:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RegistryError(f"{path}: not valid TOML ({exc})") from exc
    sensors = doc.get("sensors")
    if not isinstance(sensors, list):
        raise RegistryError(f"{path}: expected [[sensors]] tables")
    return [(f"sensors[{i}] ({s.get('sensor_id', '?')})", dict(s)) for i, s in enumerate(sensors)]
