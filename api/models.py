"""The open API's schemas: the single source of its JSON, its CSV columns and its OpenAPI.

Rows come straight from the smart aggregate relations (``docs/CONTRACTS.md``); the
models add units and descriptions so the OpenAPI document explains what a value is.
"""

from __future__ import annotations

import datetime as dt
from enum import Enum
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AfterValidator, AnyHttpUrl, BaseModel, ConfigDict, Field

from api import precision
from api.precision import LEVEL_RULE, RATIO_RULE


def _utc(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.UTC) if value.tzinfo is not None else value


UtcDatetime = Annotated[dt.datetime, AfterValidator(_utc)]
"""An instant as the API writes it: in UTC ('Z'). psycopg returns timestamptz in the session's
TimeZone, which initdb takes from the host: on a server set to Europe/Paris every time
came out as '+01:00'/'+02:00' although the docs and the published files say UTC."""


Level = Annotated[float, AfterValidator(precision.level)]
"""A level in dB as the data routes write it, JSON and CSV alike: 0.01 dB, as the published files
(``api.precision``). The float4 aggregates came out as ``61.254997``."""

Ratio = Annotated[float, AfterValidator(precision.ratio)]
"""A share in 0..1 as the data routes write it: 4 decimals (``0.93333334`` came out before)."""


class Period(str, Enum):
    """Aggregation period of a level series; each maps to one relation."""

    min1 = "1min"
    min15 = "15min"
    h1 = "1h"
    d1 = "1d"


PERIOD_RELATION: dict[Period, str] = {
    Period.min1: "levels_1min",
    Period.min15: "levels_15min",
    Period.h1: "levels_1h",
    Period.d1: "levels_1d",
}


class PointGeometry(BaseModel):
    type: Literal["Point"] = "Point"
    coordinates: tuple[float, float] = Field(..., description="[longitude, latitude] (WGS84, GeoJSON order)")


class SensorProperties(BaseModel):
    sensor_id: str = Field(..., examples=["SE-042"])
    name: str = Field(..., examples=["Place Jean-Jaurès"])
    street: str | None = None
    place: str | None = None
    sonometer_class: int | None = Field(None, ge=1, le=2, description="IEC 61672 class of the sound level meter")
    installed_on: dt.date | None = None
    timezone: str = Field("Europe/Paris")
    active: bool = True
    measures: list[str] = Field(
        default_factory=lambda: ["LAeq", "LAFmax", "LAFmin", "LA10", "LA50", "LA90", "third-octave bands", "counts of car horns and sirens"],
        description="Aggregate acoustic indicators only: the sensor never records, stores or transmits audio",
    )


class SensorFeature(BaseModel):
    """One sensor as a GeoJSON Feature."""

    type: Literal["Feature"] = "Feature"
    id: str
    geometry: PointGeometry
    properties: SensorProperties


class SensorCollection(BaseModel):
    type: Literal["FeatureCollection"] = "FeatureCollection"
    features: list[SensorFeature]


class LevelRow(BaseModel):
    """Levels of one sensor over one bucket (dB(A) re 20 µPa)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "sensor_id": "SE-042", "bucket": "2025-06-01T10:00:00+00:00", "period": "1h", "laeq": 62.3, "lamax": 81.0,
        "lamin": 48.2, "la10": 66.1, "la50": 60.4, "la90": 52.7, "coverage": 0.998, "n_seconds": 3593,
        "car_horn": 4, "siren": 0}]})

    sensor_id: str
    bucket: UtcDatetime = Field(..., description="Start of the bucket (1d: local midnight of the sensor's zone)")
    period: Period
    laeq: Level | None = Field(None, description=f"Energetic mean A-weighted level, dB(A), {LEVEL_RULE}")
    lamax: Level | None = Field(None, description=f"Highest 1 s LAFmax, dB(A), {LEVEL_RULE}")
    lamin: Level | None = Field(None, description=f"Lowest 1 s LAFmin, dB(A), {LEVEL_RULE}")
    la10: Level | None = Field(None, description=f"Level exceeded 10 % of the time, dB(A), {LEVEL_RULE}")
    la50: Level | None = Field(None, description=f"Median level, dB(A), {LEVEL_RULE}")
    la90: Level | None = Field(None, description=f"Background level exceeded 90 % of the time, dB(A), {LEVEL_RULE}")
    coverage: Ratio | None = Field(None, ge=0, le=1, description=f"Seconds measured / seconds in the bucket, {RATIO_RULE}")
    n_seconds: int | None = None
    car_horn: int | None = Field(None, description="Car horns counted in the bucket")
    siren: int | None = Field(None, description="Sirens counted in the bucket")
    bands: dict[str, Level] | None = Field(None, description=f"Third-octave band levels keyed by nominal centre (Hz), dB, {LEVEL_RULE}")


# The period hours are set in ingestion/aggregates.py (_lden_statement, plain PostgreSQL) and
# ingestion/aggsql.py (lden_daily view, TimescaleDB).
class LdenRow(BaseModel):
    """Daily noise indicators of Directive 2002/49/EC with the periods of its French transposition
    (arrêté du 4 avril 2006): day 06-18 h, evening 18-22 h, night 22-06 h local, not the
    Directive's default 07-19 h / 19-23 h / 23-07 h."""

    sensor_id: str
    day: dt.date
    lden: Level | None = Field(None, description=f"Day-evening-night level, dB(A), {LEVEL_RULE}")
    lday: Level | None = Field(None, description=f"Day level 06:00-18:00 local, dB(A), {LEVEL_RULE}")
    levening: Level | None = Field(None, description=f"Evening level 18:00-22:00 local, dB(A), {LEVEL_RULE}")
    lnight: Level | None = Field(None, description=f"Night level 22:00-06:00 local, dB(A), {LEVEL_RULE}")
    coverage: Ratio | None = Field(None, ge=0, le=1, description=f"Share of the day measured, {RATIO_RULE}")


