"""Real services for the tests: the machine's PostgreSQL, private PostgreSQL clusters
and private Mosquitto brokers started as processes.

Fresh databases per test keep tests independent; private brokers keep concurrent
test runs from hearing each other's topics; private clusters can be stopped and
restarted mid-test to prove that an outage loses nothing. A service that cannot be
reached fails the run loudly: nothing is skipped for want of a service.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from sonopolis.bootstrap import RoleDsns, bootstrap
from sonopolis.embedded import LocalMosquitto, LocalPostgres

ADMIN_DSN = os.environ.get("SONOPOLIS_TEST_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def require_admin() -> str:
    try:
        with psycopg.connect(ADMIN_DSN, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {ADMIN_DSN} ({exc}). "
            "Run the tests with scripts/test.sh, which starts it, or set SONOPOLIS_TEST_PG_ADMIN_DSN.",
            pytrace=False,
        )
    return ADMIN_DSN


@contextmanager
def fresh_database(admin_dsn: str) -> Iterator[RoleDsns]:
    """A new database with both roles and schemas; dropped afterwards."""
    name = f"sonotest_{uuid.uuid4().hex[:12]}"
    dsns = bootstrap(admin_dsn, name)
    try:
        yield dsns
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextmanager
def private_postgres(tmp: Path) -> Iterator[LocalPostgres]:
    pg = LocalPostgres(tmp / "pgdata").start()
    try:
        yield pg
    finally:
        pg.destroy()


@contextmanager
def private_mosquitto(tmp: Path, **kwargs: object) -> Iterator[LocalMosquitto]:
    broker = LocalMosquitto(tmp / f"mosquitto-{uuid.uuid4().hex[:6]}", **kwargs).start()  # type: ignore[arg-type]
    try:
        yield broker
    finally:
        broker.stop()
