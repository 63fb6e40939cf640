"""Settings of the open-data API (``sonopolis api``)."""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr


class ApiSettings(BaseModel):
    """Public, read-mostly HTTP service; write/admin routes need ``admin_token``."""

    host: str = Field("127.0.0.1")
    port: int = Field(8080, ge=1, le=65535)
    admin_token: SecretStr | None = Field(None, description="Bearer token for write/admin routes (unset: they are refused)")
    rate_limit_per_minute: int = Field(600, ge=1, le=1_000_000, description="Per client IP on the public read API")
