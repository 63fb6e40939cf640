"""Settings of the ingestion service (``sonopolis ingest``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from common.config import MqttSettings, with_mqtt_defaults
from ingestion.zones import check_lden_zone, known_zone


INGEST_MQTT_DEFAULTS = {"client_id": "sonopolis-ingest"}


class IngestSettings(BaseModel):
    """MQTT consumption, validation limits, write batching and buffering."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not a silent default

    mqtt: MqttSettings = Field(default_factory=lambda: MqttSettings(**INGEST_MQTT_DEFAULTS))

    @model_validator(mode="before")
    @classmethod
    def _broker_defaults(cls, data: Any) -> Any:
        return with_mqtt_defaults(data, "mqtt", **INGEST_MQTT_DEFAULTS)
    batch_max_rows: int = Field(5000, ge=1, le=200_000, description="Flush when this many rows are buffered")
    batch_max_delay_s: float = Field(0.2, gt=0, le=10, description="Flush at least this often")
    buffer_max_messages: int = Field(50_000, ge=100, le=5_000_000, description="Back-pressure threshold (bounded memory)")
    future_tolerance_s: float = Field(120, ge=0, le=86_400, description="Frames further in the future are quarantined")
    quarantine_payload_max_bytes: int = Field(16_384, ge=256, le=1_048_576, description="Raw payload kept in quarantine is cut here")
    metrics_port: int = Field(9108, ge=0, le=65535, description="Prometheus /metrics port (0 = off)")
    local_timezone: str = Field(
        "Europe/Paris",
        description="Zone for day/evening/night (Lden) and daily aggregates of sensors without one; UTC offset in whole hours",
    )
    session_expiry_s: int = Field(
        7 * 86_400, ge=60, le=4_294_967_295,
        description="How long the broker keeps our session (subscription + unacked messages) while ingest is down",
    )
    aggregate_refresh_s: float = Field(5.0, gt=0, le=3600, description="Refresh of the 1 min / 15 min / 1 h aggregates (plain path)")
    daily_refresh_s: float = Field(300.0, gt=0, le=86_400, description="Refresh of the daily aggregates and Lden (plain path; recomputes whole local days)")
    partitions_ahead_days: int = Field(3, ge=1, le=60, description="Daily partitions created ahead of time (plain path)")
    raw_retention_days: int = Field(0, ge=0, le=36_500, description="Refuse frames older than this and drop raw 1 s partitions a UTC day later (plain path; 0 = keep)")
    quarantine_retention_days: int = Field(30, ge=1, le=3650, description="Quarantined payloads are purged after this")
    registry_refresh_s: float = Field(30.0, gt=0, le=3600, description="Re-read the sensor registry this often (and on an unknown sensor, at most every 2 s)")

    @field_validator("local_timezone")
    @classmethod
    def _lden_zone(cls, v: str) -> str:
        return check_lden_zone(known_zone(v))  # the Lden periods come from UTC-aligned hours (ingestion.zones)
