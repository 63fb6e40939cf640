"""``sonopolis ingest`` and ``sonopolis sensors``: the smart storage path's commands.

Heavy imports stay inside the command bodies so ``sonopolis --help`` (and the other
services' processes) never load psycopg, paho or prometheus for nothing.
"""

from __future__ import annotations

from pathlib import Path

import typer

from smart.cli_support import dsn_or_exit, settings_or_exit


def sensors(
    load: list[Path] = typer.Option([], "--load", help="GeoJSON (.geojson) or TOML (.toml) sensor file to upsert; repeatable"),
    deactivate: list[str] = typer.Option([], "--deactivate", help="Retire a sensor id (its frames are quarantined from then on)"),
    as_json: bool = typer.Option(False, "--json", help="Print the registry as JSON instead of a table"),
    config: Path | None = typer.Option(None, "--config", help="Smart-side TOML configuration file"),
) -> None:
    """Register sensors from a file, retire sensors, and list the registry."""
    import json

    import psycopg

    from ingestion import registry
    from ingestion.schema import migrate

    settings = settings_or_exit(config)
    loaded = []
    for path in load:
        try:
            loaded.append(registry.load_file(path))
        except registry.RegistryError as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(1) from exc
    schema = settings.db.schema_name
    with psycopg.connect(dsn_or_exit(settings)) as conn:
        migrate(conn, timescale=settings.db.timescale, schema=schema)
        for path, items in zip(load, loaded):
            n = registry.upsert(conn, items, schema=schema)
            typer.echo(f"{path}: {n} sensor(s) upserted")
        for sensor_id in deactivate:
            if not registry.deactivate(conn, sensor_id, schema=schema):
                typer.echo(f"no sensor {sensor_id!r} in the registry", err=True)
                raise typer.Exit(1)
            typer.echo(f"{sensor_id}: deactivated")
        listed = registry.list_sensors(conn, schema=schema)
    if as_json:
        typer.echo(json.dumps([s.model_dump(mode="json") for s in listed], ensure_ascii=False, indent=2))
        return
    for s in listed:
        flag = "" if s.active else "  (inactive)"
        typer.echo(f"{s.sensor_id:<20} {s.latitude:9.5f} {s.longitude:10.5f}  class {s.sonometer_class}  {s.name}{flag}")
    typer.echo(f"{len(listed)} sensor(s)")


def ingest(
    config: Path | None = typer.Option(None, "--config", help="Smart-side TOML configuration file"),
    validate_config: bool = typer.Option(False, "--validate-config", help="Check the configuration and exit"),
) -> None:
    """Consume level frames from the smart broker into PostgreSQL (runs until SIGTERM/SIGINT)."""
    import logging
    import signal

    from ingestion.metrics import IngestMetrics
    from ingestion.service import IngestService, StoppedBeforeStart

    settings = settings_or_exit(config)
    dsn_or_exit(settings)
    if validate_config:
        typer.echo("configuration OK")
        return
    metrics = IngestMetrics()
    try:
        metrics.serve(settings.ingest.metrics_port)
    except OSError as exc:  # was a traceback
        typer.echo(f"cannot serve metrics on port {settings.ingest.metrics_port}: {exc.strerror or exc}", err=True)
        raise typer.Exit(3) from exc
    service = IngestService(settings.db, settings.ingest, metrics=metrics)
    stop = lambda signum, frame: service.stop_event.set()  # noqa: E731
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        service.start()
    except StoppedBeforeStart as exc:  # SIGTERM during the database wait was a traceback
        typer.echo(f"ingest: {exc}", err=True)
        return
    service.wait()
    if service.failure is not None:
        service.stop()
        typer.echo(f"ingest stopped: {type(service.failure).__name__}: {service.failure}", err=True)
        raise typer.Exit(1)
    logging.getLogger(__name__).info("signal received: committing what is buffered, then leaving the broker")
    service.drain_and_stop()
