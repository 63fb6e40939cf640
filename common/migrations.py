"""Apply a package's numbered ``.sql`` migrations to one schema, exactly once each.

Both sides own their schema and migrations (``ingestion/migrations`` for the smart
schema, ``safecity_bridge/migrations`` for the safe one) and run them as their own
database role; this runner is the only shared piece. Files are named
``NNNN_description.sql`` (optionally ``NNNN_description.timescale.sql`` /
``.plain.sql`` for the two storage paths) and applied in order under an advisory
lock, so two processes starting together do not race.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+?)(?:\.(timescale|plain))?\.sql$")


class MigrationError(Exception):
    """A migration failed; the message names the file and the database error."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    variant: str | None
    path: Path

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()[:16]


def discover(directory: Path, *, timescale: bool) -> list[Migration]:
    """Migrations of ``directory`` for the chosen storage path, in version order."""
    wanted = "timescale" if timescale else "plain"
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        m = _NAME.match(path.name)
        if not m:
            raise MigrationError(f"{path.name}: not named NNNN_description[.timescale|.plain].sql")
        version, name, variant = int(m.group(1)), m.group(2), m.group(3)
        if variant is not None and variant != wanted:
            continue
        if version in found:
            raise MigrationError(f"{path.name}: version {version} defined twice")
        found[version] = Migration(version, name, variant, path)
    return [found[v] for v in sorted(found)]


def apply(
    conn: psycopg.Connection,
    schema: str,
    directory: Path,
    *,
    timescale: bool = False,
    lock_key: int = 0,
    table: str = "schema_migrations",
) -> list[int]:
    """Apply pending migrations in ``schema``; return the versions applied now.

    ``table`` is the bookkeeping table: a second package sharing the schema (``ngsi/``
    next to ``ingestion/`` in ``smart``) keeps its own numbering in its own table.

    ``conn`` must be in autocommit mode: each migration runs in its own transaction,
    except TimescaleDB calls that must be top level (see TIMESCALE-NOTES), which a
    migration marks with a ``-- sonopolis:autocommit`` first line.
    """
    if not conn.autocommit:
        raise MigrationError("migrations need an autocommit connection")
    ident = sql.Identifier(schema)
    book = sql.Identifier(table)
    key = lock_key or int(hashlib.sha1(schema.encode()).hexdigest()[:8], 16)
    conn.execute("SELECT pg_advisory_lock(%s)", (key,))
    try:
        conn.execute(sql.SQL("SET search_path TO {}, public").format(ident))
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {}.{} ("
                " version int PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            ).format(ident, book)
        )
        done = {
            r[0]: r[1]
            for r in conn.execute(sql.SQL("SELECT version, checksum FROM {}.{}").format(ident, book))
        }
        applied = []
        for mig in discover(directory, timescale=timescale):
            if mig.version in done:
                continue
            text = mig.path.read_text(encoding="utf-8")
            try:
                if text.startswith("-- sonopolis:autocommit"):
                    for statement in _split(text):
                        conn.execute(statement)
                    _record(conn, ident, book, mig)
                else:
                    with conn.transaction():
                        conn.execute(text)
                        _record(conn, ident, book, mig)
            except psycopg.Error as exc:
                raise MigrationError(f"{mig.path.name} failed in schema {schema!r}: {exc}") from exc
            log.info("applied migration %s to schema %s", mig.path.name, schema)
            applied.append(mig.version)
        return applied
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


def _record(conn: psycopg.Connection, ident: sql.Identifier, book: sql.Identifier, mig: Migration) -> None:
    conn.execute(
        sql.SQL("INSERT INTO {}.{} (version, name, checksum) VALUES (%s, %s, %s)").format(ident, book),
        (mig.version, mig.name, mig.checksum),
    )


def _split(text: str) -> list[str]:
    """Split an autocommit migration on lines ending with ``;`` (no $$ bodies there)."""
    out, buf = [], []
    for line in text.splitlines():
        if line.strip().startswith("--") and not buf:
            continue
        buf.append(line)
        if line.rstrip().endswith(";"):
            out.append("\n".join(buf))
            buf = []
    if "".join(buf).strip():
        out.append("\n".join(buf))
    return out