class SourceCountRow(BaseModel):
    """Non-security noise sources counted per hour (no security class is ever counted here)."""

    sensor_id: str
    hour: UtcDatetime
    car_horn: int
    siren: int


class Page(BaseModel):
    """A page of rows; follow ``next`` (also in the ``Link`` header) for the rest."""

    items: list[Any]
    count: int
    next: str | None = Field(None, description="URL of the next page, absent on the last one")


class LevelPage(Page):
    items: list[LevelRow]


class LdenPage(Page):
    items: list[LdenRow]


class SourceCountPage(Page):
    items: list[SourceCountRow]


class LatestLevel(BaseModel):
    sensor_id: str
    bucket: UtcDatetime
    laeq: Level | None = Field(..., description=f"1-minute LAeq, dB(A), {LEVEL_RULE}")


OpenEventType = Literal["noise_threshold_exceeded", "sensor_silent"]
"""The only event types of the open API: public noise information, never a security class."""


class OpenEvent(BaseModel):
    """One open noise event; published once and never changed afterwards (see ``api/events.py``)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": 17, "event_type": "noise_threshold_exceeded", "sensor_id": "SE-042",
        "started_at": "2025-06-01T22:15:00+00:00", "value": 78.4, "threshold": 75.0, "coverage": 0.997}]})

    id: int = Field(..., description="Increasing; resume after it (`after`, `Last-Event-ID`)")
    event_type: OpenEventType
    sensor_id: str
    started_at: UtcDatetime = Field(
        ..., description="noise_threshold_exceeded: start of the aligned 5 min window (UTC, multiple of 5 min); "
        "sensor_silent: time of the sensor's last frame")
    value: float | None = Field(
        None, description="noise_threshold_exceeded: LAeq,5min in dB(A), 0.1 dB, the energetic mean of the window's "
        "frames weighted by their duration (`period_s`), over frames lying wholly inside the window whose status "
        "is `ok` or `degraded` (`calibrating`, `maintenance` and `fault` frames are not measurements of the street); "
        "judged once the window has ended and a settle delay (default 2 min) has passed, and never changed after. "
        "sensor_silent: minutes without data")
    threshold: float | None = Field(None, description="The threshold in force: dB(A) for noise_threshold_exceeded, "
                                    "minutes for sensor_silent")
    coverage: float | None = Field(
        None, ge=0, le=1,
        description="noise_threshold_exceeded: share of the 5 min window measured by the frames behind `value` "
        "(an event needs at least the city's minimum, default 0.9); null for sensor_silent and for events stored "
        "before coverage was recorded")


class WebhookCreate(BaseModel):
    url: AnyHttpUrl = Field(..., examples=["https://hooks.example.org/sonopolis"])
    event_types: list[OpenEventType] = Field(default_factory=lambda: ["noise_threshold_exceeded", "sensor_silent"], min_length=1)
    description: str | None = Field(None, max_length=200, pattern=r"^[^\x00-\x08\x0b\x0c\x0e-\x1f]*$",
                                    description="Free text, no control characters (a NUL reached PostgreSQL: a 500)")


class Webhook(BaseModel):
    id: UUID
    url: str
    event_types: list[str]
    description: str | None = None
    active: bool
    created_at: UtcDatetime


class WebhookCreated(Webhook):
    secret: str = Field(..., description="HMAC-SHA256 key, shown once: verify `X-Sonopolis-Signature: t=<unix>,v1=<hex>` over `<t>.<body>`")


class ExportRun(BaseModel):
    id: int
    day: dt.date
    dataset: str
    status: Literal["published", "rejected"]
    rows: int
    started_at: UtcDatetime
    report: dict[str, Any]
    file_path: str | None = None
