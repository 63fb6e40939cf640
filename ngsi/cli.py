"""``sonopolis ngsi-sync``: publish sensors and aggregates to the city's NGSI-LD broker."""

from __future__ import annotations

from pathlib import Path

import typer


def ngsi_sync(
    config: Path | None = typer.Option(None, "--config", help="Smart-side TOML settings file"),
    once: bool = typer.Option(False, "--once", help="One round (catch up everything due), then exit"),
) -> None:
    """Push Device and NoiseLevelObserved entities in batches, resuming from the stored cursor."""
    import asyncio
    import logging

    from smart.cli_support import dsn_or_exit, settings_or_exit

    settings = settings_or_exit(config)
    ngsi = settings.ngsi
    missing = [name for name, value in (("ngsi.broker_url", ngsi.broker_url), ("ngsi.context_url", ngsi.context_url)) if not value]
    if missing:
        typer.echo(f"ngsi-sync needs {', '.join(missing)} (SONOPOLIS_SMART_NGSI__BROKER_URL / __CONTEXT_URL)", err=True)
        raise typer.Exit(2)
    code = asyncio.run(_run(dsn_or_exit(settings), settings.db.schema_name, ngsi, once))
    logging.getLogger(__name__).info("ngsi-sync stopped")
    raise typer.Exit(code)


async def _run(dsn: str, schema: str, settings: object, once: bool, transport: object = None) -> int:
    """Connect, migrate the cursor tables, then one round or rounds every ``interval_s``.

    ``transport`` (an ``httpx.AsyncBaseTransport``) is the tests' seam to a broker double.
    """
    import asyncio
    import logging

    import httpx
    import psycopg

    from common.backoff import Backoff
    from ngsi.client import BrokerClient, BrokerRefused, BrokerUnavailable
    from ngsi.schema import migrate
    from ngsi.settings import NgsiSettings
    from ngsi.sync import Syncer

    assert isinstance(settings, NgsiSettings)
    log = logging.getLogger("ngsi.sync")
    timeout = httpx.Timeout(settings.timeout_s, connect=min(5.0, settings.timeout_s))
    backoff = Backoff(initial=settings.backoff_initial_s, maximum=settings.backoff_max_s)
    assert transport is None or isinstance(transport, httpx.AsyncBaseTransport)
    async with httpx.AsyncClient(base_url=str(settings.broker_url), timeout=timeout, transport=transport) as http:
        while True:
            # A database restart kills the connection (AdminShutdown, connection refused):
            # everything that matters is in the database (cursor, bookkeeping), so drop the
            # connection, wait, reconnect and carry on from the stored cursor. A database not
            # up yet at start is the same case: the migration (idempotent) is inside the loop.
            try:
                with psycopg.connect(dsn, connect_timeout=5) as setup:
                    migrate(setup, schema)
                async with await psycopg.AsyncConnection.connect(dsn) as conn:
                    syncer = Syncer(conn, BrokerClient(http, settings), settings, schema=schema)
                    while True:
                        try:
                            report = await syncer.run_once()
                            backoff.reset()
                            delay = settings.interval_s
                            if once:
                                return 0 if report.caught_up else 1
                        except BrokerUnavailable as exc:
                            log.warning("broker unavailable, cursor kept; will catch up: %s", exc)
                            if once:
                                return 1
                            delay = max(settings.interval_s, backoff.next_delay())
                        except BrokerRefused as exc:
                            log.error("broker refused the requests (configuration?): %s", exc)
                            return 3
                        await asyncio.sleep(delay)
            except psycopg.OperationalError as exc:
                log.warning("database unavailable, reconnecting (cursor is in the database): %s", exc)
                if once:
                    return 1
                await asyncio.sleep(max(1.0, backoff.next_delay()))
