"""A real paho publisher and a running-service harness for the ingestion tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from contextlib import contextmanager
from typing import Iterator

import paho.mqtt.client as mqtt
import psycopg

from common.config import MqttSettings
from ingestion.metrics import IngestMetrics
from ingestion.service import IngestService
from ingestion.settings import IngestSettings
from smart.db import SmartDbSettings


class Publisher:
    """QoS 1 publisher (MQTT v5) that waits for every PUBACK of the broker."""

    def __init__(self, port: int):
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5)
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.sent = 0

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> mqtt.MQTTMessageInfo:
        info = self.client.publish(topic, payload, qos=qos)
        self.sent += 1
        return info

    def publish_all(self, messages: Iterable[tuple[str, bytes]]) -> int:
        infos = [self.publish(t, p) for t, p in messages]
        for info in infos:
            info.wait_for_publish(timeout=30)
            assert info.is_published(), "broker did not acknowledge a publish"
        return len(infos)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def ingest_settings(port: int, client_id: str | None = None, **kw: object) -> IngestSettings:
    base: dict[str, object] = dict(
        mqtt=MqttSettings(port=port, client_id=client_id or f"ingest-{uuid.uuid4().hex[:8]}"),
        metrics_port=0, batch_max_delay_s=0.05, aggregate_refresh_s=0.3, daily_refresh_s=0.5,
    )
    base.update(kw)
    return IngestSettings(**base)  # type: ignore[arg-type]


@contextmanager
def running(dsn: str, settings: IngestSettings) -> Iterator[IngestService]:
    service = IngestService(SmartDbSettings(dsn=dsn), settings, metrics=IngestMetrics()).start()
    try:
        assert service.consumer is not None and service.consumer.subscribed.wait(15), "ingest did not connect to the broker"
        yield service
    finally:
        service.drain_and_stop()


def count(dsn: str, table: str = "levels") -> int:
    try:
        with psycopg.connect(dsn, connect_timeout=2) as conn:
            return int(conn.execute(f"SELECT count(*) FROM smart.{table}").fetchone()[0])  # type: ignore[index]
    except psycopg.OperationalError:
        return -1
