"""The publisher's own tables in schema ``smart`` (``ngsi/migrations``).

They sit next to the ingestion's relations but are numbered and recorded separately
(``smart.ngsi_schema_migrations``) so neither package has to know the other's versions.
"""

from __future__ import annotations

from pathlib import Path

import psycopg

from common.migrations import apply

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
BOOKKEEPING_TABLE = "ngsi_schema_migrations"
LOCK_KEY = 0x6E675349  # "ngSI"


def migrate(conn: psycopg.Connection, schema: str = "smart") -> list[int]:
    """Apply pending ``ngsi/migrations`` in ``schema`` as the connection's role (the smart role)."""
    previous = conn.autocommit
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.commit()
    conn.autocommit = True
    try:
        return apply(conn, schema, MIGRATIONS_DIR, table=BOOKKEEPING_TABLE, lock_key=LOCK_KEY)
    finally:
        conn.autocommit = previous
