"""Settings of the ingestion service (``sonopolis ingest``)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from common.config import MqttSettings


class IngestSettings(BaseModel):
    """MQTT consumption, validation limits, write batching and buffering."""

    mqtt: MqttSettings = Field(default_factory=lambda: MqttSettings(client_id="sonopolis-ingest"))
    batch_max_rows: int = Field(5000, ge=1, le=200_000, description="Flush when this many rows are buffered")
    batch_max_delay_s: float = Field(0.2, gt=0, le=10, description="Flush at least this often")
    buffer_max_messages: int = Field(50_000, ge=100, le=5_000_000, description="Back-pressure threshold (bounded memory)")
    future_tolerance_s: float = Field(120, ge=0, le=86_400, description="Frames further in the future are quarantined")
    quarantine_payload_max_bytes: int = Field(16_384, ge=256, le=1_048_576, description="Raw payload kept in quarantine is cut here")
    metrics_port: int = Field(9108, ge=0, le=65535, description="Prometheus /metrics port (0 = off)")
    local_timezone: str = Field("Europe/Paris", description="Zone for day/evening/night (Lden) and daily aggregates")
