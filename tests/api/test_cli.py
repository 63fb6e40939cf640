"""``sonopolis export`` end to end: settings from the environment, real database, files on disk."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from sonopolis.cli import app
from tests.api.test_exports import DAY, day_dsn  # noqa: F401 - fixture reused


def test_export_command_publishes_a_day(day_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setenv("SONOPOLIS_SMART_DB__DSN", day_dsn)
    monkeypatch.setenv("SONOPOLIS_SMART_API__EXPORTS__DIRECTORY", str(tmp_path / "od"))
    result = CliRunner().invoke(app, ["export", "--day", DAY.isoformat(), "--dataset", "levels_1h"])
    assert result.exit_code == 0, result.output
    assert f"{DAY} levels_1h: published (72 rows" in result.output
    assert (tmp_path / "od" / "levels_1h" / f"levels_1h_{DAY}.csv").is_file()
    assert (tmp_path / "od" / "datapackage.json").is_file() and (tmp_path / "od" / "catalog.jsonld").is_file()
    bad = CliRunner().invoke(app, ["export", "--day", "2020-13-01"])
    assert bad.exit_code != 0
