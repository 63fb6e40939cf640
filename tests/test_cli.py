"""The ``sonopolis`` command exposes every service, and the config is validated up front."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from sonopolis import cli


def test_every_registered_command_is_built() -> None:
    assert cli.MISSING == {}, f"commands whose module is missing: {cli.MISSING}"
    names = {c.name for c in cli.app.registered_commands}
    assert {"ingest", "edge", "ngsi-sync", "api", "bridge", "demo", "eval-detector", "calibrate"} <= names


def test_help_lists_services() -> None:
    result = CliRunner().invoke(cli.app, ["--help"])
    assert result.exit_code == 0
    for name in ("ingest", "edge", "ngsi-sync", "api", "bridge", "demo"):
        assert name in result.output


def test_bridge_process_does_not_load_smart_code_and_reverse() -> None:
    """Separate processes: building the CLI must not import either side's service modules."""
    code = (
        "import sys, sonopolis.cli as c;"
        "heavy=[m for m in sys.modules if m.split('.')[0] in ('safecity_bridge','ingestion','ngsi','api')"
        " and not m.endswith(('.cli','.settings')) and m not in ('safecity_bridge','ingestion','ngsi','api')];"
        "print(','.join(sorted(heavy)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"CLI import pulled in service modules: {out}"
