"""The open API's own tables in schema ``smart`` (events, webhooks, export runs).

Applied through the shared migration runner with a bookkeeping table of its own
(``api_schema_migrations``), next to the ingestion's, so the two packages number
their migrations independently.
"""

from __future__ import annotations

from pathlib import Path

import psycopg

MIGRATIONS = Path(__file__).with_name("migrations")
BOOKKEEPING_TABLE = "api_schema_migrations"


def migrate(conn: psycopg.Connection, schema: str = "smart") -> list[int]:
    """Apply pending API migrations (``conn`` in autocommit, as the smart role)."""
    from common.migrations import apply

    return apply(conn, schema, MIGRATIONS, table=BOOKKEEPING_TABLE, lock_key=0x50A7)
