"""Small administrative commands of the composition root."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def db_init(
    admin_dsn: str = typer.Option(..., envvar="SONOPOLIS_ADMIN_DSN", help="Superuser/owner connection used once"),
    dbname: str = typer.Option("sonopolis", help="Database to create or update"),
    smart_password_file: Path | None = typer.Option(None, help="File holding the smart role's password"),
    safe_password_file: Path | None = typer.Option(None, help="File holding the safe role's password"),
    smart_reader_password_file: Path | None = typer.Option(None, help="File holding the read-only smart role's password (Grafana)"),
) -> None:
    """Create the database, the smart, smart reader and safe roles and their schemas (idempotent)."""
    from sonopolis.bootstrap import bootstrap

    read = lambda p: p.read_text().strip() if p else None  # noqa: E731
    dsns = bootstrap(admin_dsn, dbname, smart_password=read(smart_password_file), safe_password=read(safe_password_file),
                     reader_password=read(smart_reader_password_file))
    from psycopg.conninfo import conninfo_to_dict

    # Where and who, never a DSN itself: each holds a role's password (one once went to `docker logs db-init`).
    where = conninfo_to_dict(dsns.smart)
    reader = conninfo_to_dict(dsns.reader).get("user", "?")
    typer.echo(f"database {dbname!r} ready on {where.get('host', 'local socket')}:{where.get('port', 5432)} "
               f"(roles {where.get('user', '?')}, {reader} (read-only) and the safe role)")


def schemas(out_dir: Path = typer.Option(Path("docs/schemas"), help="Where to write the JSON Schemas")) -> None:
    """Write the JSON Schemas of the wire messages (generated from the pydantic models)."""
    from messages.schema_export import export_all

    out_dir.mkdir(parents=True, exist_ok=True)
    for name, schema in export_all().items():
        (out_dir / name).write_text(json.dumps(schema, indent=2, ensure_ascii=False) + "\n")
        typer.echo(f"wrote {out_dir / name}")
