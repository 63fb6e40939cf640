"""The safe side's own settings tree (``SONOPOLIS_SAFE_<SECTION>__<KEY>``, own TOML file).

Never loaded by a smart process, and it never loads the smart tree.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from common.config import MqttSettings, SideSettings


class LegalDeclaration(BaseModel):
    """Without both references the bridge refuses to steer cameras or deliver alerts."""

    legal_basis: str | None = Field(None, min_length=8, max_length=500, description="The authorising text (law, decree, prefectoral order)")
    dpia_reference: str | None = Field(None, min_length=3, max_length=200, description="Reference of the data-protection impact assessment")
    declared_by: str | None = Field(None, max_length=200, description="Name/role of the controller's representative")

    @property
    def complete(self) -> bool:
        return bool(self.legal_basis and self.dpia_reference)


class SafeDbSettings(BaseModel):
    dsn: SecretStr | None = Field(None, description="libpq URI of the safe role (sonopolis_safe)")
    schema_name: str = Field("safe", pattern=r"^[a-z_][a-z0-9_]*$")


class SafeSettings(SideSettings):
    model_config = SettingsConfigDict(env_prefix="SONOPOLIS_SAFE_", env_nested_delimiter="__", extra="forbid")

    declaration: LegalDeclaration = Field(default_factory=LegalDeclaration)
    mqtt: MqttSettings = Field(default_factory=lambda: MqttSettings(client_id="sonopolis-bridge", port=1884))
    db: SafeDbSettings = Field(default_factory=SafeDbSettings)
    retention_days: int = Field(15, ge=1, le=30, description="Incidents and journal purged after this many days (max 30)")
    http_host: str = Field("127.0.0.1")
    http_port: int = Field(8443, ge=1, le=65535)
