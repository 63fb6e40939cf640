"""Grafana's read-only role on the real PostgreSQL: it reads schema smart, writes nothing.

Why these tests: any Grafana viewer can send SQL through the datasource, so the role
it logs in as is the only thing between a dashboard visitor and the city's noise
record. Each test runs the statement an attacker would and expects the server to
refuse it, and checks the catalog so a privilege nobody exercised here still shows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from api.schema import migrate as migrate_api
from common.migrations import apply
from ngsi.schema import migrate as migrate_ngsi
from safecity_bridge.store import migrate as migrate_safe
from sonopolis.bootstrap import RoleDsns, bootstrap
from sonopolis.reader import OWNER_ONLY, READER_ROLE
from tests.api import seed

# What the dashboards read (dashboards/build.py): each must be readable and non-empty.
DASHBOARD_RELATIONS = ("sensors", "levels_1min", "levels_1h", "lden_daily")
WRITE_PRIVILEGES = ("INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")


@pytest.fixture
def city(db: RoleDsns) -> Iterator[RoleDsns]:
    """Both schemas migrated as their own roles, with sensors and an hour of levels."""
    seed.migrate(db.smart)
    with psycopg.connect(db.smart, autocommit=True) as conn:
        migrate_ngsi(conn)
    migrate_safe(db.safe, "safe")
    end = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) - dt.timedelta(minutes=1)
    with psycopg.connect(db.smart) as conn:
        seed.add_sensors(conn)
        seed.add_levels(conn, end - dt.timedelta(hours=1), end, step_s=60)
    yield db


def _relations(conn: psycopg.Connection, schema: str) -> list[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'f') ORDER BY 1",
        (schema,),
    ).fetchall()
    return [r[0] for r in rows]


def _counts(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        return {t: conn.execute(sql.SQL("SELECT count(*) FROM smart.{}").format(sql.Identifier(t))).fetchone()[0]  # type: ignore[index]
                for t in ("sensors", "levels", "levels_1min", "quarantine")}


def test_reader_reads_what_the_dashboards_query(city: RoleDsns) -> None:
    with psycopg.connect(city.reader) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (READER_ROLE,)
        for name in DASHBOARD_RELATIONS:
            (n,) = conn.execute(sql.SQL("SELECT count(*) FROM smart.{}").format(sql.Identifier(name))).fetchone()  # type: ignore[misc]
            assert n > 0, f"smart.{name} is empty for the reader"
        # Unqualified names resolve in smart, like the smart role's.
        assert conn.execute("SELECT count(*) FROM levels").fetchone()[0] > 0  # type: ignore[index]


def test_reader_has_select_only_on_every_smart_relation(city: RoleDsns, pg_admin_dsn: str) -> None:
    dbname = psycopg.conninfo.conninfo_to_dict(city.smart)["dbname"]
    admin = psycopg.conninfo.make_conninfo(pg_admin_dsn, dbname=dbname)
    with psycopg.connect(admin) as conn:
        relations = _relations(conn, "smart")
        assert {"sensors", "levels", "api_events", "ngsi_published", *OWNER_ONLY} <= set(relations)
        for name in relations:
            rel = f"smart.{name}"
            readable = conn.execute("SELECT has_table_privilege(%s, %s, 'SELECT')", (READER_ROLE, rel)).fetchone()[0]  # type: ignore[index]
            assert readable is (name not in OWNER_ONLY), f"{rel}: SELECT for the reader is {readable}"
            for priv in WRITE_PRIVILEGES:
                assert not conn.execute("SELECT has_table_privilege(%s, %s, %s)", (READER_ROLE, rel, priv)).fetchone()[0], f"{rel}: {priv}"  # type: ignore[index]
        sequences = conn.execute("SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                                 " WHERE n.nspname = 'smart' AND c.relkind = 'S'").fetchall()
        assert sequences, "the smart schema has sequences to check"
        for (seq,) in sequences:
            assert not conn.execute("SELECT has_sequence_privilege(%s, %s, 'USAGE,UPDATE')", (READER_ROLE, seq)).fetchone()[0], seq  # type: ignore[index]
        checks = {
            "USAGE on smart": ("SELECT has_schema_privilege(%s, 'smart', 'USAGE')", True),
            "CREATE on smart": ("SELECT has_schema_privilege(%s, 'smart', 'CREATE')", False),
            "CREATE on public": ("SELECT has_schema_privilege(%s, 'public', 'CREATE')", False),
            "CONNECT": ("SELECT has_database_privilege(%s, current_database(), 'CONNECT')", True),
            "CREATE on the database": ("SELECT has_database_privilege(%s, current_database(), 'CREATE')", False),
            "TEMPORARY": ("SELECT has_database_privilege(%s, current_database(), 'TEMPORARY')", False),
        }
        for what, (query, expected) in checks.items():
            assert conn.execute(query, (READER_ROLE,)).fetchone()[0] is expected, what  # type: ignore[index]
        role = conn.execute("SELECT rolsuper, rolcreatedb, rolcreaterole, rolcanlogin FROM pg_roles WHERE rolname = %s", (READER_ROLE,)).fetchone()
        assert role == (False, False, False, True)


WRITES = {
    "insert": "INSERT INTO smart.sensors (sensor_id, name, latitude, longitude) VALUES ('se-forged', 'x', 45, 4)",
    "update": "UPDATE smart.sensors SET name = 'defaced'",
    "delete": "DELETE FROM smart.levels",
    "delete aggregate": "DELETE FROM smart.levels_1min",
    "truncate": "TRUNCATE smart.levels",
    "truncate quarantine": "TRUNCATE smart.quarantine",
    "nextval": "SELECT nextval('smart.quarantine_id_seq')",
    "create in smart": "CREATE TABLE smart.stash (x int)",
    "create view in smart": "CREATE VIEW smart.stash_v AS SELECT 1 AS x",
    "create in public": "CREATE TABLE public.stash (x int)",
    "create temporary": "CREATE TEMP TABLE stash (x int)",
    "create schema": "CREATE SCHEMA stash",
    "alter": "ALTER TABLE smart.sensors ADD COLUMN stash text",
    "drop": "DROP TABLE smart.quarantine",
    "grant onwards": "GRANT SELECT ON smart.api_webhooks TO PUBLIC",
}


@pytest.mark.parametrize("statement", list(WRITES.values()), ids=list(WRITES))
def test_reader_cannot_change_anything(city: RoleDsns, statement: str) -> None:
    before = _counts(city.smart)
    with psycopg.connect(city.reader, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)
    assert _counts(city.smart) == before


def test_reader_sees_nothing_of_the_safe_schema(city: RoleDsns, pg_admin_dsn: str) -> None:
    with psycopg.connect(city.safe, autocommit=True) as safe:
        tables = _relations(safe, "safe")
        assert {"incidents", "events", "journal"} <= set(tables)
    with psycopg.connect(city.reader, autocommit=True) as conn:
        for name in tables:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql.SQL("SELECT 1 FROM safe.{} LIMIT 1").format(sql.Identifier(name)))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT safe.purge_expired(now())")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE safe.stash (x int)")
        assert conn.execute("SELECT has_schema_privilege('safe', 'USAGE')").fetchone() == (False,)
    dbname = psycopg.conninfo.conninfo_to_dict(city.safe)["dbname"]
    with psycopg.connect(psycopg.conninfo.make_conninfo(pg_admin_dsn, dbname=dbname)) as admin:
        granted = admin.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a"
            " WHERE n.nspname = 'safe' AND a.grantee = %s::regrole",
            (READER_ROLE,),
        ).fetchall()
        assert granted == []
        defaults = admin.execute(
            "SELECT 1 FROM pg_default_acl d JOIN pg_namespace n ON n.oid = d.defaclnamespace, aclexplode(d.defaclacl) a"
            " WHERE n.nspname = 'safe' AND a.grantee = %s::regrole",
            (READER_ROLE,),
        ).fetchall()
        assert defaults == []


LATER_MIGRATION = """
CREATE TABLE later_counts (sensor_id text PRIMARY KEY, n int NOT NULL);
INSERT INTO later_counts SELECT sensor_id, 1 FROM sensors;
CREATE VIEW later_view AS SELECT sensor_id, n * 2 AS twice FROM later_counts;
CREATE MATERIALIZED VIEW later_mv AS SELECT count(*) AS n FROM later_counts;
"""


def test_objects_of_a_later_migration_are_readable_without_db_init(city: RoleDsns, tmp_path: Path) -> None:
    """A migration shipped after db-init ran (as the smart role, like every smart migration)."""
    (tmp_path / "0001_later_objects.sql").write_text(LATER_MIGRATION)
    with psycopg.connect(city.smart, autocommit=True) as conn:
        assert apply(conn, "smart", tmp_path, table="later_schema_migrations") == [1]
    with psycopg.connect(city.reader, autocommit=True) as conn:
        for name in ("later_counts", "later_view", "later_mv", "later_schema_migrations"):
            rows = conn.execute(sql.SQL("SELECT * FROM smart.{}").format(sql.Identifier(name))).fetchall()
            assert rows, f"smart.{name} is empty for the reader"
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE smart.later_counts SET n = 0")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("REFRESH MATERIALIZED VIEW smart.later_mv")


def test_webhook_secrets_are_for_the_api_only(city: RoleDsns) -> None:
    with psycopg.connect(city.smart, autocommit=True) as conn:
        conn.execute("INSERT INTO smart.api_webhooks (id, url, secret, event_types) "
                     "VALUES (gen_random_uuid(), 'https://example.org/hook', 'hmac-key', '{sensor_silent}')")
        assert conn.execute("SELECT secret FROM smart.api_webhooks").fetchall() == [("hmac-key",)]
    with psycopg.connect(city.reader, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT secret FROM smart.api_webhooks")
        # The deliveries' table (no secret in it) stays readable.
        conn.execute("SELECT count(*) FROM smart.api_webhook_deliveries")


def test_db_init_again_repairs_the_reader_and_keeps_webhook_secrets_off(city: RoleDsns, pg_admin_dsn: str) -> None:
    """Re-running db-init on a live schema: what predates the role becomes readable, secrets stay closed."""
    dbname = psycopg.conninfo.conninfo_to_dict(city.smart)["dbname"]
    with psycopg.connect(city.smart, autocommit=True) as conn:
        # As a deployment made before the reader existed: no grant on its tables.
        conn.execute(sql.SQL("REVOKE ALL ON smart.sensors, smart.levels_1h FROM {}").format(sql.Identifier(READER_ROLE)))
        conn.execute(sql.SQL("GRANT SELECT ON smart.api_webhooks TO {}").format(sql.Identifier(READER_ROLE)))
    with psycopg.connect(city.reader, autocommit=True) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT 1 FROM smart.sensors")

    assert bootstrap(pg_admin_dsn, dbname) == city

    with psycopg.connect(city.reader, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM smart.sensors").fetchone()[0] > 0  # type: ignore[index]
        assert conn.execute("SELECT count(*) FROM smart.levels_1h").fetchone()[0] > 0  # type: ignore[index]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT secret FROM smart.api_webhooks")


def test_webhook_migration_takes_back_a_default_grant(db: RoleDsns) -> None:
    """Fresh schema: db-init's default privilege reaches api_webhooks at creation, 0002 removes it."""
    with psycopg.connect(db.smart, autocommit=True) as conn:
        assert migrate_api(conn) == [1, 2, 3]
        acl = conn.execute("SELECT relacl::text FROM pg_class WHERE oid = 'smart.api_webhooks'::regclass").fetchone()[0]  # type: ignore[index]
        events = conn.execute("SELECT relacl::text FROM pg_class WHERE oid = 'smart.api_events'::regclass").fetchone()[0]  # type: ignore[index]
    assert READER_ROLE in events, "the default privilege reaches the API's new tables"
    assert READER_ROLE not in acl
