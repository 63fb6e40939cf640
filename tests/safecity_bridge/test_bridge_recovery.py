"""A bridge that stops between committing an event and alerting it still owes the alert.

The test leaves the database as such a stop does: the real hot-path statement commits
the events and incidents, and nothing alerts them. A bridge then starts on it, with a
real broker, a real webhook receiver and a recording camera steerer. Before this, those
incidents sat in the database with no webhook and no camera, for good: the message had
been acknowledged, or came back and was taken for a duplicate.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg

from messages.security_event import SecurityEvent
from safecity_bridge import store
from safecity_bridge.correlation import Correlator
from safecity_bridge.runner import BridgeThread
from safecity_bridge.settings import CorrelationSettings, WebhookTarget
from tests.polling import wait_until
from tests.safecity_bridge.bridge_harness import SENSORS, FeedReader, WebhookReceiver, event, make_settings, past
from tests.safecity_bridge.conftest import OPERATOR

SCHEMA = "safe"


class RecordingSteerer:
    """Stands in for the PTZ controller (no camera here): records which incidents it was asked to aim at."""

    def __init__(self) -> None:
        self.incidents: list[uuid.UUID] = []

    async def steer(self, incident: Any) -> list[dict[str, Any]]:
        self.incidents.append(incident.incident_id)
        return []

    def camera_ids(self) -> list[str]:
        return []


def _commit_like_a_bridge_that_then_stopped(dsn: str, events: list[dict[str, Any]]) -> list[uuid.UUID]:
    """Plan and commit each event as the hot path does, and alert none of them; their incident ids."""
    store.migrate(dsn, SCHEMA)
    correlator = Correlator(CorrelationSettings(), {s.sensor_id: s for s in SENSORS})

    async def commit() -> list[uuid.UUID]:
        ids = []
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            for raw in events:
                ev = SecurityEvent.model_validate(raw)
                plan = correlator.plan(ev, datetime.now(timezone.utc))
                assert await store.record_event(conn, SCHEMA, ev, plan.incident, is_new=plan.is_new, received_at=datetime.now(timezone.utc))
                correlator.commit(plan)
                ids.append(plan.incident.incident_id)
        return ids

    return asyncio.run(commit())


def _journal(dsn: str, action: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT incident_id, details FROM safe.journal WHERE action = %s ORDER BY id", (action,)).fetchall()
    return [{"incident_id": r[0], **r[1]} for r in rows]


def test_a_restarted_bridge_alerts_what_its_predecessor_committed_but_never_alerted(db, mqtt_broker, operators, pub):
    fresh = event("s-north", "gunshot", onset=past(3))
    old = event("s-south", "glass_break", onset=past(600))
    fresh_id, old_id = _commit_like_a_bridge_that_then_stopped(db.safe, [fresh, old])
    done_ev = event("s-west", "scream", onset=past(30))
    (done_id,) = _commit_like_a_bridge_that_then_stopped(db.safe, [done_ev])
    with psycopg.connect(db.safe, autocommit=True) as conn:  # this one was alerted before the stop
        conn.execute("UPDATE safe.events SET alerted_at = now() WHERE event_id = %s", (done_ev["event_id"],))

    hook = WebhookReceiver()
    steerer = RecordingSteerer()
    settings = make_settings(db.safe, mqtt_broker.port, operators=operators,
                             webhooks=[WebhookTarget(name="psim", url=hook.url, secret="0123456789abcdef-test")])
    try:
        with BridgeThread(settings, lambda: steerer) as bt:
            wait_until(lambda: len(hook.received) >= 2, timeout=10, what="the two owed webhooks")
            assert sorted(hook.incident_ids()) == sorted([str(fresh_id), str(old_id)])
            assert steerer.incidents == [fresh_id], "only the sound still fresh enough turns a camera"
            delivered = _journal(db.safe, "alert_delivered")
            assert {d["incident_id"] for d in delivered} == {fresh_id, old_id}
            assert all(d["recovered"] is True for d in delivered)
            assert {e for d in delivered for e in d["event_ids"]} == {fresh["event_id"], old["event_id"]}
            with psycopg.connect(db.safe) as conn:
                assert conn.execute("SELECT count(*) FROM safe.events WHERE alerted_at IS NULL").fetchone()[0] == 0

            reader = FeedReader(f"http://127.0.0.1:{bt.settings.http_port}/feed", OPERATOR).start()
            try:
                pub.publish(fresh)  # the broker re-delivers the message the stopped bridge never acknowledged
                wait_until(lambda: bt.service.stats.duplicates == 1, timeout=10, what="the re-delivery taken as a duplicate")
                # Another sensor heard the same shot: it joins the recovered incident, not a new one.
                pub.publish(event("s-east", "gunshot", onset=datetime.fromisoformat(fresh["onset"])))
                update = reader.wait_for(lambda m: m["type"] in ("incident", "incident_update"), timeout=10)
            finally:
                reader.stop()
            assert update["type"] == "incident_update" and update["incident"]["incident_id"] == str(fresh_id)
            assert update["incident"]["n_events"] == 2
            bt.call(bt.service.settle())
        assert len(hook.received) == 2 and steerer.incidents == [fresh_id]

        with BridgeThread(make_settings(db.safe, mqtt_broker.port, operators=operators,
                                        webhooks=[WebhookTarget(name="psim", url=hook.url, secret="0123456789abcdef-test")]),
                          lambda: steerer) as bt:
            bt.call(bt.service.settle())
        assert len(hook.received) == 2, "a second restart owes nothing"
        assert len(_journal(db.safe, "alert_delivered")) == 3  # two recovered, one for the correlated event
        assert done_id not in {d["incident_id"] for d in _journal(db.safe, "alert_delivered")}
    finally:
        hook.close()


def test_recovery_delivers_nothing_that_is_past_retention(db, mqtt_broker, operators):
    """A bridge stopped for longer than the retention still owed the alerts of what it had
    stored: its next start delivered them to the VMS, and only then purged them. What is
    past retention is now purged before anything is alerted again."""
    store.migrate(db.safe, SCHEMA)
    correlator = Correlator(CorrelationSettings(), {s.sensor_id: s for s in SENSORS})
    now = datetime.now(timezone.utc)

    async def commit() -> dict[str, uuid.UUID]:
        ids = {}
        async with await psycopg.AsyncConnection.connect(db.safe, autocommit=True) as conn:
            for label, age_s, sid in (("expired", 20 * 86_400, "s-north"), ("fresh", 5, "s-south")):
                at = now - timedelta(seconds=age_s)
                ev = SecurityEvent.model_validate(event(sid, "gunshot", onset=at))
                plan = correlator.plan(ev, at)
                assert await store.record_event(conn, SCHEMA, ev, plan.incident, is_new=True, received_at=at)
                correlator.commit(plan)
                ids[label] = plan.incident.incident_id
        return ids

    ids = asyncio.run(commit())
    hook = WebhookReceiver()
    steerer = RecordingSteerer()
    settings = make_settings(db.safe, mqtt_broker.port, operators=operators,
                             webhooks=[WebhookTarget(name="psim", url=hook.url, secret="0123456789abcdef-test")])
    try:
        with BridgeThread(settings, lambda: steerer) as bt:
            wait_until(lambda: len(hook.received) >= 1, timeout=10, what="the owed webhook")
            bt.call(bt.service.settle())
            bt.call(bt.service.webhooks.drain())
        assert hook.incident_ids() == [str(ids["fresh"])]
        assert {d["incident_id"] for d in _journal(db.safe, "alert_delivered")} == {ids["fresh"]}
        with psycopg.connect(db.safe) as conn:
            assert {r[0] for r in conn.execute("SELECT incident_id FROM safe.incidents")} == {ids["fresh"]}
    finally:
        hook.close()
