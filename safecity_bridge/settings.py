"""The safe side's own settings tree (``SONOPOLIS_SAFE_<SECTION>__<KEY>``, own TOML file).

Never loaded by a smart process, and it never loads the smart tree. Everything the
bridge needs lives here: the legal declaration that unlocks it, its own broker, its
own database role, its HTTP port, the operators' (hashed) credentials, the camera
registry and the safe-side copy of the sensor positions, the webhook targets and the
retention. A bad value stops the process with the key path (no silent default).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from common.config import SAFE_BROKER_PORT, MqttSettings, SideSettings, with_mqtt_defaults
from safecity_bridge.cameras.config import CameraConfig
from safecity_bridge.cameras.ptz import PtzSettings
from safecity_bridge.journal import SYSTEM

FICTITIOUS_MARK = "FICTITIOUS"


class LegalDeclaration(BaseModel):
    """Without both references the bridge refuses to steer cameras or deliver alerts."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not a silent default

    legal_basis: str | None = Field(None, min_length=8, max_length=500, description="The authorising text (law, decree, prefectoral order)")
    dpia_reference: str | None = Field(None, min_length=3, max_length=200, description="Reference of the data-protection impact assessment")
    declared_by: str | None = Field(None, max_length=200, description="Name/role of the controller's representative")
    fictitious: bool = Field(False, description="True only for the demo's declaration (simulated cameras on loopback only)")

    @field_validator("legal_basis", "dpia_reference", "declared_by", mode="before")
    @classmethod
    def _stripped(cls, v: object) -> object:
        # Blank text is no declaration: "        " once passed the length checks and enabled the safe path.
        if isinstance(v, str):
            v = v.strip()
            return v or None
        return v

    @property
    def complete(self) -> bool:
        return bool(self.legal_basis and self.dpia_reference)

    def missing(self) -> list[str]:
        """Names of the missing items, for the refusal message."""
        out = []
        if not self.legal_basis:
            out.append("declaration.legal_basis (SONOPOLIS_SAFE_DECLARATION__LEGAL_BASIS): the authorising text")
        if not self.dpia_reference:
            out.append("declaration.dpia_reference (SONOPOLIS_SAFE_DECLARATION__DPIA_REFERENCE): the DPIA reference")
        return out


def demo_declaration() -> LegalDeclaration:
    """The demo's declaration: clearly fictitious, journaled as such, loopback cameras only."""
    return LegalDeclaration(
        legal_basis=f"{FICTITIOUS_MARK} DEMO DECLARATION - no legal basis exists; simulated cameras only",
        dpia_reference=f"{FICTITIOUS_MARK}-DPIA-DEMO",
        declared_by="sonopolis demo (not a data controller)",
        fictitious=True,
    )


class SafeDbSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not a silent default
    dsn: SecretStr | None = Field(None, description="libpq URI of the safe role (sonopolis_safe)")
    schema_name: str = Field("safe", pattern=r"^[a-z_][a-z0-9_]*$")
    pool_max: int = Field(4, ge=2, le=32, description="Connections for the console/API (the hot path has its own)")


