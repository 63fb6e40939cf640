"""The ``sonopolis`` command: one subcommand per service, each its own process.

Subcommands live next to the code they run (``ingestion/cli.py``,
``safecity_bridge/cli.py``, ...) and keep heavy imports inside the command body, so
``sonopolis bridge`` never loads smart-side code and ``sonopolis ingest`` never loads
the bridge. This module only wires them together.
"""

from __future__ import annotations

import importlib
import logging
import os

import typer

app = typer.Typer(
    name="sonopolis",
    help="Acoustic sensors for a city without surveillance: smart path (open noise data) and isolated safe path.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

# name -> "module:function". Every entry must import (tests/test_cli.py checks it).
COMMANDS: dict[str, str] = {
    "db-init": "sonopolis.commands:db_init",
    "schemas": "sonopolis.commands:schemas",
    "demo": "sonopolis.demo:demo",
    "ingest": "ingestion.cli:ingest",
    "sensors": "ingestion.cli:sensors",
    "edge": "detectors.cli:edge",
    "check-edge": "detectors.cli:check_edge",
    "calibrate": "detectors.cli:calibrate",
    "eval-detector": "detectors.cli:eval_detector",
    "train-detector": "detectors.cli:train_detector",
    "ngsi-sync": "ngsi.cli:ngsi_sync",
    "api": "api.cli:api",
    "export": "api.cli:export",
    "bridge": "safecity_bridge.cli:bridge",
}

MISSING: dict[str, str] = {}
"""Commands whose module is not built yet (must be empty in a release; a test checks)."""


def _register() -> None:
    for name, target in COMMANDS.items():
        module_name, func_name = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                MISSING[name] = f"{module_name} not found"
                continue
            raise
        func = getattr(module, func_name, None)
        if func is None:
            MISSING[name] = f"{target} not found"
            continue
        app.command(name)(func)


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else getattr(logging, os.environ.get("SONOPOLIS_LOG_LEVEL", "INFO").upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


_register()

if __name__ == "__main__":  # pragma: no cover
    app()
