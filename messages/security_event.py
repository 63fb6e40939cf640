"""The safe path's wire message: one security sound event heard by one sensor.

Published by an edge agent on the **safe** broker only (its own connection and
credentials), QoS 1, on ``sonopolis-safe/v1/events/<sensor_id>``. It carries no audio
and no spectrum: the class, the classifier's confidence, the onset time to the
millisecond (for TDOA localisation across sensors) and the peak level.
"""

from __future__ import annotations

import math
import uuid
from datetime import datetime
from enum import Enum
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from messages.times import utc
from messages.topics import SENSOR_ID_PATTERN, sensor_id_after

SCHEMA_ID = "sonopolis.security-event/1"
TOPIC_PREFIX = "sonopolis-safe/v1/events"
TOPIC_FILTER = f"{TOPIC_PREFIX}/+"


class SecurityClass(str, Enum):
    """Sound classes that may only ever travel on the safe path."""

    GUNSHOT = "gunshot"
    GLASS_BREAK = "glass_break"
    CRASH = "crash"
    SPRAY_CAN = "spray_can"
    SCREAM = "scream"
    EXPLOSION = "explosion"


SECURITY_CLASSES: tuple[str, ...] = tuple(c.value for c in SecurityClass)


def _finite(v: float) -> float:
    if not math.isfinite(v):
        raise ValueError("must be a finite number")
    return v


class SecurityEvent(BaseModel):
    """A detection, not a judgement: an operator qualifies it in the control room."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="Sonopolis security event v1")

    schema_: Literal["sonopolis.security-event/1"] = Field(SCHEMA_ID, alias="schema")
    event_id: uuid.UUID = Field(default_factory=uuid.uuid4, description="Unique per detection; re-sends keep it")
    sensor_id: Annotated[str, Field(pattern=SENSOR_ID_PATTERN)]
    event_class: SecurityClass = Field(alias="class")
    confidence: Annotated[float, Field(ge=0.0, le=1.0), AfterValidator(_finite)]
    onset: datetime = Field(description="UTC onset time, millisecond resolution")
    level_db: Annotated[float, Field(ge=0.0, le=180.0), AfterValidator(_finite)] = Field(
        description="LAFmax (or LCpeak for impulses) around the onset, dB"
    )
    duration_ms: int = Field(0, ge=0, le=60_000)
    model: str = Field("", max_length=64, pattern=r"^[\x20-\x7e]*$", description="Classifier model id that produced it (printable ASCII)")

    @field_validator("onset")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        return utc(v, "onset")

    def topic(self) -> str:
        return f"{TOPIC_PREFIX}/{self.sensor_id}"

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True)


def sensor_from_topic(topic: str) -> str | None:
    """``sonopolis-safe/v1/events/<id>`` -> ``<id>``; None for any other topic."""
    return sensor_id_after(TOPIC_PREFIX, topic)
