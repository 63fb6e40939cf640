"""The bridge holds at most ``buffer_max_messages`` events in memory, whatever the broker sends.

Real mosquitto (``max_inflight_messages 100``, as in deploy/), real PostgreSQL. A backlog
of security events queues on the broker while the bridge is down; the bridge then
starts with a buffer of 20. Mosquitto 2.0.11 honours the Receive Maximum the bridge
announces only until the first PUBACK and then sends everything: before the bound, a
bridge under MQTT 3.1.1 had ~100 events in memory while its database stalled and
up to ~980 of 1,000 once acks flowed. What is measured here is taken around the
consumer, independently of its own accounting: messages paho handed to it minus
messages the service finished (acked). The one message paho's thread holds while it
waits for a place counts too, hence ``BUFFER + 1``.

A database made slow by a trigger (5 ms per event) keeps the broker ahead of the
bridge, so the bound is reached; a lock on the events table stalls the hot path.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from common.config import MqttSettings
from safecity_bridge.consumer import Inbound, SafeConsumer
from safecity_bridge.runner import BridgeThread, NoCameras
from safecity_bridge.settings import RateLimitSettings, SafeSettings
from sonopolis.embedded import LocalMosquitto
from tests import services
from tests.polling import wait_until
from tests.safecity_bridge.bridge_harness import SENSORS, Publisher, event, make_settings, past

BUFFER = 20
EVENTS = 1000
SLOW_INSERT_S = 0.005


@pytest.fixture
def safe_broker(tmp_path: Path) -> Iterator[LocalMosquitto]:
    """A broker configured like deploy/mosquitto/safe (max_inflight_messages 100)."""
    with services.private_mosquitto(tmp_path, max_inflight_messages=100) as broker:
        yield broker


class Backlog:
    """Messages in a bridge's memory, measured around its consumer: handed over by paho, not yet acked.

    Counted per consumer: what a stopped bridge held is the broker's again, not the next bridge's.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._lock = threading.Lock()
        self._entered: dict[int, int] = {}
        self._acked: dict[int, int] = {}
        self._latest = 0
        self.peak = 0
        on_message, ack = SafeConsumer._on_message, SafeConsumer.ack

        def counted_on_message(consumer: SafeConsumer, client: Any, userdata: Any, msg: Any) -> None:
            if consumer._stopping:  # noqa: SLF001 - once stopping, a message is left unacked at once, never held
                on_message(consumer, client, userdata, msg)
                return
            with self._lock:
                key = self._latest = id(consumer)
                self._entered[key] = self._entered.get(key, 0) + 1
                self.peak = max(self.peak, self._entered[key] - self._acked.get(key, 0))
            on_message(consumer, client, userdata, msg)

        def counted_ack(consumer: SafeConsumer, item: Inbound) -> None:
            with self._lock:
                self._acked[id(consumer)] = self._acked.get(id(consumer), 0) + 1
            ack(consumer, item)

        monkeypatch.setattr(SafeConsumer, "_on_message", counted_on_message)
        monkeypatch.setattr(SafeConsumer, "ack", counted_ack)

    @property
    def entered(self) -> int:
        """Messages handed to the latest consumer."""
        with self._lock:
            return self._entered.get(self._latest, 0)

    @property
    def now(self) -> int:
        """Messages in the latest consumer's memory."""
        with self._lock:
            return self._entered.get(self._latest, 0) - self._acked.get(self._latest, 0)


def _settings(db: Any, broker: LocalMosquitto, client_id: str, **overrides: Any) -> SafeSettings:
    values: dict[str, Any] = {
        "mqtt": MqttSettings(host="127.0.0.1", port=broker.port, client_id=client_id),
        "rate_limit": RateLimitSettings(per_sensor_rate_per_s=1000, per_sensor_burst=10_000),  # a backlog, not a flood
        "buffer_max_messages": BUFFER,
        **overrides,
    }
    return make_settings(db.safe, broker.port, **values)


def _admin_dsn(pg_admin_dsn: str, db: Any) -> str:
    return psycopg.conninfo.make_conninfo(pg_admin_dsn, dbname=psycopg.conninfo.conninfo_to_dict(db.safe)["dbname"])


def _queue_backlog(settings: SafeSettings, admin_dsn: str, broker: LocalMosquitto) -> set[str]:
    """Create the bridge's persistent session and schema, make inserts slow, and queue EVENTS while the bridge is down."""
    with BridgeThread(settings, NoCameras):
        pass
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f"""
            CREATE FUNCTION safe.slow_insert() RETURNS trigger LANGUAGE plpgsql AS
            $$ BEGIN PERFORM pg_sleep({SLOW_INSERT_S}); RETURN NEW; END $$;
            CREATE TRIGGER slow_insert BEFORE INSERT ON safe.events FOR EACH ROW EXECUTE FUNCTION safe.slow_insert();
        """)
    pub = Publisher(broker.port)
    ids: set[str] = set()
    first = past(EVENTS + 300)
    try:
        for i in range(EVENTS):
            ev = event(SENSORS[i % len(SENSORS)].sensor_id, onset=first + timedelta(seconds=i))
            pub.publish(ev)
            ids.add(ev["event_id"])
    finally:
        pub.close()
    return ids


@contextmanager
def _writes_stalled(dsn: str) -> Iterator[None]:
    """Hold the events table against writes (reads go on): the hot path's insert waits, as on a stalled database."""
    with psycopg.connect(dsn) as conn:
        conn.execute("LOCK TABLE safe.events IN EXCLUSIVE MODE")
        yield
        conn.rollback()


