"""The local service launchers used by the demo, the tests and the benchmarks."""

from __future__ import annotations

from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest

from sonopolis.bootstrap import bootstrap
from tests import services


def test_private_postgres_survives_restart_and_separates_roles(tmp_path: Path) -> None:
    with services.private_postgres(tmp_path) as pg:
        dsns = bootstrap(pg.admin_dsn, "sonopolis")
        with psycopg.connect(dsns.safe, autocommit=True) as safe:
            safe.execute("CREATE TABLE safe.secret (x int)")
        pg.restart()
        with psycopg.connect(dsns.smart, autocommit=True) as smart:
            smart.execute("CREATE TABLE smart.t (x int)")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                smart.execute("SELECT * FROM safe.secret")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                smart.execute("CREATE TABLE public.stash (x int)")
        with psycopg.connect(dsns.safe, autocommit=True) as safe:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                safe.execute("SELECT * FROM smart.t")


def test_bootstrap_is_idempotent(db, pg_admin_dsn: str) -> None:  # noqa: ANN001
    dbname = psycopg.conninfo.conninfo_to_dict(db.smart)["dbname"]
    again = bootstrap(pg_admin_dsn, dbname)
    assert again == db


def test_private_mosquitto_with_passwords(tmp_path: Path) -> None:
    with services.private_mosquitto(tmp_path, users={"alice": "s3cret"}) as broker:
        ok = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="t-ok")
        ok.username_pw_set("alice", "s3cret")
        assert ok.connect("127.0.0.1", broker.port) == 0
        rc = []
        ok.on_connect = lambda c, u, f, reason, p: rc.append(reason)
        ok.loop_start()
        import time

        for _ in range(50):
            if rc:
                break
            time.sleep(0.05)
        ok.loop_stop()
        assert rc and not rc[0].is_failure
        bad = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="t-bad")
        bad.username_pw_set("alice", "wrong")
        rc2 = []
        bad.on_connect = lambda c, u, f, reason, p: rc2.append(reason)
        bad.connect("127.0.0.1", broker.port)
        bad.loop_start()
        for _ in range(50):
            if rc2:
                break
            time.sleep(0.05)
        bad.loop_stop()
        assert rc2 and rc2[0].is_failure
