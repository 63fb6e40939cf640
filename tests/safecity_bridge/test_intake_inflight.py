"""The intake's bound and ack rules, without a broker: paho's callbacks are driven by hand.

The real-broker behaviour (mosquitto overshooting Receive Maximum, restarts, stop while
paho waits) is in ``test_bridge_intake_bound.py``; here each rule is pinned alone.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from common.config import ConfigError, MqttSettings, load_settings
from safecity_bridge.consumer import Inbound, SafeConsumer
from safecity_bridge.inflight import InFlight
from safecity_bridge.settings import SafeSettings


class FakeClient:
    """Stands in for paho's client: records PUBACKs."""

    def __init__(self) -> None:
        self.acks: list[tuple[int, int]] = []

    def ack(self, mid: int, qos: int) -> int:
        self.acks.append((mid, qos))
        return 0

    def subscribe(self, *args: Any, **kwargs: Any) -> None:
        pass

    def disconnect(self) -> None:
        pass

    def loop_stop(self) -> None:
        pass


CONNECTED = (SimpleNamespace(session_present=True), SimpleNamespace(is_failure=False))


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def _consumer(loop: asyncio.AbstractEventLoop, buffer_max: int = 10) -> tuple[SafeConsumer, FakeClient, list[Inbound]]:
    delivered: list[Inbound] = []
    consumer = SafeConsumer(MqttSettings(client_id="bridge-test"), loop, delivered.append, buffer_max=buffer_max)
    fake = FakeClient()
    consumer._client = fake  # type: ignore[assignment]
    return consumer, fake, delivered


def _connect(consumer: SafeConsumer) -> None:
    flags, reason = CONNECTED
    consumer._on_connect(consumer._client, None, flags, reason, None)  # type: ignore[arg-type]


def _receive(consumer: SafeConsumer, loop: asyncio.AbstractEventLoop, mid: int) -> None:
    msg = mqtt.MQTTMessage(mid=mid, topic=b"sonopolis-safe/v1/events/s-north")
    msg.qos, msg.payload = 1, b"{}"
    consumer._on_message(consumer._client, None, msg)  # type: ignore[arg-type]
    loop.run_until_complete(asyncio.sleep(0))  # run the hand-over scheduled on the loop


def test_a_message_of_a_lost_connection_is_finished_without_a_puback(loop: asyncio.AbstractEventLoop) -> None:
    """After a reconnect its packet id may name another message: the broker re-delivers it instead."""
    consumer, fake, delivered = _consumer(loop)
    _connect(consumer)
    _receive(consumer, loop, mid=7)
    consumer._on_disconnect(fake, None, None, "lost", None)  # type: ignore[arg-type]
    _connect(consumer)
    consumer.ack(delivered[0])
    assert fake.acks == [] and consumer.stale_acks == 1
    assert consumer.in_flight.held == 0, "its place is given back all the same"
    _receive(consumer, loop, mid=7)  # the re-delivered copy, on the live connection
    consumer.ack(delivered[1])
    assert fake.acks == [(7, 1)]


def test_no_puback_between_a_disconnect_and_the_next_connack(loop: asyncio.AbstractEventLoop) -> None:
    consumer, fake, delivered = _consumer(loop)
    _connect(consumer)
    _receive(consumer, loop, mid=1)
    consumer._on_disconnect(fake, None, None, "lost", None)  # type: ignore[arg-type]
    consumer.ack(delivered[0])
    assert fake.acks == []


def test_a_message_is_acknowledged_once_even_if_finished_twice(loop: asyncio.AbstractEventLoop) -> None:
    """The hot path acks, then an error in the alert quarantines and acks again: the second PUBACK could ack the next message using the id."""
    consumer, fake, delivered = _consumer(loop, buffer_max=1)
    _connect(consumer)
    _receive(consumer, loop, mid=3)
    consumer.ack(delivered[0])
    _receive(consumer, loop, mid=4)
    consumer.ack(delivered[0])
    assert fake.acks == [(3, 1)]
    assert consumer.in_flight.held == 1, "the second message keeps its place"