def _stored(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [str(r[0]) for r in conn.execute("SELECT event_id FROM safe.events")]


def _count(dsn: str, table: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute(f"SELECT count(*) FROM safe.{table}").fetchone()[0]


def _assert_all_committed_once_and_nothing_left(settings: SafeSettings, dsn: str, ids: set[str]) -> None:
    stored = _stored(dsn)
    assert len(stored) == len(set(stored)) == EVENTS and set(stored) == ids, f"{len(ids - set(stored))} lost, {len(stored) - len(set(stored))} twice"
    assert _count(dsn, "quarantine") == 0
    # Every event was acknowledged: the same session, resumed, receives nothing more.
    with BridgeThread(settings, NoCameras) as again:
        time.sleep(2)
        assert again.service.stats.received == 0, f"{again.service.stats.received} messages were still unacknowledged on the broker"


def test_a_backlog_of_1000_drains_whole_through_a_buffer_of_20(db, safe_broker, pg_admin_dsn, monkeypatch):  # noqa: ANN001
    settings = _settings(db, safe_broker, f"bridge-{uuid.uuid4().hex[:8]}")
    ids = _queue_backlog(settings, _admin_dsn(pg_admin_dsn, db), safe_broker)
    backlog = Backlog(monkeypatch)
    bt = BridgeThread(settings, NoCameras)
    try:
        with _writes_stalled(db.safe):
            bt.start()
            wait_until(lambda: backlog.entered >= BUFFER, timeout=10, what="the first events")
            time.sleep(2)
            while_stalled = backlog.entered
        wait_until(lambda: _count(db.safe, "events") >= EVENTS, timeout=120, what="the whole backlog committed")
        bt.call(bt.service.settle())
        consumer, stats = bt.service.consumer, bt.service.stats
    finally:
        bt.stop()
    assert backlog.peak <= BUFFER + 1, f"{backlog.peak} events in memory at once ({while_stalled} while the database stalled); the bound is {BUFFER}"
    assert while_stalled == BUFFER, "the broker honours Receive Maximum until the first PUBACK"
    assert consumer is not None and consumer.in_flight.waits, "the broker never sent past Receive Maximum: the bound was not exercised"
    assert stats.duplicates == 0 and stats.quarantined == 0
    _assert_all_committed_once_and_nothing_left(settings, db.safe, ids)


def test_a_broker_restart_while_the_buffer_is_full_loses_nothing(db, safe_broker, pg_admin_dsn, monkeypatch):  # noqa: ANN001
    """Messages held from the old connection are committed but not acked on the new one; their copies are duplicates."""
    settings = _settings(db, safe_broker, f"bridge-{uuid.uuid4().hex[:8]}")
    ids = _queue_backlog(settings, _admin_dsn(pg_admin_dsn, db), safe_broker)
    backlog = Backlog(monkeypatch)
    with BridgeThread(settings, NoCameras) as bt:
        wait_until(lambda: _count(db.safe, "events") >= 50, timeout=30, what="acks flowing")
        with _writes_stalled(db.safe):
            wait_until(lambda: backlog.now == BUFFER + 1, timeout=10, what="the bound full and paho's thread held")
            safe_broker.restart()
            time.sleep(1)
        wait_until(lambda: _count(db.safe, "events") >= EVENTS, timeout=120, what="the whole backlog committed")
        wait_until(lambda: bt.service.consumer is not None and bt.service.consumer.connected.is_set(), timeout=15, what="reconnected")
        bt.call(bt.service.settle())
        consumer = bt.service.consumer
        assert consumer is not None
        assert consumer.stale_acks >= BUFFER, "the messages held across the restart were finished without a PUBACK"
        assert bt.service.stats.duplicates >= BUFFER, "their re-delivered copies were recognised"
    assert backlog.peak <= BUFFER + 1, f"{backlog.peak} events in memory at once; the bound is {BUFFER}"
    _assert_all_committed_once_and_nothing_left(settings, db.safe, ids)


def test_stopping_while_paho_waits_for_a_place_neither_hangs_nor_loses(db, safe_broker, pg_admin_dsn, monkeypatch):  # noqa: ANN001
    settings = _settings(db, safe_broker, f"bridge-{uuid.uuid4().hex[:8]}")
    ids = _queue_backlog(settings, _admin_dsn(pg_admin_dsn, db), safe_broker)
    backlog = Backlog(monkeypatch)
    bt = BridgeThread(settings, NoCameras).start()
    try:
        wait_until(lambda: _count(db.safe, "events") >= 50, timeout=30, what="acks flowing")
        with _writes_stalled(db.safe):
            wait_until(lambda: backlog.now == BUFFER + 1, timeout=10, what="the bound full and paho's thread held")
            started = time.monotonic()
            bt.stop()
            took = time.monotonic() - started
            assert not bt._thread.is_alive() and took < 10, f"stop took {took:.1f} s"
    finally:
        if bt._thread.is_alive():
            bt.stop()
    with BridgeThread(settings, NoCameras) as bt:
        wait_until(lambda: _count(db.safe, "events") >= EVENTS, timeout=120, what="the rest delivered to the next bridge")
        bt.call(bt.service.settle())
    assert backlog.peak <= BUFFER + 1
    _assert_all_committed_once_and_nothing_left(settings, db.safe, ids)
