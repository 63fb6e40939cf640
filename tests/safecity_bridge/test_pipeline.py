"""Event in -> incident committed -> alert on the live feed -> operator actions journaled.

Real Mosquitto (private), real PostgreSQL (fresh DB, safe role), the bridge's real
HTTP port and SSE feed.
"""

from __future__ import annotations

import uuid

import httpx
import psycopg

from tests.safecity_bridge.bridge_harness import event, past
from tests.polling import wait_until
from tests.safecity_bridge.conftest import OPERATOR


def rows(dsn, query, *params):
    with psycopg.connect(dsn) as conn:
        return conn.execute(query, params).fetchall()


def test_event_becomes_an_alert_and_an_acknowledgement_is_journaled(bridge, feed, pub, db):
    ev = event("s-east", "glass_break")
    pub.publish(ev)
    msg = feed.wait_for(lambda m: m["type"] == "incident")
    inc = msg["incident"]
    assert msg["event_id"] == ev["event_id"]
    assert inc["event_class"] == "glass_break" and inc["sensor_ids"] == ["s-east"]
    assert inc["locate_method"] == "sensor"
    assert (inc["latitude"], inc["longitude"]) == (45.4395, 4.3895)
    cams = feed.wait_for(lambda m: m["type"] == "cameras")
    assert cams["incident_id"] == inc["incident_id"] and cams["message"] == "no camera in range"

    base = f"http://127.0.0.1:{bridge.settings.http_port}"
    r = httpx.post(f"{base}/api/incidents/{inc['incident_id']}/ack", auth=OPERATOR)
    assert r.status_code == 200, r.text
    r = httpx.post(f"{base}/api/incidents/{inc['incident_id']}/qualify", json={"qualification": "false_alarm"}, auth=OPERATOR)
    assert r.status_code == 200, r.text
    assert feed.wait_for(lambda m: m["type"] == "qualified")["operator"] == OPERATOR[0]

    status = rows(db.safe, "SELECT status, qualification, acknowledged_by, qualified_by FROM safe.incidents WHERE incident_id = %s", uuid.UUID(inc["incident_id"]))
    assert status == [("qualified", "false_alarm", OPERATOR[0], OPERATOR[0])]
    journal = rows(db.safe, "SELECT actor, action FROM safe.journal WHERE incident_id = %s ORDER BY id", uuid.UUID(inc["incident_id"]))
    assert ("bridge", "incident_opened") in journal
    assert (OPERATOR[0], "acknowledged") in journal and (OPERATOR[0], "qualified") in journal
    starts = rows(db.safe, "SELECT details FROM safe.journal WHERE action = 'bridge_started'")
    assert len(starts) == 1 and starts[0][0]["dpia_reference"] == "AIPD-TEST-0001" and starts[0][0]["fictitious"] is False


def test_three_sensors_within_the_window_make_one_incident_located_by_tdoa(bridge, feed, pub, db):
    # Source in the middle of the square: equal distances give equal onsets (+ ms jitter).
    t0 = past(1.0)
    from datetime import timedelta

    for sid, dt_ms in (("s-north", 0.0), ("s-east", 1.2), ("s-south", -0.8), ("s-west", 0.5)):
        pub.publish(event(sid, "gunshot", onset=t0 + timedelta(milliseconds=dt_ms)))
    upd = feed.wait_for(lambda m: m["type"] == "incident_update" and m["incident"]["n_events"] == 4)
    inc = upd["incident"]
    assert inc["locate_method"] == "tdoa"
    assert abs(inc["latitude"] - 45.4395) < 0.0006 and abs(inc["longitude"] - 4.3870) < 0.0008
    assert rows(db.safe, "SELECT count(*) FROM safe.incidents")[0][0] == 1
    assert rows(db.safe, "SELECT count(*) FROM safe.events WHERE incident_id = %s", uuid.UUID(inc["incident_id"]))[0][0] == 4


def test_flood_of_duplicates_is_one_incident(bridge, feed, pub, db):
    ev = event("s-west", "scream")
    for _ in range(50):
        pub.publish(ev)
    feed.wait_for(lambda m: m["type"] == "incident")
    # settle() drains the bridge's inbox; copies still in paho's hands are not in it yet.
    wait_until(lambda: bridge.service.stats.received >= 50, timeout=10, what="the 50 copies to reach the bridge")
    bridge.call(bridge.service.settle())
    assert bridge.service.stats.received == 50
    assert rows(db.safe, "SELECT count(*) FROM safe.incidents")[0][0] == 1
    assert rows(db.safe, "SELECT count(*) FROM safe.events")[0][0] == 1
    assert rows(db.safe, "SELECT count(*) FROM safe.journal WHERE action = 'incident_opened'")[0][0] == 1
    assert bridge.service.stats.duplicates == 49
    assert not [m for _, m in feed.seen if m["type"] == "incident" and m["event_id"] != ev["event_id"]]


def test_bad_events_are_quarantined_with_their_reason(bridge, pub, db):
    good = event("s-north")
    pub.publish(b"{not json", topic="sonopolis-safe/v1/events/s-north")
    pub.publish({**event("s-north"), "confidence": 7.0})
    pub.publish(event("s-north"), topic="sonopolis-safe/v1/events/s-east")
    pub.publish(event("unknown-sensor"))
    pub.publish({**event("s-north"), "audio": "AAAA"})
    pub.publish(event("s-north", onset=past(-3600)))
    pub.publish(good)
    wait_until(lambda: rows(db.safe, "SELECT count(*) FROM safe.events")[0][0] >= 1, timeout=10, what="the good event")
    bridge.call(bridge.service.settle())
    got = rows(db.safe, "SELECT reason_code, reason, sensor_id FROM safe.quarantine ORDER BY id")
    codes = [g[0] for g in got]
    assert codes == ["invalid_json", "invalid_event", "topic_mismatch", "unknown_sensor", "invalid_event", "onset_in_future"]
    assert "confidence" in got[1][1]
    assert "audio" in got[4][1] and "AAAA" not in got[4][1]  # reason names the field, never the value
    assert rows(db.safe, "SELECT count(*) FROM safe.events")[0][0] == 1


def test_console_refuses_missing_and_wrong_credentials(bridge):
    base = f"http://127.0.0.1:{bridge.settings.http_port}"
    for path in ("/", "/api/incidents", "/feed", "/api/journal", "/onvif/events"):
        r = httpx.get(base + path, timeout=5)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
        r = httpx.get(base + path, auth=(OPERATOR[0], "wrong password!"), timeout=5)
        assert r.status_code == 401
        r = httpx.get(base + path, auth=("nobody", OPERATOR[1]), timeout=5)
        assert r.status_code == 401
    page = httpx.get(base + "/", auth=OPERATOR, timeout=5)
    assert page.status_code == 200 and "<svg" in page.text and "Fausse alerte" in page.text
    assert httpx.get(base + "/healthz").json() == {"status": "ok"}
    # an operator is not a supervisor: no legal hold
    r = httpx.post(f"{base}/api/incidents/{uuid.uuid4()}/hold", json={"reason": "judicial request"}, auth=OPERATOR)
    assert r.status_code == 403
