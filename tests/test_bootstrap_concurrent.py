"""Two bootstraps at once on one PostgreSQL cluster (two test runs, a compose db-init run
twice) both succeed.

Roles are the cluster's, not a database's: two ``ALTER ROLE`` on the same role at once
fail with "tuple concurrently updated", and two ``CREATE ROLE`` with "already exists".
A full test run once ended with that error while another run bootstrapped beside it.
"""

from __future__ import annotations

import threading
import uuid

import psycopg
from psycopg import sql

from sonopolis.bootstrap import bootstrap
from tests import services


def test_concurrent_bootstraps_of_different_databases_all_succeed() -> None:
    admin = services.require_admin()
    names = [f"sonotest_{uuid.uuid4().hex[:12]}" for _ in range(6)]
    errors: list[BaseException] = []
    start = threading.Barrier(len(names))

    def one(name: str) -> None:
        start.wait()
        try:
            for _ in range(3):
                bootstrap(admin, name)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(n,)) for n in names]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert errors == []
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            for name in names:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