class OperatorAccount(BaseModel):
    """A control-room account. Only a password hash is configured (``sonopolis bridge --hash-password``)."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not a silent default

    name: str = Field(..., min_length=2, max_length=100, pattern=r"^[\w .'-]+$", description="Login and name journaled with each action")
    password_hash: SecretStr = Field(..., description="argon2id hash (PHC string), never the password")
    role: Literal["operator", "supervisor"] = Field("operator", description="supervisors may also place/release legal holds")

    @field_validator("name")
    @classmethod
    def _not_the_bridge(cls, v: str) -> str:
        # The journal's actor is the operator's name, and the bridge's own actions are "bridge":
        # an account of that name made an operator's action read as an automatic one.
        if v.strip().casefold() == SYSTEM.casefold():
            raise ValueError(f"{SYSTEM!r} is reserved: it names the bridge's own actions in the journal")
        return v

    @field_validator("password_hash")
    @classmethod
    def _is_hash(cls, v: SecretStr) -> SecretStr:
        if not v.get_secret_value().startswith("$argon2"):
            raise ValueError("must be an argon2 hash (see `sonopolis bridge --hash-password`), never a clear password")
        return v


class SensorPosition(BaseModel):
    """Safe-side copy of a sensor's position (the bridge never reads the smart registry)."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not a silent default

    sensor_id: str = Field(..., pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    latitude: float = Field(..., ge=-90, le=90)
    longitude: float = Field(..., ge=-180, le=180)
    altitude_m: float = Field(0.0, ge=-500, le=9000)
    name: str = Field("", max_length=200)


class WebhookTarget(BaseModel):
    """A VMS endpoint receiving each incident, signed with HMAC-SHA256."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not a silent default

    name: str = Field(..., min_length=1, max_length=64)
    url: str = Field(..., pattern=r"^https?://", description="HTTPS in production")
    secret: SecretStr = Field(..., description="Shared HMAC key (env or /run/secrets), 16+ characters")
    format: Literal["json", "onvif"] = Field("json", description="json incident, or the ONVIF-style XML notification")
    timeout_s: float = Field(2.0, gt=0, le=30)
    max_attempts: int = Field(5, ge=1, le=20)

    @field_validator("secret")
    @classmethod
    def _long_enough(cls, v: SecretStr) -> SecretStr:
        if len(v.get_secret_value()) < 16:
            raise ValueError("webhook secret must have at least 16 characters")
        return v


class CorrelationSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not a silent default
    window_s: float = Field(2.0, gt=0, le=30, description="Onsets of one sound at several sensors fall within this window")
    max_sensor_distance_m: float = Field(1500.0, gt=0, le=10_000, description="Sensors farther apart are not the same sound")
    temperature_c: float = Field(15.0, ge=-40, le=50, description="Air temperature for the speed of sound (TDOA)")
    min_sensors_tdoa: int = Field(3, ge=3, le=16)
    reaim_min_shift_m: float = Field(25.0, ge=0, le=1000, description="Re-steer cameras when the estimate moves more than this")


class RateLimitSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not a silent default
    per_sensor_rate_per_s: float = Field(5.0, gt=0, le=1000, description="Sustained events per second per sensor")
    per_sensor_burst: int = Field(20, ge=1, le=10_000)


SAFE_MQTT_DEFAULTS = {"client_id": "sonopolis-bridge", "port": SAFE_BROKER_PORT}


class SafeSettings(SideSettings):
    model_config = SettingsConfigDict(env_prefix="SONOPOLIS_SAFE_", env_nested_delimiter="__", extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _safe_broker_defaults(cls, data: Any) -> Any:
        return with_mqtt_defaults(data, "mqtt", **SAFE_MQTT_DEFAULTS)

    declaration: LegalDeclaration = Field(default_factory=LegalDeclaration)
    mqtt: MqttSettings = Field(default_factory=lambda: MqttSettings(**SAFE_MQTT_DEFAULTS))
    db: SafeDbSettings = Field(default_factory=SafeDbSettings)
    retention_days: int = Field(15, ge=1, le=30, description="Incidents and journal purged after this many days (max 30)")
    purge_interval_s: float = Field(3600.0, ge=1, le=86_400)
    http_host: str = Field("127.0.0.1")
    http_port: int = Field(8443, ge=1, le=65535)
    operators: list[OperatorAccount] = Field(default_factory=list)
    sensors: list[SensorPosition] = Field(default_factory=list)
    cameras: list[CameraConfig] = Field(default_factory=list, description="Camera registry (safe side only)")
    ptz: PtzSettings = Field(default_factory=PtzSettings)
    webhooks: list[WebhookTarget] = Field(default_factory=list)
    correlation: CorrelationSettings = Field(default_factory=CorrelationSettings)
    rate_limit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    feed_queue_size: int = Field(1000, ge=10, le=100_000, description="Per live-feed subscriber; a slow one is dropped, never waited for")
    buffer_max_messages: int = Field(
        100, ge=1, le=65_535,
        description="Security events held in memory between the safe broker and their commit; also the MQTT Receive Maximum "
                    "(hence at most 65 535). When full, the bridge stops reading and the broker keeps the rest queued",
    )
    webhook_queue_size: int = Field(10_000, ge=10, le=1_000_000)
    dedup_memory: int = Field(100_000, ge=100, le=10_000_000, description="Recent event ids kept in memory (the DB key is the truth)")
    steer_max_age_s: float = Field(
        120.0, ge=5, le=3600,
        description="An event older than this when it arrives (a sensor's backlog after an outage) is stored and alerted "
                    "as late, but moves no camera: the sound is long over",
    )

    @field_validator("retention_days", mode="before")
    @classmethod
    def _retention_cap(cls, v: Any) -> Any:
        if isinstance(v, (int, str)) and str(v).strip().lstrip("-").isdigit() and int(v) > 30:
            raise ValueError(f"retention of {int(v)} days refused: at most 30 days (CNIL proportionality)")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "SafeSettings":
        ids = [s.sensor_id for s in self.sensors]
        if len(ids) != len(set(ids)):
            raise ValueError("sensors: duplicate sensor_id")
        names = [o.name for o in self.operators]
        if len(names) != len(set(names)):
            raise ValueError("operators: duplicate name")
        cams = [c.id for c in self.cameras]
        if len(cams) != len(set(cams)):
            raise ValueError("cameras: duplicate id")
        return self
