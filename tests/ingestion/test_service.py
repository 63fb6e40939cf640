"""The ingestion service end to end: real Mosquitto, real PostgreSQL, real paho clients."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone

import psycopg

from tests.ingestion.factories import frame_dict, payload, ready_db
from tests.ingestion.mqtt_helpers import Publisher, count, ingest_settings, running
from tests.polling import wait_until

TOPIC = "sonopolis/v1/levels/{}"


def _minute_start() -> datetime:
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    return now - timedelta(minutes=5)


def test_round_trip_frames_and_batches_to_rows_and_aggregates(db, mqtt_broker):
    ready_db(db.smart, ["s1", "s2"]).close()
    t0 = _minute_start()
    s1_levels = [55.0 + (i % 12) for i in range(60)]
    s2_levels = [70.0] * 20 + [40.0] * 40
    pub = Publisher(mqtt_broker.port)
    with running(db.smart, ingest_settings(mqtt_broker.port)) as svc:
        pub.publish_all((TOPIC.format("s1"), payload(frame_dict("s1", t0 + timedelta(seconds=i), lv))) for i, lv in enumerate(s1_levels))
        batch = {"schema": "sonopolis.level-batch/1", "sensor_id": "s2",
                 "frames": [frame_dict("s2", t0 + timedelta(seconds=i), lv) for i, lv in enumerate(s2_levels)]}
        pub.publish_all([(TOPIC.format("s2"), json.dumps(batch).encode())])
        wait_until(lambda: count(db.smart) == 120, what="120 rows")
        wait_until(lambda: count(db.smart, "levels_1min") == 2, what="minute aggregates")
        wait_until(lambda: svc.metrics.value("sonopolis_ingest_messages_acked_total") == 61, what="acks after commit")
        assert svc.metrics.value("sonopolis_ingest_rows_written_total") == 120
        assert svc.metrics.value("sonopolis_ingest_messages_received_total") == 61
    pub.close()
    with psycopg.connect(db.smart) as conn:
        got = dict(conn.execute("SELECT sensor_id, laeq FROM smart.levels_1min").fetchall())
        lden = conn.execute("SELECT count(*) FROM smart.lden_daily").fetchone()[0]
    for sid, levels in (("s1", s1_levels), ("s2", s2_levels)):
        hand = 10 * math.log10(sum(10 ** (x / 10) for x in levels) / len(levels))
        assert abs(got[sid] - hand) < 1e-3, sid
    assert abs(got["s2"] - (70 + 10 * math.log10(20 / 60))) < 0.01, "loud third dominates: 70 dB + 10log10(1/3)"
    assert lden == 2


def test_every_kind_of_bad_input_is_quarantined_with_its_reason(db, mqtt_broker):
    ready_db(db.smart, ["s1"]).close()
    t0 = _minute_start()
    good = frame_dict("s1", t0, 60.0)
    future = (datetime.now(timezone.utc) + timedelta(hours=2)).isoformat()
    huge = b"{" + b"x" * 50_000
    bad = {
        "malformed_json": (TOPIC.format("s1"), huge),
        "out_of_range": (TOPIC.format("s1"), payload({**good, "laeq": 151.0})),
        "bad_bands": (TOPIC.format("s1"), payload({**good, "bands": {"25": 40.0, "40": 41.0}})),
        "schema_error": (TOPIC.format("s1"), payload({**good, "gunshot": True})),
        "unknown_sensor": (TOPIC.format("ghost"), payload({**good, "sensor_id": "ghost"})),
        "future_timestamp": (TOPIC.format("s1"), payload({**good, "time": future})),
        # Older than the raw retention: it would recreate a dropped day and overwrite its aggregates.
        "older_than_retention": (TOPIC.format("s1"), payload(frame_dict("s1", t0 - timedelta(days=31), 60.0))),
        "wrong_topic": (TOPIC.format("s1") + "/extra", payload(good)),
    }
    pub = Publisher(mqtt_broker.port)
    settings = ingest_settings(mqtt_broker.port, quarantine_payload_max_bytes=1024, raw_retention_days=30)
    with running(db.smart, settings) as svc:
        # The ingest subscribes to sonopolis/v1/levels/+ only; a deeper topic never reaches
        # it, so the wrong-topic case is a payload for another sensor on s1's topic.
        bad["wrong_topic"] = (TOPIC.format("s1"), payload({**good, "sensor_id": "s2"}))
        pub.publish_all([*bad.values(), (TOPIC.format("s1"), payload(good))])
        wait_until(lambda: count(db.smart, "quarantine") == len(bad), what="quarantine entries")
        wait_until(lambda: count(db.smart) == 1, what="the good frame")
        for reason in bad:
            assert svc.metrics.value("sonopolis_ingest_quarantined_total", reason=reason) == 1, reason
        wait_until(lambda: svc.metrics.value("sonopolis_ingest_messages_acked_total") == len(bad) + 1, what="acks")
    pub.close()
    with psycopg.connect(db.smart) as conn:
        rows = {r[0]: r[1:] for r in conn.execute("SELECT reason_code, reason, payload, payload_bytes, sensor_id FROM smart.quarantine")}
    assert set(rows) == set(bad)
    reason, stored, size, _ = rows["malformed_json"]
    assert size == len(huge) and len(stored.encode()) <= 1024, "raw payload kept but capped"
    assert "laeq" in rows["out_of_range"][0] and "150" in rows["out_of_range"][0]
    assert rows["unknown_sensor"][3] == "ghost"


def test_duplicates_are_idempotent(db, mqtt_broker):
    ready_db(db.smart, ["s1"]).close()
    t0 = _minute_start()
    frames = [frame_dict("s1", t0 + timedelta(seconds=i), 60.0 + i) for i in range(30)]
    pub = Publisher(mqtt_broker.port)
    with running(db.smart, ingest_settings(mqtt_broker.port)) as svc:
        pub.publish_all((TOPIC.format("s1"), payload(f)) for f in frames)
        wait_until(lambda: count(db.smart) == 30, what="30 rows")
        # A sensor replaying the same seconds (edge queue after an outage) + one resend.
        replay = {"schema": "sonopolis.level-batch/1", "sensor_id": "s1", "frames": frames[10:] + [frame_dict("s1", t0 + timedelta(seconds=30), 61.0)]}
        pub.publish_all([(TOPIC.format("s1"), json.dumps(replay).encode()), (TOPIC.format("s1"), payload(frames[0]))])
        wait_until(lambda: svc.metrics.value("sonopolis_ingest_duplicate_rows_total") == 21, what="duplicates counted")
        assert count(db.smart) == 31
        assert count(db.smart, "quarantine") == 0
    pub.close()


def test_acks_are_counted_before_the_broker_gets_them(db, mqtt_broker):
    """Once a PUBACK leaves, the broker may send the next message at once: if the ack were
    counted after, ``received - acked`` could exceed Receive Maximum (the outage test once
    read 201 in flight for a buffer of 200)."""
    ready_db(db.smart, ["s1"]).close()
    t0 = _minute_start()
    pub = Publisher(mqtt_broker.port)
    seen: list[tuple[float, int]] = []  # (acked counter when the PUBACKs are queued, PUBACKs queued so far)
    with running(db.smart, ingest_settings(mqtt_broker.port)) as svc:
        client = svc.consumer.client
        queue_pubacks = client.ack_many

        def spy(mids: list[int]) -> None:
            queued = (seen[-1][1] if seen else 0) + len(mids)
            seen.append((svc.metrics.value("sonopolis_ingest_messages_acked_total"), queued))
            queue_pubacks(mids)

        client.ack_many = spy
        pub.publish_all((TOPIC.format("s1"), payload(frame_dict("s1", t0 + timedelta(seconds=i), 60.0))) for i in range(30))
        wait_until(lambda: svc.metrics.value("sonopolis_ingest_messages_acked_total") == 30, what="30 acks")
    pub.close()
    assert seen and seen[-1][1] == 30
    assert all(counted >= queued for counted, queued in seen), seen


def test_poison_messages_are_quarantined_and_the_pipeline_goes_on(db, mqtt_broker):
    """Each of these once stopped the pipeline thread for good, while the process stayed up "connected":
    a time offset near year 1 (OverflowError, not a validation error), a NUL in a JSON key (quoted
    in the reason, which PostgreSQL refused), and, refused since, a sensor clock that was never set."""
    ready_db(db.smart, ["s1"]).close()
    t0 = _minute_start()
    good = frame_dict("s1", t0, 60.0)
    poison = [
        payload({**good, "time": "0001-01-01T00:00:00+01:00"}),
        json.dumps({**good, "\u0000": 1}).encode(),
        payload({**good, "time": "1970-01-01T00:00:05Z"}),
    ]
    later = [payload(frame_dict("s1", t0 + timedelta(seconds=i), 60.0)) for i in range(1, 11)]
    pub = Publisher(mqtt_broker.port)
    with running(db.smart, ingest_settings(mqtt_broker.port)) as svc:
        pub.publish_all((TOPIC.format("s1"), p) for p in [payload(good), *poison, *later])
        wait_until(lambda: count(db.smart) == 11 and count(db.smart, "quarantine") == 3, what="11 rows, 3 quarantined")
        assert all(t.is_alive() for t in svc._threads)
        assert svc.failure is None
    pub.close()
    with psycopg.connect(db.smart) as conn:
        reasons = sorted(r[0] for r in conn.execute("SELECT reason FROM smart.quarantine"))
    assert any("cannot be expressed in UTC" in r for r in reasons)
    assert any("\ufffd" in r and "Extra inputs" in r for r in reasons)  # the NUL, replaced so it can be stored
    assert any("before 2000-01-01" in r for r in reasons)


def test_a_worker_that_dies_stops_the_service_instead_of_leaving_a_zombie(db, mqtt_broker):
    ready_db(db.smart, ["s1"]).close()
    pub = Publisher(mqtt_broker.port)
    with running(db.smart, ingest_settings(mqtt_broker.port)) as svc:
        def broken(batch):  # noqa: ANN001, ANN202 - stands in for any bug not yet found
            raise RuntimeError("a bug in the pipeline")

        svc.pipeline._flush = broken
        pub.publish_all([(TOPIC.format("s1"), payload(frame_dict("s1", _minute_start(), 60.0)))])
        wait_until(svc.stop_event.is_set, what="the service stopping")
        assert isinstance(svc.failure, RuntimeError)
    pub.close()
