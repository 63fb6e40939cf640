"""Retention with an injected clock: purge after N days, legal holds kept, purge journaled,
and the journal append-only for everyone else."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from messages.security_event import SecurityEvent
from safecity_bridge import journal, retention, store
from safecity_bridge.correlation import Correlator
from safecity_bridge.journal import Action
from safecity_bridge.settings import CorrelationSettings
from tests.safecity_bridge.bridge_harness import SENSORS, event

T0 = datetime(2030, 3, 1, 12, 0, tzinfo=timezone.utc)


async def _seed(dsn: str) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    corr = Correlator(CorrelationSettings(), {s.sensor_id: s for s in SENSORS})
    ids = []
    store.migrate(dsn, "safe")
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        for day, sid in ((0, "s-north"), (0, "s-east"), (14, "s-west")):
            at = T0 + timedelta(days=day)
            ev = SecurityEvent.model_validate(event(sid, onset=at))
            plan = corr.plan(ev, at)
            assert await store.record_event(conn, "safe", ev, plan.incident, is_new=True, received_at=at)
            await store.record_camera_outcomes(conn, "safe", plan.incident.incident_id, [{"camera_id": "cam-1", "outcome": "moved_preset", "preset": "p1"}], at)
            ids.append(plan.incident.incident_id)
        await store.place_hold(conn, "safe", ids[1], "réquisition judiciaire 2030/123", "dominique", T0 + timedelta(days=1))
        await store.quarantine(conn, "safe", received_at=T0, topic="t", payload=b"x", reason_code="invalid_json", reason="r")
    return ids[0], ids[1], ids[2]


def count(conn, q, *p):
    return conn.execute(q, p).fetchone()[0]


def test_purge_respects_retention_and_legal_hold_and_is_journaled(db):
    old, held, recent = asyncio.run(_seed(db.safe))

    async def purge_at(now: datetime) -> retention.PurgeResult:
        async with await psycopg.AsyncConnection.connect(db.safe, autocommit=True) as conn:
            return await retention.purge(conn, "safe", 15, clock=lambda: now)

    first = asyncio.run(purge_at(T0 + timedelta(days=10)))  # nothing old enough yet
    assert (first.incidents, first.quarantined) == (0, 0)
    result = asyncio.run(purge_at(T0 + timedelta(days=16)))
    assert result.cutoff == T0 + timedelta(days=1)
    assert result.incidents == 1 and result.quarantined == 1
    with psycopg.connect(db.safe) as conn:
        remaining = {r[0] for r in conn.execute("SELECT incident_id FROM safe.incidents")}
        assert remaining == {held, recent}
        assert count(conn, "SELECT count(*) FROM safe.events WHERE incident_id = %s", old) == 0
        assert count(conn, "SELECT count(*) FROM safe.camera_moves WHERE incident_id = %s", old) == 0
        assert count(conn, "SELECT count(*) FROM safe.journal WHERE incident_id = %s", old) == 0
        assert count(conn, "SELECT count(*) FROM safe.journal WHERE incident_id = %s", held) >= 3  # opened, camera, hold
        purges = conn.execute("SELECT at, details FROM safe.journal WHERE action = 'purge' ORDER BY id").fetchall()
        assert len(purges) == 2 and purges[-1][1]["incidents"] == 1 and purges[-1][1]["retention_days"] == 15
        assert purges[-1][0] == T0 + timedelta(days=16)


def test_journal_is_append_only(db):
    asyncio.run(_seed(db.safe))
    with psycopg.connect(db.safe, autocommit=True) as conn:
        for stmt in ("UPDATE safe.journal SET actor = 'x'", "DELETE FROM safe.journal", "TRUNCATE safe.journal"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                conn.execute(stmt)
        assert count(conn, "SELECT count(*) FROM safe.journal") > 0


def test_retention_bounds_enforced_by_purge():
    with pytest.raises(ValueError, match="between 1 and 30"):
        asyncio.run(retention.purge(None, "safe", 31))  # type: ignore[arg-type]


def test_journal_entries_query(db):
    old, held, _ = asyncio.run(_seed(db.safe))

    async def q() -> list[dict]:
        async with await psycopg.AsyncConnection.connect(db.safe, autocommit=True) as conn:
            return await journal.entries(conn, "safe", incident_id=held, action=Action.LEGAL_HOLD_PLACED)

    [entry] = asyncio.run(q())
    assert entry["actor"] == "dominique" and entry["details"]["reason"].startswith("réquisition")


def test_a_failed_purge_round_does_not_end_the_purge_loop(db):
    """The purge is a legal duty: an unexpected error in one round is logged and the next
    round runs; the loop once caught only OperationalError and ended on anything else."""
    rounds: list[str] = []

    async def connect():  # noqa: ANN202
        rounds.append("connect")
        if len(rounds) == 1:
            raise RuntimeError("a bug in round one")
        return await psycopg.AsyncConnection.connect(db.safe, autocommit=True)

    async def run() -> None:
        stop = asyncio.Event()
        async def stopper() -> None:
            while len(rounds) < 2:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.3)
            stop.set()
        await asyncio.wait_for(asyncio.gather(retention.run_periodically(connect, "safe", 15, 0.05, stop), stopper()), timeout=20)

    store.migrate(db.safe, "safe")
    asyncio.run(run())
    assert len(rounds) >= 2
    with psycopg.connect(db.safe) as conn:
        assert conn.execute("SELECT count(*) FROM safe.journal WHERE action = 'purge'").fetchone()[0] >= 1


def test_a_bridge_that_refuses_to_run_still_purges_what_is_past_retention(db, monkeypatch):
    """Withdrawing the declaration (the legal basis lapsed) stops the bridge, and the purge
    ran only inside a running bridge: the incidents it had stored were then kept for good.
    The refusal still steers and alerts nothing, but it purges, journaled."""
    from typer.testing import CliRunner

    from safecity_bridge.cli import REFUSAL_EXIT
    from sonopolis.cli import app

    now = datetime.now(timezone.utc)
    corr = Correlator(CorrelationSettings(), {s.sensor_id: s for s in SENSORS})

    async def seed() -> list[uuid.UUID]:
        store.migrate(db.safe, "safe")
        ids = []
        async with await psycopg.AsyncConnection.connect(db.safe, autocommit=True) as conn:
            for age_days, sid in ((20, "s-north"), (2, "s-east")):
                at = now - timedelta(days=age_days)
                ev = SecurityEvent.model_validate(event(sid, onset=at))
                plan = corr.plan(ev, at)
                assert await store.record_event(conn, "safe", ev, plan.incident, is_new=True, received_at=at)
                ids.append(plan.incident.incident_id)
        return ids

    old, recent = asyncio.run(seed())
    for k in ("SONOPOLIS_SAFE_DECLARATION__LEGAL_BASIS", "SONOPOLIS_SAFE_DECLARATION__DPIA_REFERENCE", "SONOPOLIS_SAFE_CONFIG_FILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("SONOPOLIS_SAFE_DB__DSN", db.safe)
    result = CliRunner().invoke(app, ["bridge"])
    assert result.exit_code == REFUSAL_EXIT and "refuses" in result.output
    with psycopg.connect(db.safe) as conn:
        assert {r[0] for r in conn.execute("SELECT incident_id FROM safe.incidents")} == {recent}
        [(details,)] = conn.execute("SELECT details FROM safe.journal WHERE action = 'purge'").fetchall()
        assert details["incidents"] == 1 and details["retention_days"] == 15
    assert old != recent

    # --validate-config only checks: it changes nothing.
    assert CliRunner().invoke(app, ["bridge", "--validate-config"]).exit_code == REFUSAL_EXIT
    with psycopg.connect(db.safe) as conn:
        assert conn.execute("SELECT count(*) FROM safe.journal WHERE action = 'purge'").fetchone()[0] == 1


def test_a_refused_start_is_journaled_with_its_reason_when_the_safe_schema_exists(db, monkeypatch):
    """The journal is what an auditor reads: a bridge started without a legal basis, which
    refused, left no trace of that start in it (``bridge_refused`` was never written).
    Without a safe schema nothing is created; ``--validate-config`` journals nothing."""
    from typer.testing import CliRunner

    from safecity_bridge.cli import REFUSAL_EXIT
    from sonopolis.cli import app

    for k in ("SONOPOLIS_SAFE_DECLARATION__LEGAL_BASIS", "SONOPOLIS_SAFE_DECLARATION__DPIA_REFERENCE", "SONOPOLIS_SAFE_CONFIG_FILE"):
        monkeypatch.delenv(k, raising=False)
    secret = "pw-never-journaled-4711"  # the test server trusts local roles: a password is accepted, and must go nowhere
    monkeypatch.setenv("SONOPOLIS_SAFE_DB__DSN", psycopg.conninfo.make_conninfo(db.safe, password=secret))
    monkeypatch.setenv("SONOPOLIS_SAFE_DECLARATION__DPIA_REFERENCE", "AIPD-2030-007")

    assert CliRunner().invoke(app, ["bridge"]).exit_code == REFUSAL_EXIT
    with psycopg.connect(db.safe) as conn:
        assert conn.execute("SELECT to_regclass('safe.journal')").fetchone() == (None,)  # nothing created to say so

    store.migrate(db.safe, "safe")
    result = CliRunner().invoke(app, ["bridge"])
    assert result.exit_code == REFUSAL_EXIT and "refuses" in result.output
    with psycopg.connect(db.safe) as conn:
        rows = conn.execute("SELECT actor, details, at FROM safe.journal WHERE action = 'bridge_refused'").fetchall()
        order = [a for (a,) in conn.execute("SELECT action FROM safe.journal ORDER BY id")]
    [(actor, details, at)] = rows
    assert actor == journal.SYSTEM and abs((datetime.now(timezone.utc) - at).total_seconds()) < 60
    assert "no complete legal declaration" in details["reason"] and "declaration.legal_basis" in details["reason"]
    assert details["missing"] == ["declaration.legal_basis"] and details["dpia_reference"] == "AIPD-2030-007"
    assert secret not in str(details) and db.safe not in str(details)
    assert order == ["bridge_refused", "purge"]  # the refusal, then what it still owes

    assert CliRunner().invoke(app, ["bridge", "--validate-config"]).exit_code == REFUSAL_EXIT
    with psycopg.connect(db.safe) as conn:
        assert conn.execute("SELECT count(*) FROM safe.journal").fetchone()[0] == 2


def test_a_purge_called_straight_in_sql_leaves_its_own_trace_in_the_journal(db):
    """``purge_expired`` deletes journal entries and journaled nothing itself: only the
    Python caller did. A mistaken ``SELECT safe.purge_expired(now())`` by hand wiped the
    journal without a trace. The function now journals the purge itself, in the same
    transaction, with the role that called it; and only the safe role may execute it."""
    asyncio.run(_seed(db.safe))
    with psycopg.connect(db.safe, autocommit=True) as conn:
        cutoff = T0 + timedelta(days=300)  # the seed lives in 2030: a cutoff past all of it, as a slip of the hand would be
        [(n_inc, n_jou, n_qua)] = conn.execute("SELECT * FROM safe.purge_expired(%s)", (cutoff,)).fetchall()
        assert n_inc == 2 and n_jou > 0 and n_qua == 1  # the held incident stays
        [(at, actor, details)] = conn.execute("SELECT at, actor, details FROM safe.journal WHERE action = 'purge'").fetchall()
        assert actor == "sonopolis_safe" and abs((datetime.now(timezone.utc) - at).total_seconds()) < 60
        assert (details["incidents"], details["journal_entries"], details["quarantined"]) == (n_inc, n_jou, n_qua)
        assert datetime.fromisoformat(details["cutoff"]) == cutoff
        # Counts are the function's own: a caller's extra details cannot overwrite them.
        conn.execute("SELECT safe.purge_expired(%s, now(), 'bridge', '{\"incidents\": 99, \"retention_days\": 15}'::jsonb)", (cutoff,))
        last = conn.execute("SELECT actor, details FROM safe.journal WHERE action = 'purge' ORDER BY id DESC LIMIT 1").fetchone()
        assert last[0] == "bridge" and last[1]["incidents"] == 0 and last[1]["retention_days"] == 15
        signature = conn.execute("SELECT 'safe.purge_expired'::regproc::oid::regprocedure::text").fetchone()[0]
        who = {r: conn.execute("SELECT has_function_privilege(%s, %s, 'EXECUTE')", (r, signature)).fetchone()[0]
               for r in ("sonopolis_safe", "sonopolis_smart", "public")}
    assert who == {"sonopolis_safe": True, "sonopolis_smart": False, "public": False}


def test_a_refusing_bridge_brings_an_older_schema_to_the_purge_that_journals_itself(db, monkeypatch, tmp_path):
    """A schema left by an older bridge (migrations 0001-0002) has the purge that journals
    nothing; the refusing bridge migrates the existing schema (creating none) and purges."""
    import shutil

    from typer.testing import CliRunner

    from common import migrations
    from safecity_bridge.cli import REFUSAL_EXIT
    from sonopolis.cli import app

    older = tmp_path / "migrations"
    older.mkdir()
    for p in sorted(store.MIGRATIONS.glob("000[12]_*.sql")):
        shutil.copy(p, older / p.name)
    with psycopg.connect(db.safe, autocommit=True) as conn:
        assert migrations.apply(conn, "safe", older) == [1, 2]
    for k in ("SONOPOLIS_SAFE_DECLARATION__LEGAL_BASIS", "SONOPOLIS_SAFE_DECLARATION__DPIA_REFERENCE", "SONOPOLIS_SAFE_CONFIG_FILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("SONOPOLIS_SAFE_DB__DSN", db.safe)
    assert CliRunner().invoke(app, ["bridge"]).exit_code == REFUSAL_EXIT
    with psycopg.connect(db.safe) as conn:
        assert [a for (a,) in conn.execute("SELECT action FROM safe.journal ORDER BY id")] == ["bridge_refused", "purge"]
        assert conn.execute("SELECT to_regprocedure('safe.purge_expired(timestamptz)')").fetchone() == (None,)
