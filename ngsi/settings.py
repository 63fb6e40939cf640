"""Settings of the NGSI-LD publisher (``sonopolis ngsi-sync``)."""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr


class NgsiSettings(BaseModel):
    """Where and how to push ``Device`` / ``NoiseLevelObserved`` entities."""

    broker_url: str | None = Field(None, description="Base URL of the NGSI-LD broker, e.g. http://orion:1026 (unset: sync off)")
    tenant: str | None = Field(None, description="NGSILD-Tenant header")
    token: SecretStr | None = Field(None, description="Bearer token for the broker")
    chunk_size: int = Field(100, ge=1, le=1000, description="Entities per batch upsert")
    timeout_s: float = Field(10.0, gt=0, le=300)
