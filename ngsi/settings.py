"""Settings of the NGSI-LD publisher (``sonopolis ngsi-sync``) and context source."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

Period = Literal["1min", "15min", "1h", "1d"]


class NgsiSettings(BaseModel):
    """Where and how to push ``Device`` / ``NoiseLevelObserved`` entities, and how to serve them."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not a silent default

    broker_url: str | None = Field(None, description="Base URL of the NGSI-LD broker, e.g. http://orion:1026 (unset: sync off)")
    tenant: str | None = Field(None, description="NGSILD-Tenant header")
    token: SecretStr | None = Field(None, description="Bearer token for the broker")
    chunk_size: int = Field(100, ge=1, le=1000, description="Entities per batch upsert")
    timeout_s: float = Field(10.0, gt=0, le=300)
    context_url: str | None = Field(
        None,
        pattern=r"^https?://",
        description="Public URL where the API serves the Sonopolis @context, e.g. "
        "https://bruit.ville.fr/ngsi-ld/contexts/sonopolis.jsonld (the broker must be able to fetch it). "
        "Required by ngsi-sync; the context source falls back to its own URL",
    )
    periods: list[Period] = Field(
        default_factory=lambda: ["15min", "1h", "1d"],
        min_length=1,
        description="Aggregation periods pushed to the broker (1min stays in the context source: too many entities)",
    )
    min_coverage: float = Field(
        0.5, ge=0, le=1, description="Buckets with less coverage are not published (too little data to mean anything)"
    )
    settle_s: int = Field(
        120, ge=0, le=86_400, description="Only buckets ended this long ago are pushed (late frames still land)"
    )
    revisit_hours: float = Field(
        48,
        ge=0,
        le=24 * 31,
        description="Each round, re-examine buckets that ended this long ago or less, behind the cursor, and (re)send "
        "those that now reach min_coverage or whose n_seconds changed since they were sent (late frames). 0: off",
    )
    revisit_max: int = Field(
        20_000, ge=1, le=1_000_000, description="Most buckets re-sent per period and round by the look-back (the rest next round)"
    )
    backfill_days: int = Field(7, ge=0, le=3650, description="First run: how far back to start when no cursor exists")
    interval_s: float = Field(60.0, ge=1, le=3600, description="Pause between sync rounds in loop mode")
    max_attempts: int = Field(5, ge=1, le=50, description="Attempts per batch on retryable failures before giving up this round")
    backoff_initial_s: float = Field(0.5, gt=0, le=60)
    backoff_max_s: float = Field(30.0, gt=0, le=600)
    max_page: int = Field(1000, ge=1, le=10_000, description="Context source: largest `limit` accepted")
    max_instances: int = Field(
        10_000, ge=1, le=1_000_000, description="Context source: most temporal instances per attribute in one response"
    )
    day_documents_keep_days: int = Field(
        35, ge=0, le=3650,
        description="Context source: keep pre-rendered temporal instances of the last N settled UTC days of 1-minute values (0: off)",
    )
    day_documents_interval_s: float = Field(
        300.0, ge=10, le=86_400, description="Context source: pause between two renderings of newly settled days (in the API process)"
    )
    day_documents_settle_s: int = Field(
        900, ge=0, le=86_400, description="A UTC day is rendered once it ended this long ago (late frames arrive first)"
    )
    day_documents_lookback_days: int = Field(
        2, ge=1, le=60, description="Days re-checked each round for recomputed minutes (older stale days fall back to live rendering)"
    )
