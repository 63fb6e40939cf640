"""The bridge under bad messages and a failing database: it keeps going and loses no alert.

Each case once stopped the intake for good (the process stayed up, /healthz said ok,
and the unacked message came back first after every restart) or lost a live alert.
The writer of what follows an alert (camera outcomes, delivery journal) must likewise
outlive a write the database refuses.
Real Mosquitto, real PostgreSQL; the lost-reply case puts a TCP proxy in front of the
real server that forwards the event's insert and then drops the connection.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from datetime import datetime, timezone

import psycopg
import pytest
from psycopg import errors, sql

from safecity_bridge import journal, store
from safecity_bridge.journal import SYSTEM, Action
from safecity_bridge.runner import BridgeThread, NoCameras
from tests import services
from tests.polling import wait_until
from tests.safecity_bridge.bridge_harness import FeedReader, event, make_settings, past
from tests.safecity_bridge.conftest import OPERATOR


def _count(dsn: str, table: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("safe", table))).fetchone()[0]


def test_poison_messages_are_quarantined_and_the_intake_goes_on(bridge, feed, pub, db):
    topic = "sonopolis-safe/v1/events/s-north"
    pub.publish(json.dumps(event("s-north")).encode().replace(b"}", b', "x": "\x00"}'), topic)  # NUL bytes in the payload
    pub.publish(event("s-north", model="abc\u0000"))  # NUL in a stored field
    pub.publish(json.dumps({**event("s-north"), "\u0000": 1}).encode(), topic)  # NUL in the reason that names the key
    pub.publish(event("s-north", onset=None) | {"onset": "0001-01-01T00:00:00+05:00"})  # no UTC for it
    good = event("s-east", "glass_break")
    pub.publish(good)
    msg = feed.wait_for(lambda m: m["type"] == "incident")
    assert msg["event_id"] == good["event_id"]
    wait_until(lambda: _count(db.safe, "quarantine") == 4, what="four quarantined messages")
    assert sorted(t.get_name() for t in bridge.service._tasks if t.get_name() in ("intake", "side-writer")) == ["intake", "side-writer"]


def test_a_late_event_is_alerted_but_moves_no_camera(bridge, feed, pub):
    """A sensor's backlog after an outage: the control room hears of it, the cameras stay where they are."""
    late = event("s-south", "explosion", onset=past(900))
    pub.publish(late)
    msg = feed.wait_for(lambda m: m["type"] == "incident")
    assert msg["event_id"] == late["event_id"]
    assert msg["cameras"] == "unchanged" and 890 <= msg["late_s"] <= 960
    fresh = event("s-north", "gunshot", onset=past(1))
    pub.publish(fresh)
    msg = feed.wait_for(lambda m: m["type"] == "incident" and m["event_id"] == fresh["event_id"])
    assert msg["cameras"] == "steering" and "late_s" not in msg


