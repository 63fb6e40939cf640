"""``sonopolis api`` (serve the open API) and ``sonopolis export`` (publish open-data days).

Heavy imports stay inside the command bodies (see ``sonopolis/cli.py``). Settings are
loaded once here and passed down.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
import typer

from smart.cli_support import dsn_or_exit, settings_or_exit


def _migrate(dsn: str, schema: str) -> None:
    """The API's own tables, and the NGSI-LD ones its context source reads and renders (ngsi/migrations)."""
    import psycopg

    from api.schema import migrate
    from ngsi.schema import migrate as migrate_ngsi

    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn, schema)
        migrate_ngsi(conn, schema)


def api(
    config: Path | None = typer.Option(None, "--config", help="Smart-side TOML settings file"),
    host: str | None = typer.Option(None, help="Override api.host"),
    port: int | None = typer.Option(None, help="Override api.port"),
) -> None:
    """Serve the open-data API, open event API, transparency notice and built-in page."""
    import asyncio
    import gc

    import uvicorn
    from psycopg_pool import AsyncConnectionPool

    from api.app import create_app

    settings = settings_or_exit(config)
    dsn = dsn_or_exit(settings)
    _migrate(dsn, settings.db.schema_name)
    api_settings = settings.api

    async def serve() -> None:
        opts = f"-c statement_timeout={settings.db.statement_timeout_ms}"
        async with AsyncConnectionPool(dsn, min_size=settings.db.pool_min, max_size=settings.db.pool_max,
                                       kwargs={"options": opts, "autocommit": True}, open=False) as pool:
            app = create_app(api_settings, pool, schema=settings.db.schema_name, ngsi_settings=settings.ngsi)
            # start-up objects (modules, routes, models) live as long as the process: move them out
            # of the collector's generations so the collections a large answer triggers skip them
            gc.collect()
            gc.freeze()
            # X-Forwarded-* are the app's to apply, from api.trusted_proxies only (api/proxy.py): uvicorn's
            # own handling would trust FORWARDED_ALLOW_IPS (default loopback) instead. Behind the proxy the
            # proxy keeps the access log, without client addresses (deploy/caddy/Caddyfile); uvicorn's
            # would now name each resident's.
            server = uvicorn.Server(uvicorn.Config(app, host=host or api_settings.host, port=port or api_settings.port,
                                                   log_level="info", proxy_headers=False,
                                                   access_log=not api_settings.trust_forwarded_for))
            await server.serve()

    asyncio.run(serve())


def export(
    config: Path | None = typer.Option(None, "--config", help="Smart-side TOML settings file"),
    day: list[str] = typer.Option([], "--day", help="Local day YYYY-MM-DD (repeat); default: the latest publishable day"),
    dataset: list[str] = typer.Option([], "--dataset", help="levels_15min, levels_1h, lden_daily (default: all)"),
) -> None:
    """Export open-data days through the quality gate; exit 1 when a batch is rejected."""
    import asyncio

    import psycopg

    from api.exports import DAILY_DATASETS, Exporter, ExportError, day_bounds

    settings = settings_or_exit(config)
    dsn = dsn_or_exit(settings)
    _migrate(dsn, settings.db.schema_name)
    ex = settings.api.exports
    try:
        days = [dt.date.fromisoformat(d) for d in day]
    except ValueError as exc:
        raise typer.BadParameter(f"--day must be YYYY-MM-DD: {exc}") from exc
    if not days:
        latest = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=ex.publication_delay_h)).date() - dt.timedelta(days=1)
        while day_bounds(latest, ex.timezone)[1] > dt.datetime.now(dt.UTC) - dt.timedelta(hours=ex.publication_delay_h):
            latest -= dt.timedelta(days=1)
        days = [latest]
    unknown = set(dataset) - set(DAILY_DATASETS)
    if unknown:
        raise typer.BadParameter(f"unknown dataset(s) {sorted(unknown)}; choose among {', '.join(DAILY_DATASETS)}")

    async def run() -> int:
        rejected = 0
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            exporter = Exporter(ex, settings.db.schema_name)
            for d in days:
                try:
                    results = await exporter.run_day(conn, d, tuple(dataset) or DAILY_DATASETS)
                except ExportError as exc:
                    typer.echo(f"{d}: {exc}", err=True)
                    rejected += 1
                    continue
                for r in results:
                    typer.echo(f"{r.day} {r.dataset}: {r.status} ({r.rows} rows, run {r.run_id}, report {r.report_path})")
                    rejected += r.status != "published"
        return rejected

    if asyncio.run(run()):
        raise typer.Exit(1)