def test_paho_waits_for_a_place_and_stop_lets_it_go(loop: asyncio.AbstractEventLoop) -> None:
    consumer, fake, delivered = _consumer(loop, buffer_max=2)
    _connect(consumer)
    _receive(consumer, loop, mid=1)
    _receive(consumer, loop, mid=2)
    third = threading.Thread(target=_receive_scheduled, args=(consumer, 3), daemon=True)
    third.start()
    third.join(0.3)
    assert third.is_alive() and consumer.in_flight.waits == 1, "the network thread waits while the buffer is full"
    consumer.ack(delivered[0])
    third.join(2)
    assert not third.is_alive() and consumer.in_flight.held == 2
    fourth = threading.Thread(target=_receive_scheduled, args=(consumer, 4), daemon=True)
    fourth.start()
    fourth.join(0.3)
    assert fourth.is_alive() and consumer.in_flight.waits == 2
    started = time.monotonic()
    consumer.stop()  # from the loop's thread in the service: must not wait on the held network thread
    fourth.join(2)
    assert not fourth.is_alive() and time.monotonic() - started < 1
    loop.run_until_complete(asyncio.sleep(0))
    assert [i.mid for i in delivered] == [1, 2, 3], "the fourth stays unacknowledged for the broker to re-deliver"


def _receive_scheduled(consumer: SafeConsumer, mid: int) -> None:
    """``_receive`` from another thread: the hand-over is left on the loop for the test to run."""
    msg = mqtt.MQTTMessage(mid=mid, topic=b"sonopolis-safe/v1/events/s-north")
    msg.qos, msg.payload = 1, b"{}"
    consumer._on_message(consumer._client, None, msg)  # type: ignore[arg-type]


def test_a_closed_loop_gives_the_place_back(loop: asyncio.AbstractEventLoop) -> None:
    consumer, fake, delivered = _consumer(loop, buffer_max=1)
    _connect(consumer)
    loop.close()
    _receive_scheduled(consumer, 1)
    assert consumer.in_flight.held == 0 and delivered == []


def test_the_bound_admits_up_to_its_limit_and_counts_a_release_once() -> None:
    bound = InFlight(2)
    a, b = bound.admit(), bound.admit()
    assert a is not None and b is not None and bound.held == 2 and bound.peak == 2
    assert bound.release(a) and not bound.release(a)
    assert bound.held == 1
    bound.close()
    assert bound.admit() is None
    with pytest.raises(ValueError, match="at least 1"):
        InFlight(0)


@pytest.mark.parametrize("value", ["0", "65536", "-5"])
def test_the_buffer_size_is_validated_with_its_key(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """It is also the Receive Maximum, a two-byte MQTT integer of at least 1."""
    monkeypatch.setenv("SONOPOLIS_SAFE_BUFFER_MAX_MESSAGES", value)
    with pytest.raises(ConfigError, match="buffer_max_messages \\(SONOPOLIS_SAFE_BUFFER_MAX_MESSAGES\\)"):
        load_settings(SafeSettings)


def test_the_buffer_size_has_a_default_and_is_announced_as_receive_maximum(monkeypatch: pytest.MonkeyPatch, loop: asyncio.AbstractEventLoop) -> None:
    assert load_settings(SafeSettings).buffer_max_messages == 100
    monkeypatch.setenv("SONOPOLIS_SAFE_BUFFER_MAX_MESSAGES", "250")
    settings = load_settings(SafeSettings)
    consumer = SafeConsumer(settings.mqtt, loop, lambda item: None, buffer_max=settings.buffer_max_messages)
    assert consumer.in_flight.limit == 250 and consumer._props.ReceiveMaximum == 250
    assert consumer._props.SessionExpiryInterval == 0xFFFFFFFF, "a v5 session expiring at disconnect would drop what is queued while the bridge is down"
