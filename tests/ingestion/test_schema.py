"""The smart schema: migrations on the plain path, path selection, contract columns."""

from __future__ import annotations

import psycopg
import pytest

from ingestion import aggsql
from ingestion.schema import MIGRATIONS_DIR, SchemaError, migrate, storage_path, use_timescale
from common.migrations import discover

CONTRACT = {
    "sensors": {"sensor_id", "name", "latitude", "longitude", "street", "place", "sonometer_class", "installed_on",
                "calibration_offset_db", "timezone", "active", "created_at", "updated_at"},
    "levels": {"sensor_id", "time", "period_s", "laeq", "lafmax", "lafmin", "lcpeak", "bands", "status", "car_horn", "siren", "ingested_at"},
    "lden_daily": {"sensor_id", "day", "lden", "lday", "levening", "lnight", "coverage"},
    "quarantine": {"id", "received_at", "topic", "sensor_id", "reason_code", "reason", "payload", "payload_bytes"},
}
AGG = {"sensor_id", "bucket", "laeq", "lamax", "lamin", "la10", "la50", "la90", "bands", "coverage", "n_seconds", "car_horn", "siren"}


def _columns(conn: psycopg.Connection, table: str) -> set[str]:
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'smart' AND table_name = %s", (table,)
    ).fetchall()
    return {r[0] for r in rows}


def test_plain_migration_creates_the_contract_relations(db):
    with psycopg.connect(db.smart) as conn:
        applied = migrate(conn)
        assert applied == [1, 2, 3, 4, 5]
        assert storage_path(conn) == "plain"
        for table, cols in CONTRACT.items():
            assert cols <= _columns(conn, table), table
        for table in ("levels_1min", "levels_15min", "levels_1h", "levels_1d"):
            assert AGG <= _columns(conn, table), table
        kind = conn.execute("SELECT relkind FROM pg_class WHERE oid = 'smart.levels'::regclass").fetchone()
        assert kind == ("p",), "plain path stores raw levels in a partitioned table"
        assert migrate(conn) == [], "second run applies nothing"


def test_timescale_on_is_refused_without_the_extension(db):
    with psycopg.connect(db.smart, autocommit=True) as conn:
        with pytest.raises(SchemaError, match="timescaledb extension is not installed"):
            migrate(conn, timescale="on")
        assert use_timescale(conn, "auto") is False


def test_timescale_variant_selected_by_flag():
    plain = {m.path.name for m in discover(MIGRATIONS_DIR, timescale=False)}
    ts = {m.path.name for m in discover(MIGRATIONS_DIR, timescale=True)}
    assert "0002_levels.plain.sql" in plain and "0002_levels.timescale.sql" not in plain
    assert "0002_levels.timescale.sql" in ts and "0003_aggregates.timescale.sql" in ts
    text = (MIGRATIONS_DIR / "0002_levels.timescale.sql").read_text()
    assert "create_hypertable('levels', by_range('time', INTERVAL '1 day'))" in text
    assert "add_compression_policy" in text and "add_retention_policy" in text


def test_timescale_aggregates_migration_is_the_generated_one():
    """The committed continuous-aggregate SQL is exactly what aggsql generates (no drift)."""
    text = (MIGRATIONS_DIR / "0004_aggregates_measured.timescale.sql").read_text()
    assert text == aggsql.timescale_migration()
    assert text.startswith("-- sonopolis:autocommit")
    for name in ("levels_1min", "levels_15min", "levels_1h", "levels_1d", "lden_daily"):
        assert f" {name}" in text
    # Every aggregate counts measured frames only; the 0003 ones it replaces counted all.
    assert text.count(f"WHERE {aggsql.MEASURED}\n") == 4
    assert "WHERE l.status" not in (MIGRATIONS_DIR / "0003_aggregates.timescale.sql").read_text()
    assert text.index("DROP MATERIALIZED VIEW IF EXISTS levels_1min;") < text.index("CREATE MATERIALIZED VIEW levels_1min")
