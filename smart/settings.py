"""The smart side's single settings tree, loaded once per smart process.

Environment variables are ``SONOPOLIS_SMART_<SECTION>__<KEY>`` (e.g.
``SONOPOLIS_SMART_DB__DSN``); the optional TOML file (``--config`` or
``SONOPOLIS_SMART_CONFIG_FILE``) has the same sections. The safe side has its own
tree (``safecity_bridge.settings.SafeSettings``) and its own file: neither reads the other's.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from api.settings import ApiSettings
from common.config import SideSettings
from ingestion.settings import IngestSettings
from ngsi.settings import NgsiSettings
from smart.db import SmartDbSettings


class SmartSettings(SideSettings):
    model_config = SettingsConfigDict(env_prefix="SONOPOLIS_SMART_", env_nested_delimiter="__", extra="forbid")

    db: SmartDbSettings = Field(default_factory=SmartDbSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    ngsi: NgsiSettings = Field(default_factory=NgsiSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
