"""Loading one side's settings: environment, optional TOML file, secret files.

Each process loads exactly one settings tree at start-up (``SmartSettings``,
``SafeSettings`` or ``EdgeSettings``) and passes sub-models down. A configuration
error stops the process with every bad key path and its message, instead of a
default silently standing in for a typo.
"""

from __future__ import annotations

import logging
import os
import tomllib
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, NestedSecretsSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

S = TypeVar("S", bound=BaseSettings)

SECRETS_DIR = Path("/run/secrets")


class ConfigError(Exception):
    """Invalid configuration; ``str()`` lists each key path with its problem."""

    def __init__(self, source: str, errors: list[str]):
        self.source = source
        self.errors = errors
        super().__init__(f"invalid configuration ({source}):\n" + "\n".join(f"  - {e}" for e in errors))


def format_validation_error(exc: ValidationError, env_prefix: str) -> list[str]:
    """One line per error: ``db.dsn (SONOPOLIS_SMART_DB__DSN): field required``."""
    lines = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"])
        env = env_prefix + "__".join(str(p) for p in err["loc"]).upper()
        lines.append(f"{path} ({env}): {err['msg']}")
    return lines


class _TomlSource(PydanticBaseSettingsSource):
    """A TOML file given explicitly (CLI ``--config`` or ``<PREFIX>CONFIG_FILE``)."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None):
        super().__init__(settings_cls)
        self._data: dict[str, Any] = {}
        if path is not None:
            try:
                self._data = tomllib.loads(path.read_text(encoding="utf-8"))
            except FileNotFoundError as exc:
                raise ConfigError(str(path), ["configuration file not found"]) from exc
            except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:  # was a traceback
                raise ConfigError(str(path), [f"cannot read the configuration file: {exc.__class__.__name__}: {exc}"]) from exc
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(str(path), [f"not valid TOML: {exc}"]) from exc

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover - unused
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


class SideSettings(BaseSettings):
    """Base of the per-side settings trees: env > TOML file > defaults.

    Secrets (``SecretStr`` fields) can also come from files in ``/run/secrets`` named
    after the env variable (Docker/Compose secrets), so they never sit in a compose file.
    """

    model_config = SettingsConfigDict(
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
        case_sensitive=False,
    )

    _toml_path: ClassVar[Path | None] = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Nested: /run/secrets/sonopolis_smart_db__dsn fills db.dsn, like the env variable.
        secrets = NestedSecretsSettingsSource(file_secret_settings, secrets_dir_missing="ok")
        return (init_settings, env_settings, secrets, _TomlSource(settings_cls, cls._toml_path))


def load_settings(cls: type[S], config_file: Path | str | None = None, **overrides: Any) -> S:
    """Build and validate ``cls`` once; raise :class:`ConfigError` with every problem.

    ``config_file`` falls back to the ``<PREFIX>CONFIG_FILE`` environment variable.
    """
    prefix = cls.model_config.get("env_prefix", "")
    if config_file is None:
        config_file = os.environ.get(f"{prefix}CONFIG_FILE") or None
    path = Path(config_file) if config_file else None
    secrets_dir = SECRETS_DIR if SECRETS_DIR.is_dir() else None
    bound = type(cls.__name__, (cls,), {"_toml_path": path, "model_config": {**cls.model_config, "secrets_dir": secrets_dir}})
    try:
        settings = bound(**overrides)
    except ValidationError as exc:
        raise ConfigError(str(path) if path else "environment", format_validation_error(exc, prefix)) from exc
    except SettingsError as exc:
        # pydantic-settings decodes a list or table variable as JSON before validating it,
        # and says only which top-level section failed; say how to write it.
        raise ConfigError("environment or secrets", [
            f"{exc} ({exc.__cause__}): a {prefix}* variable (or its secret file) holding a list or a table must be JSON, "
            'e.g. \'["172.30.20.10"]\' or \'{"key": 1}\'']) from exc
    return settings  # type: ignore[return-value]


SAFE_BROKER_PORT = 1884
"""The safe broker's default port (the smart broker keeps MQTT's 1883): bridge and edge agents share it."""


def with_mqtt_defaults(data: Any, field: str, **defaults: Any) -> Any:
    """Fill ``defaults`` into a partly given ``data[field]`` broker section (a ``mode="before"`` validator's body).

    A ``default_factory`` holds a side's broker defaults only while the section is absent:
    setting one key (``SONOPOLIS_SAFE_MQTT__CLIENT_ID``) built the section from the shared
    model's defaults instead, and the safe side's port became the smart broker's 1883.
    """
    if isinstance(data, dict) and isinstance(data.get(field), dict):
        data = {**data, field: {**defaults, **data[field]}}
    return data


class MqttSettings(BaseModel):
    """One broker connection. Each side has its own broker, client id and credentials."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not a silent default

    host: str = Field("127.0.0.1", description="Broker host name")
    port: int = Field(1883, ge=1, le=65535, description="Broker port (8883 with TLS)")
    username: str | None = Field(None, description="Broker user (required in production)")
    password: SecretStr | None = Field(None, description="Broker password (env or /run/secrets)")
    client_id: str = Field(..., min_length=1, max_length=128, description="Stable id: the persistent session hangs on it")
    tls_ca_file: Path | None = Field(None, description="CA bundle; enables TLS when set")
    keepalive_s: int = Field(30, ge=5, le=600)
    qos: int = Field(1, ge=0, le=2, description="1 = at-least-once; duplicates are made idempotent downstream")


def log_connect_failures(client: Any, log: logging.Logger, what: str, settings: MqttSettings) -> None:
    """Say so when a broker cannot be reached (paho retries in silence: "ingest started", then nothing)."""

    def failed(_client: Any, _userdata: Any) -> None:
        log.warning("%s: cannot connect to %s:%d (%s); retrying", what, settings.host, settings.port,
                    "TLS" if settings.tls_ca_file else "plain")

    client.on_connect_fail = failed