def test_a_failover_to_a_read_only_standby_is_ridden_out(db, mqtt_broker, pub):
    """While the database only takes read-only sessions (a standby not promoted yet), the event waits; then it is stored."""
    dbname = psycopg.conninfo.conninfo_to_dict(db.safe)["dbname"]
    with BridgeThread(make_settings(db.safe, mqtt_broker.port), NoCameras) as bt, psycopg.connect(services.ADMIN_DSN, autocommit=True) as admin:
        admin.execute(sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(sql.Identifier(dbname)))
        try:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (dbname,))
            pub.publish(event("s-north"))
            # The first retry is the killed session; the next ones are refusals by the read-only database.
            wait_until(lambda: bt.service.stats.db_retries >= 3, what="retries on the read-only database")
        finally:
            admin.execute(sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = off").format(sql.Identifier(dbname)))
        pub.publish(event("s-east"))
        wait_until(lambda: _count(db.safe, "events") == 2, what="both events stored")
        assert "intake" in {t.get_name() for t in bt.service._tasks}


class _ReplyDropper:
    """A TCP proxy to the real PostgreSQL that, once armed, forwards the event's insert and drops the link before the reply."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.armed = threading.Event()
        self.fired = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream_port))
            cut = threading.Event()
            threading.Thread(target=self._pipe, args=(client, server, True, cut), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False, cut), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, upstream: bool, cut: threading.Event) -> None:
        try:
            while data := src.recv(65536):
                if cut.is_set() and not upstream:
                    return  # the server's reply to the insert never reaches the bridge
                if upstream and self.armed.is_set() and b"WITH ev AS" in data:
                    self.armed.clear()
                    cut.set()
                    self.fired.set()
                    dst.sendall(data)
                    time.sleep(0.3)  # the server runs and commits the statement; its reply is swallowed
                    return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()


def test_an_event_committed_just_before_the_connection_drops_is_still_alerted(db, mqtt_broker, operators, pub):
    """The retry finds the event already stored: by its own first attempt, so the alert goes out (it was counted as a duplicate)."""
    info = psycopg.conninfo.conninfo_to_dict(db.safe)
    proxy = _ReplyDropper(int(info.get("port", 5432)))
    try:
        dsn = psycopg.conninfo.make_conninfo(db.safe, host="127.0.0.1", port=proxy.port)
        with BridgeThread(make_settings(dsn, mqtt_broker.port, operators=operators), NoCameras) as bt:
            reader = FeedReader(f"http://127.0.0.1:{bt.settings.http_port}/feed", OPERATOR).start()
            try:
                proxy.armed.set()
                ev = event("s-east", "gunshot")
                pub.publish(ev)
                msg = reader.wait_for(lambda m: m["type"] == "incident", timeout=20)
                assert proxy.fired.is_set() and bt.service.stats.db_retries >= 1
                assert msg["event_id"] == ev["event_id"]
                assert bt.service.stats.duplicates == 0 and bt.service.stats.incidents == 1
            finally:
                reader.stop()
    finally:
        proxy.close()
    assert _count(db.safe, "events") == 1 and _count(db.safe, "incidents") == 1


def test_a_safe_broker_that_never_answers_is_named_at_start(db, monkeypatch, caplog):
    """It was retried in silence, then a bare TimeoutError; a SIGTERM during that wait was ignored."""
    import asyncio

    from safecity_bridge import runner
    from sonopolis.embedded import free_port

    monkeypatch.setattr(runner, "BROKER_WAIT_S", 3.0)
    port = free_port()  # nothing listens there
    settings = make_settings(db.safe, port)

    async def start(stop_after: float | None) -> None:
        stop = asyncio.Event()
        if stop_after is not None:
            asyncio.get_running_loop().call_later(stop_after, stop.set)
        await runner.Bridge(settings, runner.NoCameras()).run(stop)

    with pytest.raises(runner.BrokerUnreachable, match=f"safe broker 127.0.0.1:{port} did not accept the bridge"):
        asyncio.run(start(None))
    assert any(f"cannot connect to 127.0.0.1:{port}" in r.message for r in caplog.records)
    began = time.monotonic()
    asyncio.run(start(0.5))  # a stop while waiting ends the run at once, without an error
    assert time.monotonic() - began < 2.5


def test_a_side_write_the_database_refuses_is_skipped_and_the_writes_behind_it_still_happen(bridge, db, caplog):
    """Camera outcomes and delivery journal entries go through one writer task after the alert.

    A write the database refuses (here: outcomes of an incident it does not have, and a
    journal entry whose details jsonb cannot hold) would be refused again: it is dropped
    with its error in the log, and the writer goes on with what was queued behind it.
    Were the refusal to end the writer, no camera outcome and no delivery entry would be
    journaled any more, while the bridge still alerted and /healthz said ok.
    """
    service = bridge.service
    ghost = uuid.uuid4()  # no such incident in the database
    marker = uuid.uuid4().hex
    at = datetime.now(timezone.utc)
    outcome = {"camera_id": "cam-1", "outcome": "moved_preset", "preset": "p1", "reason": None, "latency_ms": 12.0}

    async def queue_writes() -> None:  # all three queued before the writer runs any of them
        service.side_write(f"camera outcomes of incident {ghost}", lambda c: store.record_camera_outcomes(c, service.schema, ghost, [outcome], at))
        service.side_write(f"webhook_failed of incident {ghost}",
                           lambda c: journal.append(c, service.schema, at=at, actor=SYSTEM, action=Action.WEBHOOK_FAILED,
                                                    incident_id=ghost, details={"error": "reply with a \x00 in it"}))
        service.side_write("the marker", lambda c: journal.append(c, service.schema, at=at, actor=SYSTEM, action=Action.ALERT_DELIVERED,
                                                                  details={"marker": marker}))

    def landed() -> bool:
        with psycopg.connect(db.safe) as conn:
            return conn.execute("SELECT count(*) FROM safe.journal WHERE details->>'marker' = %s", (marker,)).fetchone()[0] == 1

    bridge.call(queue_writes())
    wait_until(landed, timeout=10, what="the valid journal entry queued behind the refused writes")
    bridge.call(service.settle(timeout=5))  # every queued write was accounted for
    writer = [t for t in service._tasks if t.get_name() == "side-writer"]
    assert len(writer) == 1 and not writer[0].done(), "the side writer stopped"
    # Nothing of the refused writes was stored (the outcomes' transaction rolled back whole).
    assert _count(db.safe, "camera_moves") == 0
    with psycopg.connect(db.safe) as conn:
        assert conn.execute("SELECT count(*) FROM safe.journal WHERE incident_id = %s", (ghost,)).fetchone()[0] == 0
    refused = [r for r in caplog.records if r.name == "safecity_bridge.service" and "refused; skipped" in r.getMessage()]
    assert [r.levelname for r in refused] == ["ERROR", "ERROR"], [r.getMessage() for r in caplog.records]
    # Each refusal names the write it dropped (the database error alone may name no table nor incident).
    assert [r.getMessage() for r in refused] == [f"side writer: camera outcomes of incident {ghost} was refused; skipped",
                                                 f"side writer: webhook_failed of incident {ghost} was refused; skipped"]
    fk, nul = (r.exc_info[1] if r.exc_info else None for r in refused)
    assert isinstance(fk, errors.ForeignKeyViolation) and 'table "camera_moves"' in str(fk) and "camera_moves_incident_id_fkey" in str(fk)
    assert isinstance(nul, errors.UntranslatableCharacter)  # jsonb cannot hold \u0000


def test_an_alert_that_fails_after_the_commit_does_not_quarantine_the_stored_event(bridge, feed, pub, db, caplog, monkeypatch):
    """The worker quarantines a message whose handling raised; an event already stored and
    acked was quarantined as well (a stray internal_error row beside a stored event)."""
    hub = bridge.service.hub
    real_publish = hub.publish

    def broken(kind, body):  # noqa: ANN001, ANN202
        raise RuntimeError("feed hub down")

    monkeypatch.setattr(hub, "publish", broken)
    first = event("s-north", "gunshot")
    pub.publish(first)
    wait_until(lambda: _count(db.safe, "events") == 1, what="the event stored")
    wait_until(lambda: any("alert failed" in r.getMessage() for r in caplog.records), what="the failed alert logged")
    monkeypatch.setattr(hub, "publish", real_publish)
    second = event("s-east", "glass_break")
    pub.publish(second)
    assert feed.wait_for(lambda m: m["type"] == "incident")["event_id"] == second["event_id"]  # the intake goes on
    assert _count(db.safe, "quarantine") == 0
    with psycopg.connect(db.safe) as conn:
        marks = dict(conn.execute("SELECT event_id::text, alerted_at IS NOT NULL FROM safe.events").fetchall())
    assert marks[first["event_id"]] is False  # owed: the next start's sweep alerts it
    wait_until(lambda: _marked(db.safe, second["event_id"]), what="the second event's alert mark")


def _marked(dsn: str, event_id: str) -> bool:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT alerted_at IS NOT NULL FROM safe.events WHERE event_id = %s", (event_id,)).fetchone()[0]
