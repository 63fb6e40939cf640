"""Create the database, the roles and the two schemas that keep the paths apart.

Run once with an administrator connection (``sonopolis db-init``; the demo and the
tests do it for their own clusters). After it:

* role ``sonopolis_smart`` owns schema ``smart`` and has no privilege on ``safe``;
* role ``sonopolis_safe`` owns schema ``safe`` and has no privilege on ``smart``;
* role ``sonopolis_smart_reader`` (Grafana) may only read ``smart``, now and after
  later migrations, and has no privilege on ``safe`` (``sonopolis/reader.py``);
* ``PUBLIC`` can create nothing anywhere, so no role can stash data elsewhere.

Each side then applies its own migrations in its own schema, as its own role.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from sonopolis.reader import READER_ROLE, grant_smart_reader

SMART_ROLE = "sonopolis_smart"
SAFE_ROLE = "sonopolis_safe"


@dataclass(frozen=True)
class RoleDsns:
    smart: str
    safe: str
    reader: str  # read-only on schema smart: what Grafana uses


def _with_db(dsn: str, dbname: str, user: str | None = None, password: str | None = None) -> str:
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    info["dbname"] = dbname
    if user:
        info["user"] = user
        info.pop("password", None)
    if password:
        info["password"] = password
    return psycopg.conninfo.make_conninfo(**info)


BOOTSTRAP_LOCK_KEY = 0x50_4E_4F_53
"""An advisory lock key ('SONP'). Advisory locks are a database's: bootstraps exclude each
other when their admin DSNs name the same database, as every caller here does (``postgres``)."""


def bootstrap(
    admin_dsn: str,
    dbname: str = "sonopolis",
    *,
    smart_password: str | None = None,
    safe_password: str | None = None,
    reader_password: str | None = None,
    timescale: bool | None = None,
) -> RoleDsns:
    """Idempotently create ``dbname``, the roles and both schemas; return the role DSNs.

    ``timescale``: None = create the extension when the server has it.
    """
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        # Roles are the cluster's: two bootstraps at once (two test runs, db-init run twice)
        # failed with "tuple concurrently updated" on ALTER ROLE. One holds this lock at a time;
        # it is the session's, released when ``admin`` closes.
        admin.execute("SELECT pg_advisory_lock(%s)", (BOOTSTRAP_LOCK_KEY,))
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if not exists:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        for role, password in ((SMART_ROLE, smart_password), (SAFE_ROLE, safe_password), (READER_ROLE, reader_password)):
            has = admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            verb = "ALTER" if has else "CREATE"
            if password:
                admin.execute(sql.SQL(verb + " ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
            else:
                admin.execute(sql.SQL(verb + " ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE").format(sql.Identifier(role)))

        with psycopg.connect(_with_db(admin_dsn, dbname), autocommit=True) as conn:
            db = sql.Identifier(dbname)
            conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db))
            conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
            if timescale is not False:
                available = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone()
                if available:
                    conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
                elif timescale:
                    raise RuntimeError("timescale=on but the timescaledb extension is not available on this server")
            for role, schema in ((SMART_ROLE, "smart"), (SAFE_ROLE, "safe")):
                conn.execute(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(db, sql.Identifier(role)))
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {}").format(sql.Identifier(schema), sql.Identifier(role)))
                conn.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(sql.Identifier(schema)))
                conn.execute(sql.SQL("ALTER ROLE {} IN DATABASE {} SET search_path = {}, public").format(sql.Identifier(role), db, sql.Identifier(schema)))
            grant_smart_reader(conn, dbname, SMART_ROLE)

    return RoleDsns(
        smart=_with_db(admin_dsn, dbname, SMART_ROLE, smart_password),
        safe=_with_db(admin_dsn, dbname, SAFE_ROLE, safe_password),
        reader=_with_db(admin_dsn, dbname, READER_ROLE, reader_password),
    )
