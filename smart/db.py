"""Database settings and connections of the smart side (role ``sonopolis_smart``, schema ``smart``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

if TYPE_CHECKING:  # keep psycopg out of settings-only imports
    import psycopg
    from psycopg_pool import ConnectionPool


class SmartDbSettings(BaseModel):
    """Connection of the smart services. The role has no privilege on the safe schema."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not a silent default

    dsn: SecretStr | None = Field(
        None,
        description="libpq URI of the smart role, e.g. postgresql://sonopolis_smart@db/sonopolis. "
        "Unset: `sonopolis demo` starts an embedded PostgreSQL; services refuse to start.",
    )
    schema_name: str = Field("smart", pattern=r"^[a-z_][a-z0-9_]*$", description="Schema holding the smart tables")
    pool_min: int = Field(1, ge=1, le=64)
    pool_max: int = Field(8, ge=1, le=256)
    timescale: str = Field(
        "auto",
        pattern=r"^(auto|on|off)$",
        description="Use TimescaleDB features: auto = when the extension is available",
    )
    statement_timeout_ms: int = Field(30_000, ge=100, le=3_600_000)

    def require_dsn(self) -> str:
        if self.dsn is None:
            raise ValueError("smart database DSN is not configured (SONOPOLIS_SMART_DB__DSN)")
        return self.dsn.get_secret_value()

    def connect_kwargs(self) -> dict[str, Any]:
        """libpq options every smart connection uses: search path and statement timeout."""
        return {"options": f"-c search_path={self.schema_name},public -c statement_timeout={self.statement_timeout_ms}"}


def connect(settings: SmartDbSettings, **kwargs: Any) -> "psycopg.Connection":
    """One connection of the smart role (the caller owns and closes it)."""
    import psycopg

    return psycopg.connect(settings.require_dsn(), **{**settings.connect_kwargs(), **kwargs})


def pool(settings: SmartDbSettings, **kwargs: Any) -> "ConnectionPool":
    """A connection pool of the smart role, not yet opened (call ``.open()`` or use ``with``)."""
    from psycopg_pool import ConnectionPool

    return ConnectionPool(
        settings.require_dsn(), min_size=settings.pool_min, max_size=settings.pool_max,
        kwargs=settings.connect_kwargs(), open=False, **kwargs,
    )
