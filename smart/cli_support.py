"""What every smart-side command does first: load the settings and find the database.

One owner, so that a configuration problem is one line and exit 2 in every command
(``ingest``, ``sensors``, ``api``, ``export``, ``ngsi-sync``), never a traceback in some.
Imports stay inside the functions: the CLI loads nothing heavy before a command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from smart.settings import SmartSettings


def settings_or_exit(config: Path | None) -> SmartSettings:
    """The smart settings from ``config`` and the environment, or exit 2 listing each problem."""
    from common.config import ConfigError, load_settings
    from smart.settings import SmartSettings

    try:
        return load_settings(SmartSettings, config)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc


def dsn_or_exit(settings: SmartSettings) -> str:
    """The smart database DSN, or exit 2 saying it is not configured."""
    try:
        return settings.db.require_dsn()
    except ValueError as exc:
        typer.echo(f"invalid configuration: {exc}", err=True)
        raise typer.Exit(2) from exc
