"""Settings of an edge agent (``sonopolis edge``): one tree, two separate broker connections.

``SONOPOLIS_EDGE_<SECTION>__<KEY>``. The smart and safe brokers have distinct hosts,
client ids and credentials; the safe connection is optional (off = no events leave).
"""

from __future__ import annotations

from pathlib import Path

from typing import Any

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from common.config import SAFE_BROKER_PORT, MqttSettings, SideSettings, with_mqtt_defaults


SMART_MQTT_DEFAULTS = {"client_id": "sonopolis-edge-smart"}


class EdgeSettings(SideSettings):
    model_config = SettingsConfigDict(env_prefix="SONOPOLIS_EDGE_", env_nested_delimiter="__", extra="forbid")

    sensor_id: str = Field("sensor-01", pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    calibration_offset_db: float = Field(0.0, ge=-60, le=200, description="dB added to dBFS-derived levels (from `sonopolis calibrate`)")
    smart_mqtt: MqttSettings = Field(default_factory=lambda: MqttSettings(**SMART_MQTT_DEFAULTS))
    safe_mqtt: MqttSettings | None = Field(None, description="Safe broker (port 1884 unless given); unset = security events are never sent")

    @model_validator(mode="before")
    @classmethod
    def _broker_defaults(cls, data: Any) -> Any:
        # A safe section given without its port must not default to the smart broker's 1883.
        data = with_mqtt_defaults(data, "smart_mqtt", **SMART_MQTT_DEFAULTS)
        return with_mqtt_defaults(data, "safe_mqtt", port=SAFE_BROKER_PORT)
    queue_dir: Path = Field(Path("/var/lib/sonopolis/edge-queue"), description="Bounded on-disk queue of *messages* (never audio)")
    queue_max_messages: int = Field(100_000, ge=100, le=10_000_000, description="Per channel (smart, safe): its oldest messages are dropped (and counted) beyond this")
    model_path: Path | None = Field(None, description="ONNX sound-event model; unset = the model shipped in detectors/model")
    classifier_enabled: bool = Field(True, description="Off = levels only (no detections, no events, no source counts)")
    drain_timeout_s: float = Field(10.0, ge=0, le=600, description="At end of a file/stdin stream, how long to wait for the brokers to take the queue")
