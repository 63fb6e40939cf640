"""A broker nobody answers on is named in the log by each client that waits for it (paho retried in silence)."""

from __future__ import annotations

import logging
import queue

import pytest

from common.config import MqttSettings
from detectors.outbox import Outbox
from detectors.publisher import BrokerLink
from ingestion.consumer import MqttConsumer
from ingestion.metrics import IngestMetrics
from sonopolis.embedded import free_port
from tests.polling import wait_until


def _named(caplog: pytest.LogCaptureFixture, port: int) -> bool:
    return any(f"cannot connect to 127.0.0.1:{port}" in r.getMessage() for r in caplog.records)


def test_the_ingest_consumer_names_an_unreachable_smart_broker(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    port = free_port()
    consumer = MqttConsumer(MqttSettings(port=port, client_id="ingest-test"), queue.Queue(maxsize=10), IngestMetrics(),
                            receive_maximum=10, session_expiry_s=60)
    consumer.start()
    try:
        wait_until(lambda: _named(caplog, port), timeout=10, what="the unreachable broker named")
        assert not consumer.connected.is_set()
    finally:
        consumer.stop()


def test_an_edge_link_names_an_unreachable_broker(tmp_path, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.WARNING)
    port = free_port()
    link = BrokerLink("safe", MqttSettings(port=port, client_id="edge-test"), Outbox(tmp_path, 100))
    link.start()
    try:
        wait_until(lambda: _named(caplog, port), timeout=10, what="the unreachable broker named")
        assert not link.connected
        assert any("safe broker (edge)" in r.getMessage() for r in caplog.records)
    finally:
        link.stop()
