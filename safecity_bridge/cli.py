"""``sonopolis bridge``: the safe path's own process.

Refuses to start (exit code 2, with the reason) without a complete legal declaration:
it then steers no camera and delivers no alert, but journals the refusal and runs one
retention purge on what an earlier, declared bridge stored (when its schema exists). With one, it journals the declaration
at every start. ``--demo-declaration`` substitutes a clearly FICTITIOUS declaration,
journaled as such, accepted only with cameras on this machine (simulators).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

REFUSAL_EXIT = 2

if TYPE_CHECKING:
    from safecity_bridge.settings import SafeSettings


def bridge(
    config: Path | None = typer.Option(None, "--config", "-c", help="Safe-side TOML file (else SONOPOLIS_SAFE_CONFIG_FILE / env)"),
    demo_declaration: bool = typer.Option(False, "--demo-declaration", help="Use a FICTITIOUS declaration (demo with simulated cameras only)"),
    validate_config: bool = typer.Option(False, "--validate-config", help="Check the configuration and the declaration, then exit"),
    hash_password: bool = typer.Option(False, "--hash-password", help="Read an operator password on stdin, print its argon2id hash, exit"),
) -> None:
    """Run the isolated safe path: safe broker -> incidents -> cameras + control room."""
    import asyncio
    import logging
    import os
    import signal
    import sys

    from common.config import ConfigError, load_settings
    from safecity_bridge.service import DeclarationMissing, require_declaration
    from safecity_bridge.settings import SafeSettings
    from safecity_bridge.settings import demo_declaration as fictitious

    log = logging.getLogger("safecity_bridge")
    if hash_password:
        from safecity_bridge.console.auth import hash_password as make_hash

        password = sys.stdin.readline().rstrip("\n")
        try:
            typer.echo(make_hash(password))
        except ValueError as exc:
            typer.echo(f"refused: {exc}", err=True)
            raise typer.Exit(1) from None
        return
    try:
        overrides = {"declaration": fictitious()} if demo_declaration else {}
        settings = load_settings(SafeSettings, config, **overrides)
        require_declaration(settings)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    except DeclarationMissing as exc:
        typer.echo(f"sonopolis bridge refuses to steer cameras or deliver alerts: {exc}", err=True)
        if not validate_config:
            _journal_refusal_and_purge(settings, str(exc))
        raise typer.Exit(REFUSAL_EXIT) from None
    if settings.declaration.fictitious:
        typer.echo("WARNING: FICTITIOUS legal declaration (demo only): no legal basis exists; simulated cameras only.", err=True)
    if validate_config:
        typer.echo(f"configuration valid: {len(settings.cameras)} camera(s), {len(settings.sensors)} sensor(s), "
                   f"{len(settings.operators)} operator(s), retention {settings.retention_days} days")
        return

    from safecity_bridge.runner import Bridge, NoCameras
    from safecity_bridge.steering import OnvifSteerer

    steerer = OnvifSteerer(settings, os.environ) if settings.cameras else NoCameras()
    if not settings.cameras:
        log.warning("no camera configured: alerts will say 'no camera in range'")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await Bridge(settings, steerer).run(stop)

    from safecity_bridge.runner import BrokerUnreachable

    try:
        asyncio.run(main())
    except DeclarationMissing as exc:
        typer.echo(f"sonopolis bridge refuses to start: {exc}", err=True)
        raise typer.Exit(REFUSAL_EXIT) from None
    except BrokerUnreachable as exc:
        typer.echo(f"sonopolis bridge: {exc}", err=True)
        raise typer.Exit(1) from None


def _journal_refusal_and_purge(settings: "SafeSettings", reason: str) -> None:
    """Journal the refusal, then run the retention purge still owed (both only in an existing safe schema).

    An auditor reads the journal: a start without a legal basis must be seen there, with
    its reason and what was declared (references only; the DSN and passwords never).
    Retention still applies to what an earlier, declared bridge stored (journaled purge).
    Never fatal: the refusal is the message that matters; a database that cannot be
    reached is reported and the purge happens at the next start.
    """
    import asyncio

    import psycopg

    from safecity_bridge import journal, retention

    if settings.db.dsn is None:
        return
    dsn, schema, decl = settings.db.dsn.get_secret_value(), settings.db.schema_name, settings.declaration
    details = {"reason": reason, "missing": [m.split(" ", 1)[0] for m in decl.missing()], "legal_basis": decl.legal_basis,
               "dpia_reference": decl.dpia_reference, "declared_by": decl.declared_by, "fictitious": decl.fictitious}
    try:
        asyncio.run(journal.append_if_present(dsn, schema, at=retention.utc_now(), actor=journal.SYSTEM, action=journal.Action.BRIDGE_REFUSED,
                                              details=details))
        result = asyncio.run(retention.purge_if_present(dsn, schema, settings.retention_days))
    except (psycopg.Error, OSError) as exc:
        typer.echo(f"refusal not journaled or retention purge not done ({type(exc).__name__}: {str(exc)[:200]}); retried at the next start", err=True)
        return
    if result is not None:
        typer.echo(f"retention purge done: {result.incidents} incident(s), {result.journal_entries} journal entr(y/ies), "
                   f"{result.quarantined} quarantined message(s) older than {result.cutoff.isoformat()}", err=True)
