"""The smart path's wire message: one sensor's sound levels over one integration period.

Published by an edge agent on the **smart** broker, once a second, QoS 1, on
``sonopolis/v1/levels/<sensor_id>``. A sensor catching up after an outage publishes a
:class:`LevelBatch` on the same topic. Only anonymous, aggregate quantities are
allowed here: A/C-weighted levels, third-octave levels (nothing finer) and counts of
*non-security* noise sources. The model forbids extra fields so that nothing else
(least of all a security class) can ride along.

The JSON Schema in ``docs/schemas/level-frame-v1.json`` is generated from these
models (``sonopolis schemas``) and checked against them by the tests.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from enum import Enum
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from messages.bands import BAND_KEYS, BAND_POSITION
from messages.times import utc
from messages.topics import SENSOR_ID_PATTERN, sensor_id_after

SCHEMA_ID = "sonopolis.level-frame/1"
BATCH_SCHEMA_ID = "sonopolis.level-batch/1"
TOPIC_PREFIX = "sonopolis/v1/levels"
TOPIC_FILTER = f"{TOPIC_PREFIX}/+"

LEVEL_MIN_DB = 0.0
LEVEL_MAX_DB = 150.0
PEAK_MAX_DB = 180.0
MAX_BATCH_FRAMES = 3600
"""One hour of 1 s frames: a sensor that was cut off longer sends several batches."""

NOISE_SOURCES: tuple[str, ...] = ("car_horn", "siren")
"""The only sound classes whose *counts* may travel on the smart path."""


class SensorStatus(str, Enum):
    """What the sensor says of itself; anything but ``ok`` is kept but flagged."""

    OK = "ok"
    DEGRADED = "degraded"
    CALIBRATING = "calibrating"
    MAINTENANCE = "maintenance"
    FAULT = "fault"


MEASURING_STATUSES: tuple[str, ...] = (SensorStatus.OK.value, SensorStatus.DEGRADED.value)
"""Statuses whose levels measure the street: what every published statistic counts
(aggregates, their coverage, open events); the others are stored and never published.

``degraded`` counts: it marks clipping, a level capped to the wire's range, or non-finite
samples measured as silence (``detectors/meter.py``), all of which can only make the
frame's level *lower* than the street's, and clipping happens when the street is loudest;
leaving those frames out would hide exactly the loudest moments. ``calibrating`` (a
calibrator's 94/114 dB tone), ``maintenance`` (a technician at the sensor) and ``fault``
(e.g. a dead microphone's digital silence) do not measure the street."""


def _finite(v: float) -> float:
    if not math.isfinite(v):
        raise ValueError("level must be a finite number")
    return v


Level = Annotated[float, Field(ge=LEVEL_MIN_DB, le=LEVEL_MAX_DB), AfterValidator(_finite)]
PeakLevel = Annotated[float, Field(ge=LEVEL_MIN_DB, le=PEAK_MAX_DB), AfterValidator(_finite)]
SensorId = Annotated[str, Field(pattern=SENSOR_ID_PATTERN, description="Registered sensor id")]


class SourceCounts(BaseModel):
    """Onsets of non-security noise sources heard during the period (anonymous counts)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    car_horn: int = Field(0, ge=0, le=1000)
    siren: int = Field(0, ge=0, le=1000)


class LevelFrame(BaseModel):
    """One sensor-period of levels (dB re 20 µPa, calibration already applied)."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="Sonopolis level frame v1")

    schema_: Literal["sonopolis.level-frame/1"] = Field(SCHEMA_ID, alias="schema")
    sensor_id: SensorId
    time: datetime = Field(description="UTC start of the integration period (RFC 3339)")
    period_s: float = Field(1.0, gt=0, le=3600, description="Integration period in seconds")
    laeq: Level = Field(description="A-weighted equivalent level over the period, dB")
    lafmax: Level = Field(description="Max A-weighted Fast level, dB")
    lafmin: Level = Field(description="Min A-weighted Fast level, dB")
    lcpeak: PeakLevel = Field(description="C-weighted peak level, dB")
    bands: dict[str, Level] = Field(
        description=(
            "Z-weighted third-octave Leq per nominal centre frequency in Hz "
            "(keys '25' .. '20000'); bands above the sensor's Nyquist are omitted"
        )
    )
    status: SensorStatus = SensorStatus.OK
    sources: SourceCounts = Field(default_factory=SourceCounts)

    @field_validator("time")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        return utc(v, "time")

    @field_validator("bands")
    @classmethod
    def _bands_match(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(v) - set(BAND_POSITION))
        if unknown:
            raise ValueError(f"unknown third-octave band(s) {unknown}; expected keys from {BAND_KEYS[0]} to {BAND_KEYS[-1]}")
        if not v:
            raise ValueError("at least one third-octave band is required")
        positions = sorted(BAND_POSITION[k] for k in v)
        if positions[0] != 0 or positions[-1] != len(positions) - 1:
            raise ValueError("bands must be contiguous from 25 Hz (only bands above Nyquist may be omitted)")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "LevelFrame":
        if self.lafmin > self.lafmax:
            raise ValueError(f"lafmin {self.lafmin} exceeds lafmax {self.lafmax}")
        return self

    def band_array(self) -> list[float | None]:
        """Band levels in wire order, ``None`` where the sensor omitted a band."""
        return [self.bands.get(k) for k in BAND_KEYS]

    def topic(self) -> str:
        return f"{TOPIC_PREFIX}/{self.sensor_id}"

    def check_not_future(self, now: datetime, tolerance: timedelta) -> None:
        """Reject clocks running ahead: such rows would poison aggregates and Lden."""
        if self.time - now > tolerance:
            raise ValueError(f"time {self.time.isoformat()} is more than {tolerance} in the future")


class LevelBatch(BaseModel):
    """Frames of one sensor sent at once, e.g. replayed from the edge queue after an outage."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="Sonopolis level batch v1")

    schema_: Literal["sonopolis.level-batch/1"] = Field(BATCH_SCHEMA_ID, alias="schema")
    sensor_id: SensorId
    frames: list[LevelFrame] = Field(min_length=1, max_length=MAX_BATCH_FRAMES)

    @model_validator(mode="after")
    def _one_sensor(self) -> "LevelBatch":
        others = {f.sensor_id for f in self.frames} - {self.sensor_id}
        if others:
            raise ValueError(f"batch of sensor {self.sensor_id!r} holds frames of {sorted(others)}")
        return self

    def topic(self) -> str:
        return f"{TOPIC_PREFIX}/{self.sensor_id}"


def sensor_from_topic(topic: str) -> str | None:
    """``sonopolis/v1/levels/<id>`` -> ``<id>``; None for any other topic."""
    return sensor_id_after(TOPIC_PREFIX, topic)
