"""The read-only role of the smart schema: what Grafana (and only it) logs in as.

Why a role of its own: Grafana is exposed through the public proxy with anonymous
viewers, and any viewer may send SQL of their choosing through a PostgreSQL
datasource (``/api/ds/query``). Logged in as the smart role, one request could
rewrite or delete the city's noise record. As this role it can read the open data
and nothing else.

What the role gets, all from :func:`grant_smart_reader` (run by ``db-init`` as admin):

* ``CONNECT`` on the database (no ``TEMPORARY``), ``USAGE`` on schema ``smart``,
  ``SELECT`` on its tables, views and materialized views, and nothing on ``safe``;
* the same ``SELECT`` on every table or view the smart role creates later: the smart
  migrations (ingestion, api, ngsi) all run as ``sonopolis_smart``, which owns every
  object in ``smart``, so a default privilege *for that role* covers them. TimescaleDB
  (>= 2.8) copies it to a continuous aggregate's internal materialization hypertable
  and to new chunks, which real-time aggregates and hypertables need;
* never the tables of :data:`OWNER_ONLY` (webhook signing secrets). Their migration
  takes the default privilege back as it creates them; ``db-init`` re-checks here.

Existing objects (a deployment upgraded to this role) are granted one by one, not
with ``GRANT ... ON ALL TABLES IN SCHEMA``: TimescaleDB propagates a grant to chunks
and to a continuous aggregate's internal objects only for a named relation.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

READER_ROLE = "sonopolis_smart_reader"
SCHEMA = "smart"

# Tables of schema smart no reader may see: api_webhooks holds the HMAC keys that
# sign webhook deliveries (api/webhooks.py); a Grafana viewer who read them could
# forge deliveries to every subscriber. api/migrations/0002 revokes them too.
OWNER_ONLY = frozenset({"api_webhooks"})

# Relation kinds SELECT applies to: table, partitioned table, view, materialized
# view, foreign table (a continuous aggregate's user-facing object is a view).
_READABLE_KINDS = ("r", "p", "v", "m", "f")


def grant_smart_reader(conn: psycopg.Connection, dbname: str, owner_role: str) -> None:
    """Give ``READER_ROLE`` read access to schema smart in ``dbname``, idempotently.

    ``conn``: an administrator's autocommit connection to ``dbname``; ``owner_role``:
    the role that owns schema smart and runs its migrations (creates its objects).
    """
    reader, owner, schema = sql.Identifier(READER_ROLE), sql.Identifier(owner_role), sql.Identifier(SCHEMA)
    conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(dbname), reader))
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, reader))
    conn.execute(sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} GRANT SELECT ON TABLES TO {}").format(owner, schema, reader))
    conn.execute(sql.SQL("ALTER ROLE {} IN DATABASE {} SET search_path = {}, public").format(reader, sql.Identifier(dbname), schema))
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relkind = ANY(%s) ORDER BY c.relname",
        (SCHEMA, list(_READABLE_KINDS)),
    ).fetchall()
    for (name,) in rows:
        verb = "REVOKE ALL ON {}.{} FROM {}" if name in OWNER_ONLY else "GRANT SELECT ON {}.{} TO {}"
        try:
            conn.execute(sql.SQL(verb).format(schema, sql.Identifier(name), reader))
        except psycopg.Error as exc:
            raise RuntimeError(f"db-init: could not set {READER_ROLE}'s access to {SCHEMA}.{name} in {dbname!r}: {exc}") from exc
